"""Exercise: the backward pass of Linear.

Write ``Linear.backward`` below, then check it against npnet's own layer:

    python -m npnet.exercises check exercises/linear.py   # or this file's path

The checker runs it on a few cases chosen so that mistakes cannot hide, says what differs,
and names the mistake when it is one it knows.

The math, from npnet/linear.py (derived in docs/backprop.md, "Linear"):

    dL/dx = dL/dy W            (N, out) @ (out, in)  -> (N, in)
    dL/dW = (dL/dy)^T x        (out, N) @ (N, in)    -> (out, in)
    dL/db = sum_n dL/dy[n]     (out,)

The solution is the library's own code, npnet/linear.py: linear_backward:
look at it when you are done, or stuck. (This file was generated from the library by
``python -m npnet.exercises make``.)
"""

import numpy as np

import npnet


class Linear(npnet.Linear):
    """npnet.Linear with a backward of your own (the forward, the parameters
    and the checks are the library's)."""

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """grad_out (N, out) -> grad_x (N, in); adds dL/dW (out, in) into self.weight.grad
        and dL/db (out,) into self.bias.grad.

        The library computes the same with npnet.linear.linear_backward:
        grad_out (N, out) -> (grad_x (N, in), grad_weight (out, in), grad_bias (out,))."""
        cache = self.require_cache()
        grad_out = self.check_grad(grad_out, (len(cache.x), self.out_features))
        x, weight = cache  # x (N, in), weight (out, in)
        # Your code here.
        # Return grad_x. Add (+=) dL/dW into self.weight.grad and dL/db into
        # self.bias.grad (self.bias is None for Linear(..., bias=False)).
        raise NotImplementedError("Linear.backward: not written yet")
