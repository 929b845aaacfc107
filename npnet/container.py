"""Sequential: run layers one after another, and backpropagate through them in reverse.

    forward:   x -> layer_0 -> layer_1 -> ... -> layer_{L-1} -> y
    backward:  dL/dx <- layer_0.backward <- ... <- layer_{L-1}.backward <- dL/dy

Each layer's backward turns the gradient with respect to its output into the gradient with
respect to its input (and adds its parameter gradients to ``.grad`` on the way). Each layer's
own ``forward`` and ``backward`` run, with its hooks: that is all there is to it. (npnet.fast
runs the same network faster, where it has shown it gives the same numbers.)
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .module import Module
from .summary import summary


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

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer(x)  # forward, then the layer's forward hooks
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        grad = grad_out
        for position in reversed(range(len(self.layers))):
            layer = self.layers[position]
            grad = layer.run_backward(grad)  # backward, then the layer's backward hooks
            if grad is None and position > 0:
                raise TypeError(f"{layer.short_name()}.backward returned None; it must return "
                                f"dL/dx, the gradient with respect to its input")
        return grad

    def summary(self, input_shape: tuple, batch_size: int = 1):
        """Output shape, parameter count and forward MACs of every layer for an input of
        shape (batch_size, *input_shape); print it for the table. See ``npnet/summary.py``."""
        return summary(self, input_shape, batch_size=batch_size)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __repr__(self) -> str:
        lines = [f"  ({position}): {layer!r}".replace("\n", "\n  ")
                 for position, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)" if lines else "Sequential()"
