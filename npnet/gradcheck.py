"""Finite-difference gradient checks: the proof that a backward pass is right, and, when it is
not, a verdict in words.

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

where floor = 1e-3 * (largest |analytic| of that array), or the rounding noise of the finite
difference if that is larger, keeps entries near zero from counting as a relative error of 100%.

What the numbers mean, and the verdict each array gets:

    <= 1e-6        correct     (a correct backward usually gives 1e-8 or less in float64)
    1e-6 .. 1e-2   suspicious  a small but real difference: a term that is small here, eps in
                               another place than in forward, float32 arithmetic inside ...
    >= 1e-2        wrong       a missing or wrong term (2.0 means the sign is wrong)

A finite difference is only trusted once it stops changing with the step. Every entry that
fails at h is measured again at h/10 and h/100:

- the slopes agree (a smooth function): the error at h/100 is the entry's error. When that
  passes where h failed, the function bent sharply within h (BatchNorm on a batch of 2);
- they still change (a kink closer than 2 h/100: ReLU or LeakyReLU at 0, a tie in max
  pooling): no step can measure that slope. The entry is left out of the verdict and
  counted (``ArrayCheck.kinks``).

So a correct layer with a kink passes, and a wrong one still fails wherever it is smooth.

Before the check, ``gradcheck`` makes sure it proves something, and that it changes nothing:

- it checks a copy of the module, converted to float64: the network keeps its dtype,
  parameters, gradients, moving statistics, caches and mode, and its random generators
  draw nothing;
- on that copy, parameters and buffers whose entries are all equal (BatchNorm's gamma of
  ones and beta of zeros, a bias of zeros) get random values first, because a factor of 1
  or a term of 0 hides a missing factor or term. ``perturb=False`` checks them as they are;
- random draws are held fixed: every ``np.random.Generator`` a module keeps as an attribute
  (``Dropout.rng``), and NumPy's global generator (``np.random.rand``), is put back in the
  same state before each forward, so that every evaluation of f draws the same dropout
  mask. A forward that still gives two answers for the same input is reported as not
  deterministic, and nothing else is checked;
- what backward returns is checked before any number is compared: None, the wrong shape
  or the wrong dtype is an error that names the layer and the shapes, and a backward that
  sets ``.grad`` instead of adding to it is named too.

Usage:

    result = npnet.gradcheck(npnet.Conv2d(3, 4, 3, stride=2, padding=1), x)
    result                   # in a notebook: a table with one verdict per array
    print(result)            # the same table as text
    assert result.max_error < 1e-6

    result = npnet.gradcheck(net, x, loss=npnet.CrossEntropyLoss(), labels=y)
"""

from __future__ import annotations

import copy
import html
from dataclasses import dataclass, field

import numpy as np

from .module import CacheState

CORRECT = 1e-6  # at most this relative error: correct
WRONG = 1e-2    # at least this: wrong; in between: suspicious
STEP_DIVISORS = (10, 100)  # the smaller steps an entry that fails at h is measured again with
STABLE_FAILURES_TO_STOP = 10  # once this many failures hold at every step, the array is wrong
EPS64 = float(np.finfo(np.float64).eps)


@dataclass
class ArrayCheck:
    """The comparison for one array: its worst relative error, where, and the verdict.

    - max_error: the worst relative error over the entries judged
    - worst_index, analytic, numeric: the entry with that error and its two gradients
    - checked, total: entries compared, entries in the array
    - kinks: entries left out because their finite difference changes with the step
    - finer_step: entries that failed at h and were judged at a smaller step
    - verdict: 'correct', 'suspicious' or 'wrong'; reason: why, in words
    """

    name: str
    max_error: float
    worst_index: tuple
    analytic: float
    numeric: float
    checked: int
    total: int
    kinks: int = 0
    finer_step: int = 0
    verdict: str = "correct"
    reason: str = ""


