"""Residual: one input, two paths, added back together (d2l 7.6). Gradients that meet add up.

    y = body(x) + shortcut(x)          shortcut: the identity (None), or e.g. a 1x1 convolution

x feeds two places, so the loss reaches x along two paths, and the chain rule adds them (the
multivariable chain rule: a sum over every path from x to L):

    dL/dx = body.backward(dL/dy) + shortcut.backward(dL/dy)       (+ dL/dy for the identity)

Both paths get the same dL/dy: the derivative of a sum with respect to each term is 1. The
identity path hands dL/dy to x unchanged, however deep the body; that is why a deep residual
network still trains (examples/residual_vs_plain.py measures it). Derivation in
docs/backprop.md, section "Residual".

Shapes: x (N, ...) -> body(x) and shortcut(x) must both be of the output's shape (N, ...).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .container import check_each_layer_once, check_layer
from .module import Module, check_not_empty


class Residual(Module):
    """``Residual(body, shortcut=None)``: y = body(x) + shortcut(x), x itself when None.

    d2l's residual block is ``Sequential(Residual(conv-BN-ReLU-conv-BN, shortcut), ReLU())``,
    built by ``npnet.models.residual_block``. Parameters are named ``body.0.weight``,
    ``shortcut.0.weight``, ...
    """

    def __init__(self, body: Module, shortcut: Module | None = None):
        super().__init__()
        check_layer("Residual", "body", body)
        if shortcut is not None:
            check_layer("Residual", "shortcut", shortcut)
        self.body = body
        self.shortcut = shortcut
        check_each_layer_once(self, "Residual")

    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield "body", self.body
        if self.shortcut is not None:
            yield "shortcut", self.shortcut

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_not_empty("Residual", np.shape(x))
        self.cache = None  # until this forward has run through: no backward after a failed one
        main = self.body(x)
        side = x if self.shortcut is None else self.shortcut(x)
        if np.shape(main) != np.shape(side):  # + would broadcast them into a wrong answer
            what = "x itself (no shortcut)" if self.shortcut is None else \
                f"the shortcut {self.shortcut.short_name()}"
            raise ValueError(
                f"Residual: body output {np.shape(main)} and {what} output {np.shape(side)} "
                f"must have the same shape to be added; when the body changes the channels or "
                f"the size, give a shortcut that does the same (e.g. a 1x1 Conv2d with the "
                f"body's stride)")
        self.cache = np.shape(main)  # the output's shape, to check grad_out against
        return main + side

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        grad_out = self.check_grad(grad_out, self.require_cache())
        # d(body + shortcut)/d(each) = 1: both paths get grad_out, and what they send back to
        # x adds up
        grad_x = self.body.run_backward(grad_out)
        if self.shortcut is None:
            return grad_x + grad_out
        return grad_x + self.shortcut.run_backward(grad_out)

    def short_name(self) -> str:
        return "Residual"

    def __repr__(self) -> str:
        lines = [f"  ({name}): {child!r}".replace("\n", "\n  ")
                 for name, child in self.named_children()]
        if self.shortcut is None:
            lines.append("  (shortcut): identity")
        return "Residual(\n" + "\n".join(lines) + "\n)"
