"""Softmax cross-entropy: the loss for classification with K classes.

Shapes: logits z (N, K), labels (N,) integers in [0, K).

    log_softmax(z)[n, k] = z[n, k] - logsumexp(z[n])         (stable: subtract max_k z[n, k])
    loss = -1/N sum_n log_softmax(z)[n, labels[n]]

Its gradient is the famously simple one (derivation in docs/backprop.md, section
"Softmax cross-entropy"):

    dL/dz = (softmax(z) - one_hot(labels)) / N
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """logits (N, K) -> log-probabilities (N, K), without overflow for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class CrossEntropyLoss:
    """``loss = criterion(logits, labels)`` returns the mean loss as a float;
    ``criterion.backward()`` then returns dL/dlogits (N, K) in the logits' dtype."""

    def __init__(self):
        self.cache = None

    def __repr__(self) -> str:
        return "CrossEntropyLoss()"

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> float:
        return self.forward(logits, labels)

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        logits, labels = self._check(logits, labels)
        log_probs = log_softmax(logits)
        N = logits.shape[0]
        loss = -log_probs[np.arange(N), labels].mean()
        self.cache = (log_probs, labels)
        return float(loss)

    def backward(self) -> np.ndarray:
        if self.cache is None:
            raise RuntimeError("CrossEntropyLoss.backward called before computing a loss")
        log_probs, labels = self.cache
        N = log_probs.shape[0]
        grad = np.exp(log_probs)  # softmax
        grad[np.arange(N), labels] -= 1
        grad /= N
        return grad

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