@dataclass
class GradCheckResult:
    """Every array checked. ``max_error`` is the worst error over them and ``worst`` names
    that array. ``verdict`` is the worst verdict: 'correct', 'suspicious' or 'wrong', or
    'not deterministic' when the forward gave two answers for one input. ``notes`` lists
    what the check did to the copy it checked, e.g. parameters given random values."""

    mode: str
    arrays: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    nondeterministic: str = ""  # the explanation, when the forward is not deterministic

    @property
    def max_error(self) -> float:
        if self.nondeterministic:
            return float("inf")  # nothing could be checked: fails any bar
        return max((a.max_error for a in self.arrays), default=0.0)

    @property
    def worst(self) -> ArrayCheck | None:
        return max(self.arrays, key=lambda a: a.max_error, default=None)

    @property
    def verdict(self) -> str:
        if self.nondeterministic:
            return "not deterministic"
        verdicts = {a.verdict for a in self.arrays}
        for verdict in ("wrong", "suspicious"):
            if verdict in verdicts:
                return verdict
        return "correct"

    @property
    def passed(self) -> bool:
        """True when every array is correct."""
        return self.verdict == "correct"

    def __repr__(self) -> str:
        if self.nondeterministic:
            return f"<GradCheckResult: not deterministic ({self.mode} mode)>"
        kinks = sum(a.kinks for a in self.arrays)
        left_out = f", {_entries(kinks)} at kinks left out" if kinks else ""
        arrays = "1 array" if len(self.arrays) == 1 else f"{len(self.arrays)} arrays"
        return (f"<GradCheckResult: {self.verdict}, worst relative error {self.max_error:.1e} "
                f"in {self.worst.name if self.worst else '-'} ({arrays}, "
                f"{self.mode} mode{left_out})>")

    def __str__(self) -> str:
        lines = [f"gradcheck ({self.mode} mode): {self.verdict}"]
        if self.nondeterministic:
            return "\n".join(lines + ["  " + self.nondeterministic] + _notes(self.notes))
        lines[0] += f", worst relative error {self.max_error:.2e}"
        for a in self.arrays:
            lines.append(
                f"  {a.name:<16} {a.verdict:<10} {a.max_error:.2e} at {a.worst_index} "
                f"(analytic {a.analytic:+.6e}, numeric {a.numeric:+.6e}; "
                f"{a.checked}/{a.total} entries)")
            if a.reason:
                lines.append(f"  {'':<16} {a.reason}")
        return "\n".join(lines + _notes(self.notes))

    def _repr_html_(self) -> str:
        """The table Jupyter shows for a result left as a cell's last expression."""
        colors = {"correct": "#1a7f37", "suspicious": "#b35900", "wrong": "#c62828",
                  "not deterministic": "#c62828"}
        head = (f"<p><b>gradcheck</b> ({self.mode} mode): <b style='color:"
                f"{colors[self.verdict]}'>{self.verdict}</b>")
        if self.nondeterministic:
            return head + f"<br>{html.escape(self.nondeterministic)}</p>" + _html_notes(self.notes)
        head += f", worst relative error {self.max_error:.2e}</p>"
        rows = "".join(
            f"<tr><td><code>{html.escape(a.name)}</code></td>"
            f"<td style='color:{colors[a.verdict]}'>{a.verdict}</td>"
            f"<td>{a.max_error:.2e}</td><td>{a.worst_index}</td>"
            f"<td>{a.analytic:+.4e}</td><td>{a.numeric:+.4e}</td>"
            f"<td>{a.checked}/{a.total}</td><td>{html.escape(a.reason)}</td></tr>"
            for a in self.arrays)
        table = ("<table><tr><th>array</th><th>verdict</th><th>worst rel. error</th>"
                 "<th>at</th><th>analytic</th><th>numeric</th><th>entries</th><th>why</th></tr>"
                 f"{rows}</table>")
        return head + table + _html_notes(self.notes)


def _notes(notes: list) -> list:
    return [f"  note: {note}" for note in notes]


def _html_notes(notes: list) -> str:
    return "".join(f"<p><i>note:</i> {html.escape(note)}</p>" for note in notes)


