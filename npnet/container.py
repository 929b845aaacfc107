"""Sequential: run layers one after another, and backpropagate through them in reverse.

    forward:   x -> layer_0 -> layer_1 -> ... -> layer_{L-1} -> y
    backward:  dL/dx <- layer_0.backward <- ... <- layer_{L-1}.backward <- dL/dy

Each layer's backward turns the gradient with respect to its output into the gradient with
respect to its input (and adds its parameter gradients to ``.grad`` on the way).

The fast path. Layers that have ``forward_batch_last`` / ``backward_batch_last`` (the same
math with the batch as the last axis, see windows.py) run that way: the input is moved to the
batch-last layout once, before the first such layer, and back once, after the last; in between,
every im2col, col2im and pooling slice is a long contiguous run. Hooks still fire per layer,
with batch-first views (N, C, H, W) of the same arrays. ``use_batch_last = False`` turns the
fast path off (each layer's plain forward/backward, as written in the textbook).

On the fast path, a BatchNorm -> Sigmoid -> AvgPool2d triple that no hook watches runs as one
step (fused.py: the sigmoid's output is never written out); ``use_fusion = False`` runs the
three layers one by one. A hook on any of them turns the fusion off for that triple, so
the hook sees that layer's own arrays.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .fused import BatchNormSigmoidPool
from .module import Module
from .windows import from_batch_last, to_batch_last


class Sequential(Module):
    """A chain of layers. Iterable, indexable (``net[0]``, ``net[1:3]``) and ``len()``-able.

    Children are named by position, so parameters are ``'0.weight'``, ``'1.gamma'``, ...
    """

    def __init__(self, *layers: Module):
        super().__init__()
        for position, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential expects layers (npnet Module instances); argument {position} "
                    f"is {type(layer).__name__}: {layer!r}"
                )
        self.layers = list(layers)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for position, layer in enumerate(self.layers):
            yield str(position), layer

    use_batch_last = True
    use_fusion = True  # BatchNorm -> Sigmoid -> AvgPool2d as one step on the fast path (fused.py)

    @property
    def requires_input_grad(self) -> bool:
        """Whether backward computes dL/dx; set False when x is data (the images), and the
        first layer skips that work and backward returns None."""
        return self.layers[0].requires_input_grad if self.layers else True

    @requires_input_grad.setter
    def requires_input_grad(self, value: bool) -> None:
        if self.layers:
            self.layers[0].requires_input_grad = bool(value)

    def _steps(self, x: np.ndarray) -> list:
        """[(step, fast)]: each layer, or a fused BatchNorm-Sigmoid-AvgPool2d triple, and
        whether it runs on the batch-last fast path."""
        steps, position = [], 0
        while position < len(self.layers):
            layer = self.layers[position]
            fast = self.use_batch_last and x.ndim >= 2 and layer.supports_batch_last
            following = self.layers[position:position + 3]
            if fast and self.use_fusion and BatchNormSigmoidPool.fits(following):
                steps.append((BatchNormSigmoidPool(*following), True))
                position += 3
            else:
                steps.append((layer, fast))
                position += 1
        return steps

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        steps = self.cache = self._steps(x)  # remembered for backward
        x_is_batch_last = False
        for step, fast in steps:
            if fast != x_is_batch_last:
                x = to_batch_last(x) if fast else from_batch_last(x)
                x_is_batch_last = fast
            if not fast:
                x = step(x)
                continue
            y = step.forward_batch_last(x)
            for hook in getattr(step, "_forward_hooks", ()):  # a fused step has none
                hook(step, from_batch_last(x), from_batch_last(y))
            x = y
        return np.ascontiguousarray(from_batch_last(x)) if x_is_batch_last else x

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        steps = self.cache or [(layer, False) for layer in self.layers]
        grad = grad_out
        grad_is_batch_last = False
        for step, fast in reversed(steps):
            if grad is None:  # the layer after this one skipped its input gradient
                break
            if fast != grad_is_batch_last:
                grad = to_batch_last(grad) if fast else from_batch_last(grad)
                grad_is_batch_last = fast
            if not fast:
                grad = step.run_backward(grad)
                continue
            grad_in = step.backward_batch_last(grad)
            for hook in getattr(step, "_backward_hooks", ()):
                hook(step, from_batch_last(grad),
                     None if grad_in is None else from_batch_last(grad_in))
            grad = grad_in
        if grad is not None and grad_is_batch_last:
            grad = np.ascontiguousarray(from_batch_last(grad))
        return grad

    def summary(self, input_shape: tuple, batch_size: int = 1):
        """Output shape, parameter count and forward MACs of every layer for an input of
        shape (batch_size, *input_shape); print it for the table. See ``npnet/summary.py``."""
        from .summary import summary  # summary.py imports this module
        return summary(self, input_shape, batch_size=batch_size)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    @property
    def dtype(self):
        # a Sequential does not check its input itself; its first layer does
        return super().dtype

    def __repr__(self) -> str:
        lines = [f"  ({position}): {layer!r}".replace("\n", "\n  ")
                 for position, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)" if lines else "Sequential()"
