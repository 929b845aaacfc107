"""Exercise: the backward pass of BatchNorm.

Write ``BatchNorm.backward`` below, then check it against npnet's own layer:

    python -m npnet.exercises check exercises/batch_norm.py   # or this file's path

The checker runs it on a few cases chosen so that mistakes cannot hide, says what differs,
and names the mistake when it is one it knows.

The math, from npnet/batchnorm.py (derived in docs/backprop.md, "BatchNorm"):

    batch_mean = mean(x, axes)                                      (1, F) or (1, F, 1, 1)
    batch_var  = mean((x - batch_mean)^2, axes)                     biased: divides by M
    x_hat = (x - batch_mean) / sqrt(batch_var + eps)
    y = gamma * x_hat + beta

    Backward — derivation in docs/backprop.md, section "BatchNorm". With inv_std = 1/sqrt(var+eps)
    and g = dL/dy * gamma (the gradient reaching x_hat):

    dL/dgamma = sum(dL/dy * x_hat, axes)        dL/dbeta = sum(dL/dy, axes)
    training:   dL/dx = inv_std * (g - mean(g, axes) - x_hat * mean(g * x_hat, axes))
    evaluation: dL/dx = inv_std * g             (the moving statistics are constants)

The solution is the library's own code, npnet/batchnorm.py: batch_norm_backward:
look at it when you are done, or stuck. (This file was generated from the library by
``python -m npnet.exercises make``.)
"""

import numpy as np

import npnet


class BatchNorm(npnet.BatchNorm):
    """npnet.BatchNorm with a backward of your own (the forward, the parameters
    and the checks are the library's)."""

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """grad_out (N, F) or (N, F, H, W) -> grad_x (the same shape); adds dL/dgamma and
        dL/dbeta, (1, F) or (1, F, 1, 1), into self.gamma.grad and self.beta.grad.

        The library computes the same with npnet.batchnorm.batch_norm_backward:
        grad_out (shape of x) -> (grad_x, grad_gamma, grad_beta); the latter two (1, F[, 1, 1])."""
        cache = self.require_cache()
        grad_out = self.check_grad(grad_out, cache.x_hat.shape)
        x_hat, inv_std, gamma, training = cache
        # x_hat: shape of x; inv_std, gamma: (1, F) or (1, F, 1, 1); training: whether
        # the statistics came from this batch
        axes = (0,) if x_hat.ndim == 2 else (0, 2, 3)
        # Your code here.
        # Return grad_x, the shape of x. Add (+=) dL/dgamma into self.gamma.grad and
        # dL/dbeta into self.beta.grad, both (1, F) or (1, F, 1, 1) (keepdims=True).
        raise NotImplementedError("BatchNorm.backward: not written yet")
