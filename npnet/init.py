"""Initialization schemes applied to a built network.

A layer starts from PyTorch's default (rng.py). The book's ``train_ch6`` replaces every Conv2d
and Linear weight with Xavier (Glorot) uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
"""

from __future__ import annotations

import math

from .conv import Conv2d
from .linear import Linear
from .rng import uniform


def fan_in_and_fan_out(shape: tuple) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in) or (out, in, kh, kw)."""
    receptive_field = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive_field, shape[0] * receptive_field


def xavier_uniform_(param, gain: float = 1.0):
    """Fill ``param.data`` in place with U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(param.data.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    param.data[...] = uniform(param.data.shape, bound, param.data.dtype)
    return param


def init_xavier(model) -> None:
    """The book's init: Xavier-uniform every Conv2d and Linear weight (biases unchanged)."""
    for module in model.modules():
        if isinstance(module, (Conv2d, Linear)):
            xavier_uniform_(module.weight)
