"""Exercise: the backward pass of CrossEntropyLoss.

Write ``CrossEntropyLoss.backward`` below, then check it against npnet's own layer:

    python -m npnet.exercises check exercises/cross_entropy.py   # or this file's path

The checker runs it on a few cases chosen so that mistakes cannot hide, says what differs,
and names the mistake when it is one it knows.

The math, from npnet/loss.py (derived in docs/backprop.md, "Softmax cross-entropy"):

    log_softmax(z)[n, k] = z[n, k] - logsumexp(z[n])         (stable: subtract max_k z[n, k])
    loss_n = -log_softmax(z)[n, labels[n]]                    (one loss per sample, (N,))

    'mean':  dL/dz = (softmax(z) - one_hot(labels)) / N

The solution is the library's own code, npnet/loss.py: CrossEntropyLoss.backward:
look at it when you are done, or stuck. (This file was generated from the library by
``python -m npnet.exercises make``.)
"""

import numpy as np

import npnet


class CrossEntropyLoss(npnet.CrossEntropyLoss):
    """npnet.CrossEntropyLoss with a backward of your own (the forward, the parameters
    and the checks are the library's)."""

    def backward(self, grad_losses=None) -> np.ndarray:
        """-> dL/dlogits (N, K), the gradient of the mean loss (grad_losses: None)."""
        if self.cache is None:
            raise RuntimeError("CrossEntropyLoss.backward called before computing a loss")
        log_probs, labels = self.cache
        N = log_probs.shape[0]
        # log_probs (N, K): log softmax(logits); labels (N,): integers in [0, K)
        # Your code here.
        # Return dL/dlogits (N, K) for the default reduction='mean', in the logits'
        # dtype. (The 'sum' and 'none' reductions are npnet/loss.py's; not checked here.)
        raise NotImplementedError("CrossEntropyLoss.backward: not written yet")
