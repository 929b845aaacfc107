"""Sequential: run layers one after another, and backpropagate through them in reverse.

    forward:   x -> layer_0 -> layer_1 -> ... -> layer_{L-1} -> y
    backward:  dL/dx <- layer_0.backward <- ... <- layer_{L-1}.backward <- dL/dy

Each layer's backward turns the gradient with respect to its output into the gradient with
respect to its input (and adds its parameter gradients to ``.grad`` on the way).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .module import Module


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
            x = layer(x)
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        grad = grad_out
        for layer in reversed(self.layers):
            grad = layer.run_backward(grad)
        return grad

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