# ------------------------------------------------------------------- the measurement
def relative_errors(analytic: np.ndarray, numeric: np.ndarray, largest: float,
                    zero_tol: float = 1e-9) -> np.ndarray:
    """Entrywise |a - n| / max(|a|, |n|, 1e-3 * largest, zero_tol).

    largest is the array's largest |gradient| (over all entries, not only those checked), so
    an entry a thousand times smaller than that is judged on the array's scale. zero_tol is
    the smallest gradient the finite difference can tell from 0 (its rounding noise): an
    array whose gradient is below it everywhere on both sides is a gradient that is zero
    (e.g. the bias of a convolution followed by BatchNorm), and its errors are reported as 0.
    """
    largest = max(largest, float(np.abs(numeric).max(initial=0.0)))
    if largest < zero_tol:
        return np.zeros(np.shape(analytic))
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)),
                       max(1e-3 * largest, zero_tol))
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


def rounding_noise(f_value: float, h: float) -> float:
    """How far rounding in f (float64) can move a five-point slope taken with step h: the
    18/12 of the stencil's weights times an error of a few eps * |f| per sample."""
    return 16 * EPS64 * max(abs(f_value), 1.0) / h


# ------------------------------------------------------------------------- the check
def gradcheck(module, x: np.ndarray, grad_out: np.ndarray | None = None, *,
              loss=None, labels: np.ndarray | None = None, training: bool | None = None,
              h: float = 1e-3, max_entries: int | None = None, seed: int = 0,
              check_input: bool = True, perturb: bool = True) -> GradCheckResult:
    """Compare ``module``'s backward with central differences; returns a GradCheckResult.

    - module: any layer or network, or a ``FastNet`` running one. A float64 copy of it is
      checked: the module itself is left exactly as it was.
    - x: input array (any float dtype, or a list; the check runs in float64).
    - grad_out: upstream gradient, shape of the output; drawn at random if None.
    - loss, labels: check a network end to end: f = loss(module(x), labels).
    - training: mode to check in (True/False); None keeps the module's current mode.
    - h: finite-difference step (entries that fail are measured again at h/10 and h/100);
      max_entries: check at most this many random entries per array (None: all); seed: for
      grad_out, the entry sample and the random values of ``perturb``.
    - check_input: also check dL/dx (set False for a module whose backward skips it, e.g. a
      ``FastNet`` built with ``input_grad=False``).
    - perturb: give parameters and buffers whose entries are all equal random values first
      (recorded in ``result.notes``), so that a missing factor of gamma cannot hide.
    """
    rng = np.random.default_rng(seed)
    mode = bool(module.training) if training is None else training
    who = _name(module)
    notes = _dtype_notes(module, x, who, mode)
    checked = _copy_as(module, np.float64)
    checked.train(mode)
    if perturb:
        notes += _perturb_trivial(checked, np.random.default_rng([seed, 1]))
    x = np.array(x, dtype=np.float64)  # our own copy, nudged in place below

    generators = random_generators(checked)
    global_state = np.random.get_state()
    # a forward in training mode moves the BatchNorm averages; put them back every time
    buffers = [(m, name, getattr(m, name).copy())
               for m in checked.modules() for name in m._buffer_names]

    def forward() -> np.ndarray:
        for owner, name, value in buffers:
            object.__setattr__(owner, name, value.copy())
        restore(generators)  # the same random draws (dropout mask) in every forward
        np.random.set_state(global_state)
        return checked(x)

    try:
        if loss is None and grad_out is None:
            grad_out = rng.standard_normal(np.shape(forward()))
        if loss is None:
            grad_out = np.asarray(grad_out, dtype=np.float64)

        def f() -> float:
            out = forward()
            if loss is not None:
                return float(loss(out, labels))
            return float(np.sum(out * grad_out))

        def backward():
            try:
                return checked.backward(loss.backward() if loss is not None else grad_out)
            except ValueError as error:
                if "non-broadcastable output operand" not in str(error):
                    raise
                # what `p.grad += g` says when g has another shape than p.grad
                raise ValueError(
                    f"gradcheck: {who}.backward failed adding a gradient into a .grad: "
                    f"{error}. The gradient of a parameter has the parameter's shape: sum "
                    f"dL/dy * (what the parameter multiplies) over the axes it is shared "
                    f"across (the batch, and H, W for a per-channel one), with keepdims=True"
                ) from error

        # the analytic gradients: one forward and backward from zero gradients
        checked.zero_grad()
        f_value = f()
        if np.random.get_state()[1].tobytes() != global_state[1].tobytes():
            notes.append("the forward draws from NumPy's global random generator "
                         "(np.random.*): the check replays the same draws in every forward")
        grad_x = backward()
        analytic_params = [(name, p.grad.copy()) for name, p in checked.named_parameters()]
        _check_returned(who, x, grad_x, checked, check_input)

        result = GradCheckResult("training" if mode else "evaluation", notes=notes)
        again = f()
        if abs(again - f_value) > 1e-12 * max(abs(f_value), 1.0):
            result.nondeterministic = _nondeterministic_message(who, f_value, again)
            return result
        accumulation = _accumulation_errors(checked, lambda: (f(), backward()),
                                            analytic_params)

        arrays = [("input", x, np.array(grad_x))] if check_input else []
        params = dict(checked.named_parameters())
        arrays += [(name, params[name].data, grad) for name, grad in analytic_params]
        noise = rounding_noise(f_value, h / STEP_DIVISORS[-1])
        for name, values, analytic in arrays:
            if values.size == 0:
                continue
            check = _check_array(f, name, values, analytic, h, max_entries, noise, rng)
            error, index, added, expected = accumulation.get(name, (0.0, None, 0.0, 0.0))
            if error > CORRECT:
                if error > check.max_error:  # the table shows the entry of this error
                    check.max_error, check.worst_index = error, index
                    check.analytic, check.numeric = added, expected
                check.verdict = "wrong"
                check.reason = "; ".join(filter(None, [
                    f"backward does not add into .grad: a second backward added {added:+.6e} "
                    f"to {name}.grad{list(index)} where its gradient is {expected:+.6e}; "
                    f"write {name}.grad += ..., not = (the gradients of several uses of a "
                    f"parameter, or of several batches, add up)", check.reason]))
            result.arrays.append(check)
        return result
    finally:
        np.random.set_state(global_state)


