"""The proof: a kernel runs only where it has been shown to give what its layers give.

Before FastNet first runs a kernel (for given layers, mode, input shape and code), it runs, on
a tiny random float64 batch:

    the layers as written      each layer's own forward, in order, then its own backward, in
                               reverse, from a random upstream gradient
    the kernel                 its forward and backward on the batch-last layout

on two float64 copies of the layers that hold the same random parameters and buffers (not the
ones and zeros BatchNorm starts with, behind which a missing factor of gamma would hide). It
then compares the output, dL/dx, every parameter gradient and every buffer after the forward.
A kernel that agrees to TOLERANCE runs; one that does not, or a layer the backend has no
kernel for, runs as written. The real layers are never touched: no state, no gradient, no
hook sees the proof. (A layer whose forward or backward is replaced on the instance by a
plain function is not proven at all: the function may hold the real layer, which a copy would
then run on.)

``code_version`` ties a proof to the code it proved: it changes whenever a function that a
layer's forward or backward reaches is replaced (an edit reloaded in a notebook, a
monkeypatched ``batch_norm_backward``, a method replaced at run time), and FastNet proves the
kernel again.
"""

from __future__ import annotations

import copy
import itertools
import types
from dataclasses import dataclass

import numpy as np

from .layout import from_batch_last, to_batch_last

PROOF_BATCH = 4  # samples in the proof's batch: BatchNorm needs more than one
TOLERANCE = 1e-8  # float64 kernels agree with the layers to ~1e-15; a wrong one is off by ~1


# ------------------------------------------------------------------------- the proof itself
@dataclass
class Verdict:
    """The largest relative difference between kernel and layers, and in which array."""

    difference: float
    where: str

    @property
    def agrees(self) -> bool:
        return self.difference <= TOLERANCE


def bare_copy(module):
    """A copy of ``module`` with its own parameters and buffers, and no hooks or cache (the
    copy must not call a Recorder, or copy a 15 MB cache)."""
    memo = {}
    for part in module.modules():
        memo[id(part._forward_hooks)] = []
        memo[id(part._backward_hooks)] = []
        memo[id(part.cache)] = None
    return copy.deepcopy(module, memo)


def float64_copy(module):
    """A float64 ``bare_copy`` of ``module``, gradients zeroed."""
    twin = bare_copy(module).astype(np.float64)
    twin.zero_grad()
    return twin


def randomize(module, rng: np.random.Generator) -> None:
    """Move every parameter and buffer away from its value, keeping its sign and scale (ones
    become values in about 0.5 .. 1.5, zeros small values of either sign, and an array with no
    negative entry, such as a variance, stays non-negative)."""
    for part in module.modules():
        for param in [v for v in vars(part).values() if hasattr(v, "grad") and hasattr(v, "data")]:
            param.data[...] = _jitter(param.data, rng)
        for name in part._buffer_names:
            object.__setattr__(part, name, _jitter(getattr(part, name), rng))


def _jitter(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=-1.0)  # a diverged network too
    size = float(np.abs(values).mean()) if values.size else 0.0
    jittered = (values * rng.uniform(0.5, 1.5, values.shape)
                + 0.05 * (size or 1.0) * rng.standard_normal(values.shape))
    return np.abs(jittered) if np.all(values >= 0) and np.any(values > 0) else jittered


def run_layers(layers, x: np.ndarray, grad_out_seed: int) -> dict:
    """The layers as written: output, dL/dx, parameter gradients, buffers (batch first)."""
    y = x
    for layer in layers:
        y = layer.forward(y)
    results = {"output": np.asarray(y)}
    results.update(_buffers(layers))
    grad = np.random.default_rng(grad_out_seed).standard_normal(np.shape(y))
    for layer in reversed(layers):
        grad = layer.backward(grad)
    results["dL/dx"] = None if grad is None else np.asarray(grad)
    results.update(_gradients(layers))
    return results


def run_kernel(kernel, x: np.ndarray, grad_out_seed: int) -> dict:
    """The same numbers from the kernel, moved back to batch first."""
    y = from_batch_last(kernel.forward(to_batch_last(x)))
    results = {"output": np.asarray(y)}
    results.update(_buffers(kernel.layers))
    grad = np.random.default_rng(grad_out_seed).standard_normal(y.shape)
    grad_x = kernel.backward(to_batch_last(grad))
    results["dL/dx"] = None if grad_x is None else from_batch_last(grad_x)
    results.update(_gradients(kernel.layers))
    return results


def _buffers(layers) -> dict:
    return {_prefix(layers, position) + name: np.array(value)
            for position, layer in enumerate(layers) for name, value in layer.named_buffers()}


def _gradients(layers) -> dict:
    return {"dL/d" + _prefix(layers, position) + name: param.grad.copy()
            for position, layer in enumerate(layers) for name, param in layer.named_parameters()}


def _prefix(layers, position: int) -> str:
    """'' for a single layer's arrays ('dL/dweight'); the layer's type for a fused kernel's
    ('dL/dBatchNorm.gamma')."""
    return "" if len(layers) == 1 else f"{type(layers[position]).__name__}."


