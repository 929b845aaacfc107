"""npnet's random generator, and the draws layers make when they are built.

Layers draw their initial weights from one module-level NumPy ``Generator``.
``npnet.manual_seed(seed)`` replaces it, so a run is reproducible from a single number.

What a Conv2d or Linear does when built is PyTorch's default initialization:
weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_features or
in_channels * kh * kw. (PyTorch writes it as kaiming_uniform_ with a = sqrt(5).)
Other schemes, applied to a built network, are in init.py.
"""

from __future__ import annotations

import math

import numpy as np

_seeds = np.random.SeedSequence()
_rng = np.random.default_rng(_seeds)


def manual_seed(seed: int) -> np.random.Generator:
    """Seed npnet's generator (initialization, and anything else that asks ``get_rng``), and
    the seeds ``spawn_rng`` hands out."""
    global _rng, _seeds
    _seeds = np.random.SeedSequence(seed)
    _rng = np.random.default_rng(_seeds)
    return _rng


def get_rng() -> np.random.Generator:
    return _rng


def spawn_rng() -> np.random.Generator:
    """A new generator of its own (e.g. for a Dropout layer's masks), reproducible from
    ``manual_seed``: the n-th one spawned after ``manual_seed(s)`` is always the same. Spawning
    does not advance npnet's generator, so the other layers' initial weights do not change."""
    return np.random.default_rng(_seeds.spawn(1)[0])


def uniform(shape: tuple, bound: float, dtype=np.float32) -> np.ndarray:
    """An array of ``shape`` drawn from U(-bound, bound)."""
    return _rng.uniform(-bound, bound, size=shape).astype(dtype)


def default_uniform(shape: tuple, fan_in: int, dtype=np.float32) -> np.ndarray:
    """PyTorch's default Conv2d/Linear initialization: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)