def _check_array(f, name: str, values: np.ndarray, analytic: np.ndarray, h: float,
                 max_entries: int | None, noise: float, rng) -> ArrayCheck:
    """Compare one array's analytic gradient with finite differences, entry by entry."""
    flat_indices = np.arange(values.size)
    if max_entries is not None and values.size > max_entries:
        flat_indices = rng.choice(values.size, max_entries, replace=False)
    indices = [np.unravel_index(flat, values.shape) for flat in flat_indices]
    numeric = np.array([central_difference(f, values, index, h) for index in indices])
    analytic_sample = analytic.reshape(-1)[flat_indices]
    largest = float(np.abs(analytic).max(initial=0.0))

    def errors_of(a, n):
        return relative_errors(np.atleast_1d(a), np.atleast_1d(n), largest, noise)

    errors = errors_of(analytic_sample, numeric)
    judged = np.ones(len(indices), dtype=bool)
    kinks = finer = stable_failures = 0
    # worst first: if the largest failures hold at every step, the rest need no second look
    for i in np.argsort(-errors):
        if errors[i] <= CORRECT or stable_failures >= STABLE_FAILURES_TO_STOP:
            break
        finer_slopes = [central_difference(f, values, indices[i], h / divisor)
                        for divisor in STEP_DIVISORS]
        if errors_of(finer_slopes[-2], finer_slopes[-1])[0] > CORRECT:
            judged[i] = False  # the slope still moves with the step: a kink
            kinks += 1
            continue
        if errors_of(numeric[i], finer_slopes[-1])[0] > CORRECT:
            finer += 1  # h was too large for how f bends here; the smaller step settled it
        else:
            stable_failures += 1
        numeric[i] = finer_slopes[-1]
        errors[i] = errors_of(analytic_sample[i], numeric[i])[0]

    if judged.any():
        worst = int(np.flatnonzero(judged)[np.argmax(errors[judged])])
        max_error = float(errors[worst])
    else:
        worst, max_error = 0, 0.0
    check = ArrayCheck(
        name=name, max_error=max_error,
        worst_index=tuple(int(i) for i in indices[worst]),
        analytic=float(analytic_sample[worst]), numeric=float(numeric[worst]),
        checked=int(judged.sum()), total=values.size, kinks=kinks, finer_step=finer)
    check.verdict, check.reason = _verdict(check, largest)
    return check