def prove(kernel_class, layers, x: np.ndarray, input_grad: bool, seed: int = 0):
    """Run ``kernel_class(*layers)`` and ``layers`` as written side by side on x (float64,
    batch first). Returns (Verdict, the layers' output, for the next kernel's proof).

    An exception in the layers' own code (e.g. a Linear refusing the previous layer's output
    shape) is the layers' to raise when they really run: the output is then None, and they run
    as written.
    """
    rng = np.random.default_rng(seed)
    reference = [float64_copy(layer) for layer in layers]
    for layer in reference:
        randomize(layer, rng)
    twins = [float64_copy(layer) for layer in reference]  # the same values
    try:
        expected = run_layers(reference, x, seed + 1)
    except Exception as error:  # noqa: BLE001 - any error of a learner's layer
        return Verdict(np.inf, f"the layers' own code ({type(error).__name__}: {error})"), None
    try:
        got = run_kernel(kernel_class(*twins, input_grad=input_grad), x, seed + 1)
    except Exception as error:  # noqa: BLE001
        return Verdict(np.inf, f"the kernel ({type(error).__name__}: {error})"), \
            expected["output"]
    if not input_grad:
        expected["dL/dx"] = got["dL/dx"] = None
    return compare(expected, got), expected["output"]


def reference_output(layers, x: np.ndarray):
    """The layers' output on x, run as written on float64 copies (None if they raise). The
    class's forward runs, not one set on the instance: that may be a closure over the real
    layer. (Only the shape matters here: this is the next proof's input.)"""
    y = x
    try:
        for layer in layers:
            twin = float64_copy(layer)
            y = type(twin).forward(twin, y)
    except Exception:  # noqa: BLE001
        return None
    return np.asarray(y)


def compare(expected: dict, got: dict) -> Verdict:
    """The largest relative difference over the arrays. Gradients are judged on the scale of
    the largest gradient: a convolution's bias before a BatchNorm has a gradient that is zero
    up to rounding, which neither side computes more exactly than the other."""
    gradients = [a for key, a in expected.items() if key.startswith("dL/d") and a is not None]
    gradient_scale = max((float(np.abs(a).max(initial=0.0)) for a in gradients), default=0.0)
    worst = Verdict(0.0, "output")
    for key, want in expected.items():
        have = got.get(key)
        if want is None and have is None:
            continue
        if want is None or have is None or np.shape(want) != np.shape(have):
            return Verdict(np.inf, f"{key} (shape {np.shape(have)}, expected {np.shape(want)})")
        scale = gradient_scale if key.startswith("dL/d") else float(np.abs(want).max(initial=0))
        difference = float(np.abs(have - want).max(initial=0.0)) / max(scale, 1e-300)
        if not difference <= worst.difference:  # NaN counts as the worst
            worst = Verdict(difference if difference == difference else np.inf, key)
    return worst


# ------------------------------------------------------------------- which code was proven
_versions = itertools.count()
_tracked: dict = {}  # layer class -> (version, [(namespace, name, object it held)])
ROOTS = ("forward", "backward")


def own_methods(layer) -> list:
    """The forward / backward set on the instance itself (``layer.backward = ...``), if any."""
    return [vars(layer)[root] for root in ROOTS if root in vars(layer)]


def code_version(layer) -> tuple:
    """A value that changes when the code behind ``layer``'s forward or backward changes.

    For the layer's class: a number, renewed when any function its forward and backward reach
    (through the module's globals or through ``self.``) is no longer the object it was. For a
    forward or backward set on the instance itself: that function and what it reaches, looked
    up afresh.
    """
    own = own_methods(layer)
    if not own:
        return (class_version(type(layer)),)
    references = []
    for method in own:
        _reach(method, type(layer), references, set())
    return (class_version(type(layer)), *own, *(held for _, _, held in references))


def class_version(cls) -> int:
    """The version of the code a class's forward and backward reach (see ``code_version``)."""
    entry = _tracked.get(cls)
    if entry is None or _changed(entry[1]):
        references = []
        for root in ROOTS:
            references.append((cls, root, _look_up(cls, root)))
            _reach(_look_up(cls, root), cls, references, set())
        entry = _tracked[cls] = (next(_versions), references)
    return entry[0]


def _changed(references) -> bool:
    """Whether any (namespace, name) no longer holds the function it held (the loop is
    written out: it runs on every forward of a FastNet)."""
    for space, name, held in references:
        found = space.get(name) if type(space) is dict else getattr(space, name, None)
        if found is not held and getattr(found, "__func__", None) is not held:
            return True
    return False


def code_versions(layers) -> tuple:
    """``code_version`` of each layer, each class's code checked once."""
    checked = {}
    versions = []
    for layer in layers:
        cls = type(layer)
        if cls not in checked:
            checked[cls] = class_version(cls)
        versions.append(code_version(layer) if own_methods(layer) else (checked[cls],))
    return tuple(versions)


def _look_up(space, name):
    """The function ``name`` names in a module's globals (a dict) or on a class, unwrapped
    from a static or class method (so that the same function is the same object)."""
    found = space.get(name) if isinstance(space, dict) else getattr(space, name, None)
    return getattr(found, "__func__", found)


def _reach(function, cls, references: list, seen: set) -> None:
    """Record ``function`` and, recursively, the functions it names (globals of its module, or
    attributes of ``cls`` such as ``self.check_input``), except numpy's and Python's own."""
    function = getattr(function, "__func__", function)  # a bound method's function
    if not isinstance(function, types.FunctionType) or function in seen:
        return
    seen.add(function)
    if (function.__module__ or "").split(".")[0] in ("numpy", "builtins", "typing"):
        return
    codes = [function.__code__]
    while codes:
        code = codes.pop()
        codes.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
        for name in code.co_names:
            for space in (function.__globals__, cls):
                target = _look_up(space, name)
                if isinstance(target, types.FunctionType):
                    references.append((space, name, target))
                    _reach(target, cls, references, seen)
