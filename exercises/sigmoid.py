"""Exercise: the backward pass of Sigmoid.

Write ``Sigmoid.backward`` below, then check it against npnet's own layer:

    python -m npnet.exercises check exercises/sigmoid.py   # or this file's path

The checker runs it on a few cases chosen so that mistakes cannot hide, says what differs,
and names the mistake when it is one it knows.

The math, from npnet/activation.py (derived in docs/backprop.md, "Activations"):

    Sigmoid:  y = 1 / (1 + exp(-x))      dL/dx = dL/dy * y (1 - y)

The solution is the library's own code, npnet/activation.py: Sigmoid.backward:
look at it when you are done, or stuck. (This file was generated from the library by
``python -m npnet.exercises make``.)
"""

import numpy as np

import npnet


class Sigmoid(npnet.Sigmoid):
    """npnet.Sigmoid with a backward of your own (the forward, the parameters
    and the checks are the library's)."""

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """grad_out (any shape, that of the output y) -> grad_x (the same shape)."""
        y = self.require_cache()
        grad_out = self.check_grad(grad_out, y.shape)
        # y: the output the forward kept (any shape)
        # Your code here.
        # Return grad_x, the shape of y.
        raise NotImplementedError("Sigmoid.backward: not written yet")