def _verdict(check: ArrayCheck, largest: float) -> tuple[str, str]:
    """('correct' | 'suspicious' | 'wrong', why in words) for one array."""
    reasons = []
    if check.kinks:
        reasons.append(f"{_entries(check.kinks)} left out: the finite difference keeps "
                       f"changing with the step (a kink, e.g. ReLU at 0 or a tie in max "
                       f"pooling, closer than 2h/100)")
    if check.finer_step:
        reasons.append(f"{_entries(check.finer_step)} judged at a smaller step, which settled "
                       f"the finite difference (a kink or a sharp bend within 2h)")
    if check.checked == 0:
        return "suspicious", ("every entry checked sits at a kink: nothing could be judged; "
                              "try other inputs")
    if check.max_error <= CORRECT:
        return "correct", "; ".join(reasons)
    if check.max_error >= WRONG:
        sign = (" with the wrong sign" if check.analytic * check.numeric < 0
                and check.max_error > 1.5 else "")
        reasons.insert(0, f"analytic and numeric gradients disagree{sign} at "
                          f"{check.worst_index} (the same at every step: a missing or wrong term)")
        return "wrong", "; ".join(reasons)
    why = ("a small but real difference, the same at every step: a term of the derivative "
           "that is small for this input (try another input or batch size), eps placed "
           "differently in backward than in forward, or float32 arithmetic inside the layer")
    if abs(check.analytic) < 1e-2 * largest and abs(check.numeric) < 1e-2 * largest:
        why += ("; the worst entry's gradient is over 100x smaller than the array's largest, "
                "so rounding weighs more there")
    return "suspicious", "; ".join([why] + reasons)


# ----------------------------------------------------------- what backward returned
def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _check_returned(who: str, x: np.ndarray, grad_x, module, check_input: bool) -> None:
    """Refuse, naming the layer and the shapes, what backward gave that cannot be compared."""
    if check_input:
        if grad_x is None:
            fast = getattr(module, "input_grad", True) is False  # a FastNet that skips dL/dx
            raise ValueError(
                f"gradcheck: {who}.backward returned None; it must return dL/dx, an array of "
                f"the input's shape {x.shape}" + (
                    " (this FastNet skips dL/dx: build it with input_grad=True, or pass "
                    "check_input=False to check the parameters only)" if fast else ""))
        grad_x = np.asarray(grad_x)
        if grad_x.shape != x.shape:
            raise ValueError(
                f"gradcheck: {who}.backward returned an array of shape {grad_x.shape}; dL/dx "
                f"must have the input's shape {x.shape} (one gradient entry per input entry)")
        if grad_x.dtype != np.float64:
            raise TypeError(
                f"gradcheck: {who}.backward returned {grad_x.dtype} for a float64 input; a "
                f"layer keeps the dtype it is given (look for float32 arrays or constants in "
                f"forward or backward): in float32 the check cannot tell right from wrong")
    for name, param in module.named_parameters():
        grad = np.asarray(param.grad)
        if grad.shape != param.data.shape:
            raise ValueError(
                f"gradcheck: after {who}.backward, {name}.grad has shape {grad.shape}; it must "
                f"have its parameter's shape {param.data.shape}")
        if grad.dtype != np.float64:
            raise TypeError(
                f"gradcheck: after {who}.backward, {name}.grad is {grad.dtype}, its parameter "
                f"float64; add the gradient in the parameter's dtype")


def _accumulation_errors(module, forward_and_backward, analytic_params: list) -> dict:
    """{name: (worst relative error, where, what was added there, what should have been)}
    for what a second forward and backward added to each .grad.

    Backward passes add into .grad (a parameter used twice gets both gradients). One more
    pass without zero_grad must add the same gradient again; a backward that writes
    ``p.grad = ...`` adds nothing (relative error 1)."""
    forward_and_backward()
    params = dict(module.named_parameters())
    errors = {}
    for name, first in analytic_params:
        if first.size == 0:
            continue
        added = params[name].grad - first
        largest = float(np.abs(first).max(initial=0.0))
        entry_errors = relative_errors(added, first, largest)
        worst = np.unravel_index(int(np.argmax(entry_errors)), first.shape)
        errors[name] = (float(entry_errors[worst]), tuple(int(i) for i in worst),
                        float(added[worst]), float(first[worst]))
    return errors


