"""Softmax cross-entropy: the loss for classification with K classes.

Shapes: logits z (N, K), labels (N,) integers in [0, K).

    log_softmax(z)[n, k] = z[n, k] - logsumexp(z[n])         (stable: subtract max_k z[n, k])
    loss_n = -log_softmax(z)[n, labels[n]]                    (one loss per sample, (N,))

and ``reduction`` says what the criterion returns, as in PyTorch:

    'mean' (the default):  L = 1/N sum_n loss_n     a float
    'sum':                 L = sum_n loss_n         a float
    'none':                the losses loss_n        an (N,) array

Its gradient is the famously simple one (derivation in docs/backprop.md, section
"Softmax cross-entropy"), scaled by what the reduction did to each loss_n:

    'mean':  dL/dz = (softmax(z) - one_hot(labels)) / N
    'sum':   dL/dz =  softmax(z) - one_hot(labels)
    'none':  dL/dz[n] = g[n] * (softmax(z)[n] - one_hot(labels)[n]),  g = dL/dloss (N,)
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """logits (N, K) -> log-probabilities (N, K), without overflow for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class CrossEntropyLoss:
    """``CrossEntropyLoss(reduction='mean')``: ``criterion(logits, labels)`` returns the
    mean loss as a float ('sum': the sum, a float; 'none': the per-sample losses (N,) in the
    logits' dtype). ``criterion.backward(grad_losses=None)`` then returns dL/dlogits (N, K)
    in the logits' dtype.

    grad_losses is the upstream gradient dL/d(what forward returned), as for a layer:
    - 'mean', 'sum': None (the loss is L itself, dL/dL = 1) or a number that scales it;
    - 'none': required, an (N,) array, one weight per sample. ``np.full(N, 1 / N)`` gives the
      gradient of the mean of the losses, ``np.ones(N)`` that of their sum. (No default: a
      silent choice between the two would be a factor N that nobody asked for.)
    """

    REDUCTIONS = ("mean", "sum", "none")

    def __init__(self, reduction: str = "mean"):
        if not isinstance(reduction, str) or reduction not in self.REDUCTIONS:
            raise ValueError(f"CrossEntropyLoss expects reduction 'mean', 'sum' or 'none'; "
                             f"got {reduction!r}")
        self.reduction = reduction
        self.cache = None

    def __repr__(self) -> str:
        return ("CrossEntropyLoss()" if self.reduction == "mean"
                else f"CrossEntropyLoss(reduction={self.reduction!r})")

    def __call__(self, logits: np.ndarray, labels: np.ndarray):
        return self.forward(logits, labels)

    def forward(self, logits: np.ndarray, labels: np.ndarray):
        logits, labels = self._check(logits, labels)
        log_probs = log_softmax(logits)
        N = logits.shape[0]
        losses = -log_probs[np.arange(N), labels]  # (N,)
        self.cache = (log_probs, labels)
        if self.reduction == "none":
            return losses
        return float(losses.sum() if self.reduction == "sum" else losses.mean())

    def backward(self, grad_losses=None) -> np.ndarray:
        if self.cache is None:
            raise RuntimeError("CrossEntropyLoss.backward called before computing a loss")
        log_probs, labels = self.cache
        N = log_probs.shape[0]
        scale = self._checked_grad_losses(grad_losses, N, log_probs.dtype)
        grad = np.exp(log_probs)  # softmax
        grad[np.arange(N), labels] -= 1
        if self.reduction == "mean":
            grad /= N
        if self.reduction == "none":
            grad *= scale[:, None]  # row n scaled by dL/dloss_n
        elif scale is not None:
            grad *= scale
        return grad

    def _checked_grad_losses(self, grad_losses, N: int, dtype):
        """grad_losses in ``dtype``: None or a scalar for 'mean' and 'sum', (N,) for 'none'."""
        if self.reduction == "none":
            if grad_losses is None:
                raise ValueError(
                    f"CrossEntropyLoss(reduction='none').backward needs grad_losses, the "
                    f"gradient of the loss with respect to each of the {N} per-sample losses, "
                    f"shape ({N},): np.full({N}, 1 / {N}) for their mean, np.ones({N}) for "
                    f"their sum")
            grad_losses = np.asarray(grad_losses)
            if grad_losses.shape != (N,):
                raise ValueError(f"CrossEntropyLoss(reduction='none').backward expects "
                                 f"grad_losses of shape ({N},), one per sample (the shape of "
                                 f"its last output); got {grad_losses.shape}")
            return grad_losses.astype(dtype, copy=False)
        if grad_losses is None:
            return None
        if np.ndim(grad_losses) != 0:
            raise ValueError(f"CrossEntropyLoss(reduction={self.reduction!r}).backward expects "
                             f"grad_losses to be None or a number (its loss is one number); "
                             f"got shape {np.shape(grad_losses)}. reduction='none' gives one "
                             f"loss per sample")
        return dtype.type(grad_losses)

    @staticmethod
    def _check(logits, labels):
        logits, labels = np.asarray(logits), np.asarray(labels)
        if logits.ndim != 2:
            raise ValueError(f"CrossEntropyLoss expects logits (N, K); got {logits.shape}")
        if logits.dtype not in (np.float32, np.float64):
            raise TypeError(f"CrossEntropyLoss expects float32 or float64 logits; "
                            f"got {logits.dtype}")
        N, K = logits.shape
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"CrossEntropyLoss expects integer class labels (N,) = ({N},); "
                            f"got dtype {labels.dtype}")
        if labels.shape != (N,):
            raise ValueError(f"CrossEntropyLoss expects labels of shape ({N},), one per row of "
                             f"the logits {logits.shape}; got {labels.shape}")
        if N and (labels.min() < 0 or labels.max() >= K):
            bad = labels[(labels < 0) | (labels >= K)][0]
            raise ValueError(f"CrossEntropyLoss expects labels in [0, {K}) for {K} classes; "
                             f"got {bad}")
        return logits, labels
