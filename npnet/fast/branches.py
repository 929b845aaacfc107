"""Residual and Concat blocks on the batch-last layout: each branch a Chain of its own kernels.

The blocks' own math is the same as npnet/residual.py and npnet/concat.py; only the layout
differs. With x (C, H, W, N), the channels are the first axis, so Concat joins and splits
contiguous slabs:

    Residual:  y = body(x) + shortcut(x)         dL/dx = body.backward(g) + shortcut.backward(g)
    Concat:    y = [branch_k(x)] on axis 0       dL/dx = sum_k branch_k.backward(g[s_k:s_k+C_k])

Like every kernel, a block's kernel runs only after it has been proven against the block as
written (proof.py), on copies whose branches plan and prove their own kernels.
"""

from __future__ import annotations

import numpy as np

from .kernel import Kernel


class BranchesKernel(Kernel):
    """A block whose branches each run as a Chain (chain.py), planned by ``planner``."""

    has_branches = True  # built with a planner (chain.py)

    def __init__(self, block, input_grad: bool = True, planner=None):
        super().__init__(block, input_grad=input_grad)
        from .chain import Planner, open_up  # chain.py lists this kernel among KERNELS
        planner = planner or Planner(announce=False)
        # each branch looked up afresh at each forward: one may be replaced on the block
        self.chains = [
            planner.chain(lambda name=name: open_up(dict(block.named_children())[name]),
                          input_grad)
            for name, _ in block.named_children()]

    def release(self) -> None:
        for chain in self.chains:
            chain.release()
        self.cache = None


class ResidualKernel(BranchesKernel):
    """npnet.Residual: body(x) + shortcut(x) (x itself without a shortcut)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        main = self.chains[0].forward(x)
        side = x if len(self.chains) == 1 else self.chains[1].forward(x)
        return main + side

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        grad_x = self.chains[0].backward(grad_out)  # both paths get grad_out ...
        side = grad_out if len(self.chains) == 1 else self.chains[1].backward(grad_out)
        if not self.input_grad:
            return None
        return grad_x + side  # ... and what they send back to x adds up


class ConcatKernel(BranchesKernel):
    """npnet.Concat: the branches' outputs joined on the channels, axis 0 of (C, H, W, N)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        outputs = [chain.forward(x) for chain in self.chains]
        self.cache = [output.shape[0] for output in outputs]  # where backward splits
        return np.concatenate(outputs, axis=0)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        grad_x, start = None, 0
        for chain, size in zip(self.chains, self.require_cache()):
            grad_branch = chain.backward(grad_out[start:start + size])  # a contiguous slab
            start += size
            if self.input_grad:
                grad_x = grad_branch if grad_x is None else grad_x + grad_branch
        return grad_x