def _nondeterministic_message(who: str, first: float, second: float) -> str:
    return (f"{who} is not deterministic: two forwards on the same input gave f = {first!r} "
            f"and {second!r}, so no finite difference means anything. It draws random "
            f"numbers, or keeps state that changes in forward. To check its backward, fix "
            f"the randomness: keep a generator in the layer, made once in __init__ "
            f"(self.rng = np.random.default_rng(seed), as npnet.Dropout does; gradcheck "
            f"replays such generators), or check it with a fixed mask")


# ------------------------------------------------------------------ the copy it checks
def _dtype_notes(module, x, who: str, mode: bool) -> list:
    """A note if ``module`` does not keep float32 (a check in float64 cannot see that): one
    forward of a float32 copy on x as float32."""
    probe = _copy_as(module, np.float32).train(mode)
    state = np.random.get_state()
    try:
        out = probe(np.asarray(x, dtype=np.float32))
    except Exception:  # noqa: BLE001 - the float64 check below shows what goes wrong
        return []
    finally:
        np.random.set_state(state)
    if getattr(out, "dtype", np.float32) == np.float32:
        return []
    return [f"{who} returns {out.dtype} for a float32 input: a layer must keep the dtype it "
            f"is given (a float32 network refuses this); the check below runs in float64, "
            f"where it does not show"]


def _copy_as(module, dtype):
    """A deep copy of ``module`` in ``dtype`` (a FastNet: a new FastNet over a copy of its
    network), without hooks and without what the last forward kept (neither is needed)."""
    from .fast import FastNet  # here: npnet.fast imports the layers, which import this

    net = module.net if isinstance(module, FastNet) else module
    memo = {}
    for part in net.modules():
        for hooks in (part._forward_hooks, part._backward_hooks):
            memo[id(hooks)] = []
        if part.cache is not None and not isinstance(part.cache, CacheState):
            memo[id(part.cache)] = None
    copied = copy.deepcopy(net, memo).astype(dtype)
    if isinstance(module, FastNet):
        return FastNet(copied, input_grad=module.input_grad, workers=module.workers)
    return copied


def _perturb_trivial(module, rng) -> list:
    """Give every float parameter and buffer whose entries are all equal random values
    (c * exp(0.3 z) for a constant c != 0, which keeps variances positive; 0.5 z for 0);
    return notes naming them."""
    changed = []
    params = {id(p): (name, p) for name, p in module.named_parameters()}
    for name, param in params.values():
        if _trivial(param.data):
            changed.append(f"{name} (all {_constant(param.data)})")
            param.data = _random_like(param.data, rng)
    for module_name, part in module.named_modules():
        for buffer_name in part._buffer_names:
            value = getattr(part, buffer_name)
            if _trivial(value):
                full = f"{module_name}.{buffer_name}" if module_name else buffer_name
                changed.append(f"{full} (all {_constant(value)})")
                object.__setattr__(part, buffer_name, _random_like(value, rng))
    if not changed:
        return []
    return [f"{', '.join(changed)}: given random values for the check, so that a factor of 1 "
            f"or a term of 0 cannot hide a mistake (perturb=False checks them as they are)"]


def _trivial(values: np.ndarray) -> bool:
    """All entries equal (a single entry only if it is 0 or 1): the values a missing factor
    or term hides behind."""
    values = np.asarray(values)
    if values.dtype.kind != "f" or values.size == 0:
        return False
    first = values.reshape(-1)[0]
    if values.size == 1:
        return first in (0.0, 1.0)
    return bool(np.all(values == first))


def _constant(values: np.ndarray) -> str:
    return f"{float(values.reshape(-1)[0]):g}"


def _random_like(values: np.ndarray, rng) -> np.ndarray:
    constant = float(values.reshape(-1)[0])
    z = rng.standard_normal(values.shape)
    new = constant * np.exp(0.3 * z) if constant != 0 else 0.5 * z
    return new.astype(values.dtype)


# ------------------------------------------------------------------- random generators
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
