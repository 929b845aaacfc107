"""npnet.fast: the same networks, faster. A learner can ignore this folder.

The layers in npnet/ are the truth: ``Sequential`` runs each layer's own ``forward`` and
``backward``, and whatever a learner edits there takes effect. This backend runs a network's
layers through kernels of its own instead, for speed:

- layout.py     the batch moved to the last axis once per pass, (C, H, W, N), so every im2col,
                col2im and pooling slice is a long contiguous run
- conv.py       Conv2d as plain matrix products; blocked when no dL/dx is needed
- batchnorm.py  BatchNorm on one contiguous row per feature
- pool.py, linear.py, activation.py   AvgPool2d, AdaptiveAvgPool2d, Linear, Flatten, Sigmoid
- fused.py      BatchNorm -> Sigmoid -> AvgPool2d as one step
- conv_block.py Conv2d -> BatchNorm -> Sigmoid -> AvgPool2d in evaluation mode, a few rows
                at a time, never writing the convolution's output out
- branches.py   Residual and Concat blocks, each branch run as a chain of its own kernels
- kernel.py     what a kernel is; ``AsWritten``, a layer's own code inside the backend
- proof.py      the check each kernel passes before it runs
- chain.py      which kernel runs each layer (``KERNELS``); planning, proving, running a chain
- net.py        ``FastNet``: a network's layers as one chain, batch moved last once
- memory.py     freed memory kept for the next step (a fresh page costs a page fault)
- workers.py    a batch cut into one part per core: worker 0 runs its part here, the others
                in helper processes (helper.py, fed through channel.py); the parts trade
                BatchNorm's statistics, so they are the whole batch's. When the count is
                not set, each pass runs split or on one worker, whichever is faster now

A kernel runs only where it has been shown, on a tiny float64 batch, to give the output and
every gradient that the layers as written give (proof.py). Where it does not (a layer was
edited, subclassed, or is of a type the backend does not know), FastNet says so in one line (a
``FastPathWarning``) and runs that layer as written: a learner who breaks a backward sees it
break training.

``npnet.fit`` and ``npnet.evaluate`` use it by default; ``fit(..., fast=False)`` (or the
environment variable NPNET_FAST=0) runs the layers as written. In your own loop:

    fast = npnet.FastNet(net)          # shares net's layers and parameters
    loss = criterion(fast(x), labels)
    fast.backward(criterion.backward())
"""

from __future__ import annotations

import os

from .chain import KERNELS, FastPathWarning, kernel_for
from .net import FastNet

__all__ = ["KERNELS", "FastNet", "FastPathWarning", "enabled_by_default", "kernel_for"]


def enabled_by_default() -> bool:
    """Whether ``fit`` / ``evaluate`` use the backend when not told: yes, unless the
    environment variable NPNET_FAST is 0, false, no or off."""
    return os.environ.get("NPNET_FAST", "1").strip().lower() not in ("0", "false", "no", "off")
