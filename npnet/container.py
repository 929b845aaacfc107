"""Sequential: run layers one after another, and backpropagate through them in reverse.

    forward:   x -> layer_0 -> layer_1 -> ... -> layer_{L-1} -> y
    backward:  dL/dx <- layer_0.backward <- ... <- layer_{L-1}.backward <- dL/dy

Each layer's backward turns the gradient with respect to its output into the gradient with
respect to its input (and adds its parameter gradients to ``.grad`` on the way). Each layer's
own ``forward`` and ``backward`` run, with its hooks: that is all there is to it. (npnet.fast
runs the same network faster, where it has shown it gives the same numbers.)

Each layer object may appear once in a network: it keeps the cache of its last forward, so a
second use would overwrite what the first use's backward needs.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .module import Module, check_not_empty


def check_layer(who: str, place: str, layer) -> None:
    """Refuse anything but an npnet Module where a container expects a layer."""
    if not isinstance(layer, Module):
        raise TypeError(f"{who} expects layers (npnet Module instances); {place} is "
                        f"{type(layer).__name__}: {layer!r}")


def check_each_layer_once(net: Module, who: str = "Sequential") -> None:
    """Refuse a network that holds one layer object at two places (``Sequential(l, Tanh(),
    l)``, also inside nested containers): the layer keeps one cache, so the second use's
    forward overwrites what the first use's backward needs, and the gradients come out
    wrong without any error."""
    first_place = {id(net): None}  # id -> dotted name of the first place it was seen

    def visit(module: Module, prefix: str) -> None:
        for name, child in module.named_children():
            place = f"{prefix}.{name}" if prefix else name
            if id(child) in first_place:
                raise ValueError(_repeated_layer_message(who, child, first_place[id(child)],
                                                         place))
            first_place[id(child)] = place
            visit(child, place)

    visit(net, "")


def _repeated_layer_message(who: str, layer: Module, first: str | None, second: str) -> str:
    where = (f"the network itself is also its own layer {second}" if first is None
             else f"layer {first} and layer {second} are the same {layer.short_name()} object")
    return (f"{who}: {where}. A layer keeps the cache of its last forward, so a second use "
            f"overwrites what the first one's backward needs, and the gradients come out "
            f"wrong. For an independent twin use copy.deepcopy(layer); for a tied one (the "
            f"same weights) build a new layer and share the parameters "
            f"(twin.weight = layer.weight)")


class Sequential(Module):
    """A chain of layers. Iterable, indexable (``net[0]``, ``net[1:3]``) and ``len()``-able.

    Children are named by position, so parameters are ``'0.weight'``, ``'1.gamma'``, ...
    """

    def __init__(self, *layers: Module):
        super().__init__()
        for position, layer in enumerate(layers):
            check_layer("Sequential", f"argument {position}", layer)
        self.layers = list(layers)
        check_each_layer_once(self)

    def short_name(self) -> str:
        return "Sequential"

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for position, layer in enumerate(self.layers):
            yield str(position), layer

    def forward(self, x: np.ndarray) -> np.ndarray:
        # refused before any layer runs, so that no layer's state changes: an empty batch,
        # and a layer put into self.layers twice since the network was built
        check_not_empty("Sequential", np.shape(x))
        check_each_layer_once(self)
        self.cache = None  # until this forward has run through: no backward after a failed one
        for position, layer in enumerate(self.layers):
            given = getattr(x, "dtype", None)
            x = layer(x)  # forward, then the layer's forward hooks
            if given is not None and getattr(x, "dtype", given) != given:
                raise TypeError(
                    f"{layer.short_name()} (layer {position}) was given {given} and returned "
                    f"{x.dtype}: a layer must return the dtype it is given (look for arrays or "
                    f"constants of another dtype in its forward)")
        self.cache = np.shape(x)  # the output's shape, to check grad_out against
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        # one backward per forward, like each layer's (see Module.require_cache)
        grad = self.check_grad(grad_out, self.require_cache())
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
        from .summary import summary  # here: summary walks into containers, so imports them
        return summary(self, input_shape, batch_size=batch_size)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __setitem__(self, index: int, layer: Module) -> None:
        """``net[i] = layer`` replaces the layer at position i (as in PyTorch)."""
        check_layer("Sequential", f"position {index}", layer)
        replaced, self.layers[index] = self.layers[index], layer
        try:
            check_each_layer_once(self)
        except ValueError:
            self.layers[index] = replaced  # refused: the network stays as it was
            raise

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __repr__(self) -> str:
        lines = [f"  ({position}): {layer!r}".replace("\n", "\n  ")
                 for position, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)" if lines else "Sequential()"
