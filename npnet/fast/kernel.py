"""Kernel: what the fast backend runs in place of a layer's own forward and backward.

A kernel stands for one layer (or a few in a row, fused.py) and takes and returns batch-last
arrays (layout.py). It reads the layers' parameters and mode, updates their buffers and adds
into their ``.grad`` exactly as their own ``forward`` / ``backward`` would; it keeps its cache
for itself and never touches the layers' own ``cache``. ``FastNet`` builds one only after
proof.py has shown it gives what the layers give.
"""

from __future__ import annotations

import numpy as np

from .layout import from_batch_last, to_batch_last


class Kernel:
    """Base class. ``layers``: the layers it stands for; ``input_grad``: whether ``backward``
    must return dL/dx (False for a network's first layer, whose input is the images: the
    kernel may then skip that work and return None)."""

    fires_hooks = False  # FastNet fires the layers' hooks around it

    def __init__(self, *layers, input_grad: bool = True):
        self.layers = layers
        self.input_grad = input_grad
        self.cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def release(self) -> None:
        """Drop what the last forward kept for backward."""
        self.cache = None

    def require_cache(self):
        if self.cache is None:
            names = " -> ".join(layer.short_name() for layer in self.layers)
            raise RuntimeError(f"npnet.fast: backward of {names} called before forward")
        return self.cache

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(l.short_name() for l in self.layers)})"


class AsWritten(Kernel):
    """The layer's own ``forward`` / ``backward`` (and hooks), on batch-first arrays: for a layer
    the backend has no kernel for, or whose kernel does not agree with it."""

    fires_hooks = True  # layer(x) and layer.run_backward fire them

    def forward(self, x: np.ndarray) -> np.ndarray:
        (layer,) = self.layers
        y = layer(np.ascontiguousarray(from_batch_last(x)))
        return to_batch_last(np.asarray(y))

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        (layer,) = self.layers
        grad_x = layer.run_backward(np.ascontiguousarray(from_batch_last(grad_out)))
        if grad_x is None:
            return None
        return to_batch_last(np.asarray(grad_x))


class LayoutFree(Kernel):
    """The layer's own ``forward`` / ``backward`` called directly on batch-last arrays: right
    for an elementwise layer (Tanh, ReLU), to which the layout makes no difference. The layer's
    own cache is put back as it was: this kernel keeps what its forward stored."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        (layer,) = self.layers
        own_cache = layer.cache
        try:
            y = layer.forward(x)
            self.cache = layer.cache
        finally:
            layer.cache = own_cache
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        (layer,) = self.layers
        own_cache, layer.cache = layer.cache, self.require_cache()
        try:
            return layer.backward(grad_out)
        finally:
            layer.cache = own_cache
