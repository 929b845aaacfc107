"""Finite-difference gradient checks: the proof that a backward pass is right.

For a layer, pick a fixed random upstream gradient ``grad_out`` and look at the scalar

    f(x, params) = sum(layer.forward(x) * grad_out)

whose gradient is exactly what ``layer.backward(grad_out)`` claims to compute. (A random
grad_out, not ones: with ones, the gradient of BatchNorm's output sum is identically zero and a
check on it proves nothing.) For a network with a loss, f is the loss itself.

Each entry v of x and of every parameter is nudged both ways and the slope measured by central
differences, in float64:

    numeric = (f(v + h) - f(v - h)) / (2 h)          error O(h^2)

npnet uses the five-point version of the same idea (see ``central_difference``), whose error is
O(h^4): with h = 1e-3 it is both accurate and far above rounding noise. Each slope is then
compared with the analytic gradient entry by entry:

    relative error = |analytic - numeric| / max(|analytic|, |numeric|, floor)

where floor = 1e-3 * (largest |analytic| of that array) keeps rounding noise in entries near
zero from counting as a relative error of 100%. A correct backward gives ~1e-8 or less; a
wrong one gives errors near 1.

Usage:

    result = npnet.gradcheck(npnet.Conv2d(3, 4, 3, stride=2, padding=1), x)
    print(result)            # worst relative error per array, and where
    assert result.max_error < 1e-6

    result = npnet.gradcheck(net, x, loss=npnet.CrossEntropyLoss(), labels=y)

A layer that draws random numbers in its forward (``Dropout``) keeps its own
``np.random.Generator`` in an attribute. The check notes every such generator's state first and
puts it back before each forward it runs, so every evaluation of f draws the same numbers (one
dropout mask: f is then a fixed function to differentiate), and once more at the end, so
checking draws nothing and a training run goes on as if it had not happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ArrayCheck:
    """The comparison for one array: its worst relative error and where it is."""

    name: str
    max_error: float
    worst_index: tuple
    analytic: float
    numeric: float
    checked: int
    total: int


@dataclass
class GradCheckResult:
    """All arrays checked; ``max_error`` is the worst over them, ``worst`` names it."""

    mode: str
    arrays: list = field(default_factory=list)

    @property
    def max_error(self) -> float:
        return max((a.max_error for a in self.arrays), default=0.0)

    @property
    def worst(self) -> ArrayCheck | None:
        return max(self.arrays, key=lambda a: a.max_error, default=None)

    def __str__(self) -> str:
        lines = [f"gradcheck ({self.mode} mode): worst relative error {self.max_error:.2e}"]
        for a in self.arrays:
            lines.append(
                f"  {a.name:<16} {a.max_error:.2e} at {a.worst_index} "
                f"(analytic {a.analytic:+.6e}, numeric {a.numeric:+.6e}; "
                f"{a.checked}/{a.total} entries)"
            )
        return "\n".join(lines)


def relative_errors(analytic: np.ndarray, numeric: np.ndarray, largest: float,
                    zero_tol: float = 1e-9) -> np.ndarray:
    """Entrywise |a - n| / max(|a|, |n|, 1e-3 * largest).

    largest is the array's largest |gradient| (over all entries, not only those checked), so
    an entry a thousand times smaller than that is judged on the array's scale. An array whose
    gradient is below ``zero_tol`` everywhere on both sides is a gradient that is zero (e.g. the
    bias of a convolution followed by BatchNorm): its errors are reported as 0.
    """
    largest = max(largest, float(np.abs(numeric).max(initial=0.0)))
    if largest < zero_tol:
        return np.zeros(analytic.shape)
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), 1e-3 * largest)
    return np.abs(analytic - numeric) / scale


def central_difference(f, values: np.ndarray, index: tuple, h: float) -> float:
    """df/dv for v = values[index], by the five-point central difference

        (8 (f(v + h) - f(v - h)) - (f(v + 2h) - f(v - 2h))) / (12 h)      error O(h^4)

    (the familiar (f(v + h) - f(v - h)) / 2h with its O(h^2) error cancelled by Richardson
    extrapolation), which allows a larger h, so rounding in f matters less."""
    original = values[index]
    samples = {}
    for step in (-2, -1, 1, 2):
        values[index] = original + step * h
        samples[step] = f()
    values[index] = original
    return (8 * (samples[1] - samples[-1]) - (samples[2] - samples[-2])) / (12 * h)


def gradcheck(module, x: np.ndarray, grad_out: np.ndarray | None = None, *,
              loss=None, labels: np.ndarray | None = None, training: bool | None = None,
              h: float = 1e-3, max_entries: int | None = None, seed: int = 0,
              check_input: bool = True) -> GradCheckResult:
    """Compare ``module``'s backward with central differences; returns a GradCheckResult.

    - module: any layer or network, or a ``FastNet`` running one. It is converted to float64 for the check and restored
      afterwards (dtype, parameters, moving statistics and mode), so checking changes nothing.
    - x: input array (float64 is used regardless of its dtype).
    - grad_out: upstream gradient, shape of the output; drawn at random if None.
    - loss, labels: check a network end to end: f = loss(module(x), labels).
    - training: mode to check in (True/False); None keeps the module's current mode.
    - h: finite-difference step; max_entries: check at most this many random entries per array
      (None: all); seed: for grad_out and the entry sample.
    - check_input: also check dL/dx (set False for a module whose backward skips it, e.g. a
      ``FastNet`` built with ``input_grad=False``).

    Random draws in a forward are held fixed: the state of every ``np.random.Generator`` that
    a module keeps as an attribute (``Dropout.rng``) is restored before each forward, and at
    the end.
    """
    rng = np.random.default_rng(seed)
    generators = random_generators(module)  # noted before anything runs
    saved_state, saved_mode, saved_dtype = module.state_dict(), module.training, module.dtype
    mode = saved_mode if training is None else training
    module.astype(np.float64).train(mode)
    x = np.array(x, dtype=np.float64)  # our own copy, nudged in place below
    try:
        if loss is None and grad_out is None:
            restore(generators)
            grad_out = rng.standard_normal(np.shape(module(x)))
        # a forward in training mode moves the BatchNorm averages; put them back every time
        buffers = [(m, name, getattr(m, name).copy())
                   for m in module.modules() for name in m._buffer_names]

        def f() -> float:
            for owner, name, value in buffers:
                setattr(owner, name, value.copy())
            restore(generators)  # the same random draws (dropout mask) in every forward
            out = module(x)
            if loss is not None:
                return float(loss(out, labels))
            return float(np.sum(out * grad_out))

        # analytic gradients
        module.zero_grad()
        f()
        grad_x = module.backward(loss.backward() if loss is not None else grad_out)
        arrays = []
        if check_input:
            if grad_x is None:
                raise ValueError(
                    f"gradcheck: {_name(module)}.backward returned no input gradient (None); "
                    f"pass check_input=False to check the parameters only, or for a FastNet "
                    f"build it with input_grad=True")
            arrays.append(("input", x, np.array(grad_x)))
        arrays += [(name, p.data, p.grad.copy()) for name, p in module.named_parameters()]

        result = GradCheckResult("training" if mode else "evaluation")
        for name, values, analytic in arrays:
            if values.size == 0:
                continue
            flat_indices = np.arange(values.size)
            if max_entries is not None and values.size > max_entries:
                flat_indices = rng.choice(values.size, max_entries, replace=False)
            numeric = np.array([
                central_difference(f, values, np.unravel_index(flat, values.shape), h)
                for flat in flat_indices])
            analytic_sample = analytic.reshape(-1)[flat_indices]
            errors = relative_errors(analytic_sample, numeric,
                                     float(np.abs(analytic).max(initial=0.0)))
            worst = int(np.argmax(errors))
            result.arrays.append(ArrayCheck(
                name=name, max_error=float(errors[worst]),
                worst_index=tuple(int(i) for i in np.unravel_index(flat_indices[worst],
                                                                    values.shape)),
                analytic=float(analytic_sample[worst]), numeric=float(numeric[worst]),
                checked=len(flat_indices), total=values.size))
        return result
    finally:
        restore(generators)
        if saved_dtype is not None:
            module.astype(saved_dtype)
        module.load_state_dict(saved_state)
        module.zero_grad()
        module.train(saved_mode)


def random_generators(module) -> list:
    """(generator, its state now) for every ``np.random.Generator`` that a module of
    ``module`` keeps as an attribute (``Dropout.rng``)."""
    return [(value, value.bit_generator.state) for part in module.modules()
            for value in vars(part).values() if isinstance(value, np.random.Generator)]


def restore(generators: list) -> None:
    """Put each generator back in the state ``random_generators`` noted."""
    for generator, state in generators:
        generator.bit_generator.state = state


def _name(module) -> str:
    short_name = getattr(module, "short_name", None)
    return short_name() if callable(short_name) else type(module).__name__
