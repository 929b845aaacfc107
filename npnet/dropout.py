"""Dropout: in training, zero each entry with probability p and scale the rest by 1/(1-p).

Inverted dropout, as ``torch.nn.Dropout``. Any input shape; output of the same shape and
dtype.

    training:    mask ~ Bernoulli(1 - p), each entry 1 (kept) or 0 (dropped), shape of x
                 scaled_mask = mask / (1 - p)
                 y = x * scaled_mask                  dL/dx = dL/dy * scaled_mask
    evaluation:  y = x                                dL/dx = dL/dy

The scaling keeps the expected output equal to the input, E[y] = (1 - p) x / (1 - p) = x, so
nothing changes between training and evaluation. With the mask fixed, y is linear in x:
backward multiplies by the same scaled mask (docs/backprop.md, section "Dropout").

Random but reproducible: each Dropout draws its masks from a generator of its own,
``self.rng``, made when the layer is built from npnet's generator (``npnet.manual_seed(s)``
before building the network repeats every mask). ``npnet.gradcheck`` restores that
generator's state before each forward it runs, so all of them see one mask.
"""

from __future__ import annotations

import numpy as np

from .module import Module
from .rng import spawn_rng


def dropout_mask(rng: np.random.Generator, shape: tuple, p: float, dtype) -> np.ndarray:
    """mask / (1 - p) for a mask ~ Bernoulli(1 - p) of ``shape``, in ``dtype``.

    The uniform numbers are drawn in float64 whatever the dtype, so that one generator state
    gives one mask in float32 and in float64 (gradcheck runs a float32 layer in float64)."""
    keep = rng.random(shape) < 1 - p  # P(keep) = 1 - p
    return keep.astype(dtype) / dtype.type(1 - p)


class Dropout(Module):
    """``Dropout(p=0.5)``: zero each entry with probability p in training mode; identity in
    evaluation mode. Any input shape, e.g. (N, D) after a Linear or (N, C, H, W).

    p must be in [0, 1], as in PyTorch: p = 0 is the identity, p = 1 zeroes everything (and
    its gradient).

    The cache is (the input's shape, the scaled mask), the mask None where the layer is the
    identity (evaluation mode, or p = 0)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"Dropout expects p, the probability of zeroing an entry, to be "
                             f"a number in [0, 1]; got {p!r}")
        self.p = float(p)
        # A generator of its own, split off npnet's: reproducible from npnet.manual_seed,
        # and building a Dropout does not change the numbers the other layers draw
        # (spawn does not advance the parent's stream).
        self.rng = spawn_rng()

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_float(x)
        if not self.training or self.p == 0:
            scaled_mask = None  # the identity: nothing dropped, nothing scaled
        elif self.p == 1:
            scaled_mask = np.zeros(x.shape, dtype=x.dtype)  # 1 / (1 - p) would be 1 / 0
        else:
            scaled_mask = dropout_mask(self.rng, x.shape, self.p, x.dtype)
        self.cache = (x.shape, scaled_mask)
        if scaled_mask is None:
            return x  # the same array, no copy, as PyTorch's Dropout in evaluation mode
        return x * scaled_mask

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x_shape, scaled_mask = self.require_cache()
        grad_out = self.check_grad(grad_out, x_shape)
        if scaled_mask is None:
            return grad_out
        return grad_out * scaled_mask
