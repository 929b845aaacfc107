"""Concat: one input, several branches, their outputs stacked along the channels (d2l 7.7).

    y = concatenate([branch_0(x), branch_1(x), ...], axis=1)      channels C_0 + C_1 + ...

The backward undoes the stacking, then adds up, because of two facts:

- channels [s_k, s_k + C_k) of y are branch k's output and nothing else's, so dL/dy **splits**
  by channel ranges: branch k receives dL/dy[:, s_k : s_k + C_k];
- x feeds every branch, so what the branches send back to x **adds up**:

    dL/dx = sum over k of branch_k.backward(dL/dy[:, s_k : s_k + C_k])

d2l's DenseNet stacks each layer's output onto its input: ``Concat(Identity(), conv_block)``
gives y = [x, conv_block(x)], and the identity branch passes dL/dy[:, :C] straight to x.
Derivation in docs/backprop.md, section "Concat".

Shapes: x (N, ...) -> each branch (N, C_k, H, W) (the same sizes but for the channels)
-> y (N, C_0 + C_1 + ..., H, W). Any rank >= 2 works: axis 1 is the one joined.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .container import check_each_layer_once, check_layer
from .module import Module, check_not_empty


class Concat(Module):
    """``Concat(*branches)``: the branches' outputs for the same input, joined on axis 1.

    Branches are named by position, so parameters are ``'1.0.gamma'``, ...
    """

    def __init__(self, *branches: Module):
        super().__init__()
        if not branches:
            raise ValueError("Concat expects at least one branch, e.g. Concat(Identity(), "
                             "conv_block)")
        for position, branch in enumerate(branches):
            check_layer("Concat", f"branch {position}", branch)
        self.branches = list(branches)
        check_each_layer_once(self, "Concat")

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for position, branch in enumerate(self.branches):
            yield str(position), branch

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_not_empty("Concat", np.shape(x))
        self.cache = None  # until this forward has run through: no backward after a failed one
        outputs = [np.asarray(branch(x)) for branch in self.branches]
        shapes = [output.shape for output in outputs]
        if any(len(s) < 2 or s[:1] + s[2:] != shapes[0][:1] + shapes[0][2:] for s in shapes):
            raise ValueError(
                f"Concat: branch outputs {shapes} must agree in every axis but the channels "
                f"(axis 1) to be joined")
        y = np.concatenate(outputs, axis=1)
        # each branch's channel count (where backward splits) and the output's shape
        self.cache = ([shape[1] for shape in shapes], y.shape)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        channels, output_shape = self.require_cache()
        grad_out = self.check_grad(grad_out, output_shape)
        # split: branch k's output sits in channels [start, start + C_k) of y
        grad_x, start = None, 0
        for branch, size in zip(self.branches, channels):
            part = np.ascontiguousarray(grad_out[:, start:start + size])
            start += size
            # add: every branch read the same x
            grad_branch = branch.run_backward(part)
            grad_x = grad_branch if grad_x is None else grad_x + grad_branch
        return grad_x

    def short_name(self) -> str:
        return "Concat"

    def __repr__(self) -> str:
        lines = [f"  ({name}): {branch!r}".replace("\n", "\n  ")
                 for name, branch in self.named_children()]
        return "Concat(\n" + "\n".join(lines) + "\n)"
