"""Random initialization, and one switch to seed it all.

Layers draw their initial weights from one module-level NumPy ``Generator``.
``npnet.manual_seed(seed)`` replaces it, so a run is reproducible from a single number.

Two schemes:
- PyTorch's default for Conv2d and Linear (what a layer does when built):
  weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_features or
  in_channels * kh * kw. (PyTorch writes it as kaiming_uniform_ with a = sqrt(5).)
- Xavier (Glorot) uniform, which the book's ``train_ch6`` applies to every Conv2d and
  Linear weight: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
"""

from __future__ import annotations

import math

import numpy as np

_rng = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed npnet's generator (initialization, and anything else that asks ``get_rng``)."""
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def get_rng() -> np.random.Generator:
    return _rng


def fan_in_and_fan_out(shape: tuple) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in) or (out, in, kh, kw)."""
    receptive_field = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive_field, shape[0] * receptive_field


def uniform(shape: tuple, bound: float, dtype=np.float32) -> np.ndarray:
    return _rng.uniform(-bound, bound, size=shape).astype(dtype)


def default_uniform(shape: tuple, fan_in: int, dtype=np.float32) -> np.ndarray:
    """PyTorch's default Conv2d/Linear initialization: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)


def xavier_uniform_(param, gain: float = 1.0):
    """Fill ``param.data`` in place with U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(param.data.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    param.data[...] = uniform(param.data.shape, bound, param.data.dtype)
    return param


def init_xavier(model) -> None:
    """The book's init: Xavier-uniform every Conv2d and Linear weight (biases unchanged)."""
    from .conv import Conv2d
    from .linear import Linear

    for module in model.modules():
        if isinstance(module, (Conv2d, Linear)):
            xavier_uniform_(module.weight)
