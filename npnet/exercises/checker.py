"""Check a learner's backward against the library's, and name the mistake when it is known.

For each configuration of the exercise, the learner's layer and the library's are built with
the same parameters, run forward on the same input and backward on the same upstream
gradient, with every ``.grad`` filled beforehand with the same random values (so that a
backward that assigns ``.grad = ...`` instead of adding ``+=`` shows). Then:

1. the learner's backward raises ``NotImplementedError``: not written yet;
2. every output equals the library's (to rounding): passed;
3. otherwise each known mistake of the exercise is run the same way; one whose outputs (or
   error) equal the learner's on every configuration is the diagnosis;
4. otherwise the report says what is wrong in the first configuration that fails: an error
   (and the learner's line that raised it), None, a tuple, a shape, a dtype, ``.grad =``,
   ``grad_out`` changed in place, or which arrays differ, where and by how much.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import textwrap
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import rng as npnet_rng
from .catalogue import EXERCISES, Config, Exercise, find_exercise
from .mistakes import Mistake

# Equal "to rounding", relative to the largest |expected| of the array: an equivalent
# formula computed in another order agrees to ~1e-15 in float64, ~1e-7 in float32.
TOLERANCE = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-4}


# ------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """A configuration made concrete: the arrays every run of it uses."""

    config: Config
    x: np.ndarray
    labels: np.ndarray | None       # the loss only
    grad_out: np.ndarray | None     # None for the loss (its backward takes no gradient)
    state: dict                     # parameters and buffers, for load_state_dict
    prefill: dict                   # what each .grad holds before backward
    title: str                      # "Linear(3, 5), x (4, 3) float64"


@functools.lru_cache(maxsize=None)
def cases(name: str) -> tuple[Case, ...]:
    """The cases of exercise ``name``, made once from the configurations' seeds."""
    exercise = EXERCISES[name]
    return tuple(make_case(exercise, config) for config in exercise.configs)


def make_case(exercise: Exercise, config: Config) -> Case:
    rng = np.random.default_rng(1000 + config.seed)
    dtype = np.dtype(config.dtype)
    if config.ties:
        x = rng.integers(0, 3, config.x_shape).astype(dtype)
    else:
        x = (rng.standard_normal(config.x_shape) * config.logit_scale).astype(dtype)
    if exercise.name == "sigmoid":
        x = x * 2  # values where the slope differs from its value at 0
    reference = build(exercise.layer, exercise, config, state=None)
    state = {}
    if hasattr(reference, "state_dict"):
        for key, value in reference.state_dict().items():
            last = key.rsplit(".", 1)[-1]
            if last in ("gamma", "moving_var"):  # never ones: a missing factor would hide
                state[key] = rng.uniform(0.5, 2.0, value.shape).astype(dtype)
            else:
                state[key] = rng.standard_normal(value.shape).astype(dtype)
    reference = build(exercise.layer, exercise, config, state)
    labels, grad_out = None, None
    if exercise.layer.__name__ == "CrossEntropyLoss":
        N, K = config.x_shape
        labels = rng.permutation(np.arange(N) % K)  # several classes, some repeated
        title = f"{reference!r}, logits {config.x_shape} {dtype}, labels {labels.tolist()}"
    else:
        y = reference(x)
        grad_out = rng.standard_normal(y.shape).astype(dtype)  # random: never all ones
        mode = "" if not list(reference.named_buffers()) else (
            ", training mode" if config.training else ", evaluation mode")
        title = f"{reference.short_name()}{mode}, x {config.x_shape} {dtype}"
    prefill = {name: rng.standard_normal(param.shape).astype(dtype)
               for name, param in parameters(reference)}
    return Case(config, x, labels, grad_out, state, prefill, f"{title}; {config.why}")


def parameters(layer) -> list:
    named = getattr(layer, "named_parameters", None)
    return list(named()) if named else []


def build(cls: type, exercise: Exercise, config: Config, state: dict | None):
    """``cls`` built with the configuration's arguments, in its dtype and mode, with
    ``state`` loaded. npnet's random generator is left as it was (building a layer draws
    its initial weights from it): a check does not change a learner's later results."""
    generator = npnet_rng.get_rng()
    saved = generator.bit_generator.state
    try:
        layer = cls(*config.args, **config.kwargs)
    finally:
        generator.bit_generator.state = saved
    if hasattr(layer, "astype"):
        layer.astype(config.dtype)
        layer.train(config.training)
        if state:
            layer.load_state_dict(state)
    return layer


# --------------------------------------------------------------------------------- runs
@dataclass
class Outcome:
    """What one run of a layer on one case gave."""

    output: object = None      # the forward's result
    grad_in: object = None     # what backward returned
    grads: dict = field(default_factory=dict)  # name -> the parameter's .grad after backward
    error: BaseException | None = None
    stage: str = ""            # where the error came: "building", "forward", "backward"
    where: str = ""            # the line of the learner's file that raised, if any
    grad_out_changed: bool = False

    @property
    def not_written(self) -> bool:
        return isinstance(self.error, NotImplementedError)


def run(cls: type, exercise: Exercise, case: Case, path: str | None = None) -> Outcome:
    """Build ``cls`` for ``case``, fill its .grad, run forward and backward; never raises."""
    outcome = Outcome()
    try:
        outcome.stage = "building"
        layer = build(cls, exercise, case.config, case.state)
        for name, param in parameters(layer):
            param.grad = case.prefill[name].copy()
        outcome.stage = "forward"
        if case.labels is not None:
            outcome.output = layer(case.x.copy(), case.labels.copy())
            outcome.stage = "backward"
            outcome.grad_in = getattr(layer, exercise.method)()
        else:
            outcome.output = layer(case.x.copy())
            grad_out = case.grad_out.copy()
            outcome.stage = "backward"
            outcome.grad_in = getattr(layer, exercise.method)(grad_out)
            outcome.grad_out_changed = not np.array_equal(grad_out, case.grad_out)
        outcome.grads = {name: param.grad for name, param in parameters(layer)}
        outcome.stage = ""
    except Exception as error:  # noqa: BLE001 - the learner's code may raise anything
        outcome.error = error
        outcome.where = learner_line(error, path)
    return outcome


def learner_line(error: BaseException, path: str | None) -> str:
    """'line 42, `grad_x = ...`' for the deepest frame of the learner's file in the traceback."""
    if path is None:
        return ""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if Path(frame.filename).resolve() == Path(path).resolve()]
    if not frames:
        return ""
    return f"line {frames[-1].lineno}, `{(frames[-1].line or '').strip()}`"


def as_array(value):
    """value as a float ndarray, or None if it is not one (None, a tuple of arrays ...)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value
    if isinstance(value, (float, np.floating)):
        return np.asarray(value)
    return None


def close(actual, expected, dtype) -> bool:
    """Equal to rounding, same shape (dtypes may differ)."""
    actual, expected = as_array(actual), as_array(expected)
    if actual is None or expected is None:
        return actual is None and expected is None
    if actual.shape != expected.shape:
        return False
    tolerance = TOLERANCE[np.dtype(dtype)]
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    with np.errstate(invalid="ignore"):
        return bool(np.allclose(actual, expected, rtol=tolerance, atol=tolerance * scale))


def same_outcome(a: Outcome, b: Outcome, dtype) -> bool:
    """Two runs that gave the same: the same error, or the same arrays to rounding."""
    if a.error is not None or b.error is not None:
        return (a.error is not None and b.error is not None and type(a.error) is type(b.error)
                and " ".join(str(a.error).split()) == " ".join(str(b.error).split()))
    return (close(a.output, b.output, dtype) and close(a.grad_in, b.grad_in, dtype)
            and a.grads.keys() == b.grads.keys()
            and all(close(a.grads[k], b.grads[k], dtype) for k in a.grads))


def planted(exercise: Exercise, mistake: Mistake) -> type:
    """The exercise's layer with ``mistake`` planted in its backward (and forward)."""
    methods = {exercise.method: mistake.backward}
    if mistake.forward is not None:
        methods["forward"] = mistake.forward
    return type(exercise.class_name, (exercise.stub_base,), methods)


@functools.lru_cache(maxsize=None)
def reference_outcomes(name: str) -> tuple[Outcome, ...]:
    exercise = EXERCISES[name]
    return tuple(run(exercise.layer, exercise, case) for case in cases(name))


@functools.lru_cache(maxsize=None)
def mistake_outcomes(name: str, key: str) -> tuple[Outcome, ...]:
    exercise = EXERCISES[name]
    mistake = next(m for m in exercise.mistakes if m.key == key)
    return tuple(run(planted(exercise, mistake), exercise, case) for case in cases(name))


# ---------------------------------------------------------------------------- findings
def findings(exercise: Exercise, case: Case, mine: Outcome, expected: Outcome) -> list:
    """What is wrong in one run, as (kind, sentence) pairs; [] if it is right."""
    dtype = case.config.dtype
    if mine.error is not None:
        where = f" at {mine.where}" if mine.where else ""
        return [("raised", f"{mine.stage} raised {type(mine.error).__name__}{where}:\n"
                           f"  {' '.join(str(mine.error).split())}")]
    found = []
    if not close(mine.output, expected.output, dtype):
        found.append(("forward changed", "the forward's output differs from the library's "
                                         "(the exercise is the backward: keep its forward)"))
    if mine.grad_out_changed:
        found.append(("changed grad_out", "backward changed grad_out in place: the caller's "
                                          "array is overwritten (a Residual block passes the "
                                          "same one to both branches); compute into a new "
                                          "array"))
    found += compare(exercise.grad_in_name, mine.grad_in, expected.grad_in, dtype,
                     returned=True)
    for name, param in expected.grads.items():
        prefilled = case.prefill[name]
        got = mine.grads.get(name)
        if as_array(got) is not None and got.shape == param.shape and \
                np.array_equal(got, prefilled) and not close(got, param, dtype):
            found.append(("grad not added", f"dL/d{name}: nothing was added into .grad (it "
                                            f"holds what it held before backward)"))
        elif as_array(got) is not None and got.shape == param.shape and \
                close(got, param - prefilled, dtype) and not close(got, param, dtype):
            found.append(("assigned .grad", f"dL/d{name}: .grad holds this backward's "
                                            f"gradient alone: it was assigned (`.grad =`) "
                                            f"instead of added (`.grad +=`); backward adds into "
                                            f".grad, so that gradients accumulate until "
                                            f"zero_grad()"))
        else:
            found += compare(f"dL/d{name}", got, param, dtype, returned=False)
    return found


def compare(what: str, got, expected, dtype, returned: bool) -> list:
    """(kind, sentence) pairs saying how ``got`` differs from ``expected``; [] if equal."""
    holds = "returned" if returned else "in .grad:"
    if got is None:
        hint = " (a missing `return`?)" if returned else ""
        return [("returned None", f"{what}: {holds} None{hint}")]
    if isinstance(got, (tuple, list)):
        return [("returned a tuple", f"{what}: {holds} a {type(got).__name__} of {len(got)} "
                                     f"(backward returns dL/dx alone and adds each parameter's "
                                     f"gradient into its .grad)")]
    array = as_array(got)
    if array is None:
        return [("not an array", f"{what}: {holds} {type(got).__name__} "
                                 f"{np.asarray(got).dtype}, expected a float array")]
    if array.shape != expected.shape:
        transposed = (array.ndim >= 2 and array.shape[::-1] == expected.shape) or \
            (array.ndim == 4 and array.shape[:2] + array.shape[:1:-1] == expected.shape)
        note = " (its transpose's shape: a transposed product?)" if transposed else ""
        return [("wrong shape", f"{what}: shape {array.shape}, expected {expected.shape}{note}")]
    found = []
    if array.dtype != expected.dtype:
        found.append(("wrong dtype", f"{what}: dtype {array.dtype}, expected {expected.dtype} "
                                     f"(the input's dtype; np.zeros(shape) is float64 unless "
                                     f"given dtype=)"))
    if not close(array, expected, dtype):
        found.append(("wrong values", f"{what}: wrong values; {difference(array, expected)}"
                                      f"{proportion(array, expected, dtype)}"))
    return found


def difference(got: np.ndarray, expected: np.ndarray) -> str:
    """Where and by how much two arrays of one shape differ, in one line."""
    with np.errstate(invalid="ignore"):
        gap = np.abs(got.astype(np.float64) - expected)
    gap = np.where(np.isnan(gap), np.inf, gap)
    index = np.unravel_index(int(np.argmax(gap)), gap.shape) if gap.size else ()
    index = tuple(int(i) for i in index)
    scale = float(np.abs(expected).max(initial=0.0))
    wrong = int((gap > TOLERANCE[np.dtype(np.float32)] * max(scale, 1e-30)).sum())
    return (f"{wrong} of {gap.size} entries differ; the most at {index}: yours "
            f"{float(got[index]):.6g}, expected {float(expected[index]):.6g} "
            f"(largest |expected| {scale:.3g})")


def proportion(got: np.ndarray, expected: np.ndarray, dtype) -> str:
    """'; yours is -0.25 times the expected everywhere ...' when it is: a factor too many or
    too few (1/N, 1/(kh kw), a sign) is a common mistake and a clue; '' otherwise."""
    nonzero = np.abs(expected) > 1e-3 * max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    if not nonzero.any() or not np.isfinite(got).all():
        return ""
    factor = float(np.median(got[nonzero] / expected[nonzero]))
    if factor == 0 or not close(got, factor * expected, dtype):
        return ""
    return (f"; yours is {factor:.6g} times the expected everywhere (a factor too many or too "
            f"few?)")


# ------------------------------------------------------------------------------ results
STATUS_PASSED, STATUS_NOT_WRITTEN, STATUS_FAILED, STATUS_NOT_LOADED = (
    "passed", "not written yet", "failed", "could not load")


@dataclass
class Result:
    """The verdict on one exercise. ``passed``; ``status``; ``diagnosis``: the known
    mistake's key, or a generic kind ("raised", "wrong shape", ...), or None; ``mistake``:
    the known ``Mistake`` if one matched; ``str(result)``: the full report."""

    exercise: str
    target: str                 # the file, or the class, that was checked
    status: str
    diagnosis: str | None = None
    mistake: Mistake | None = None
    report: str = ""
    failed_cases: int = 0
    total_cases: int = 0

    @property
    def passed(self) -> bool:
        return self.status == STATUS_PASSED

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.report

    def __repr__(self) -> str:
        extra = f", diagnosis={self.diagnosis!r}" if self.diagnosis else ""
        return f"Result({self.exercise}: {self.status}{extra})"


class Results(list):
    """The verdicts on a folder of exercises: a list of ``Result`` with ``passed``."""

    @property
    def passed(self) -> bool:
        return bool(self) and all(result.passed for result in self)

    def __str__(self) -> str:
        return "\n\n".join(str(result) for result in self)


def check_class(cls: type, exercise=None, path: str | None = None) -> Result:
    """Check the layer class ``cls`` (a learner's subclass of the library's layer) on its
    exercise (found from its base class unless given)."""
    exercise = find_exercise(cls if exercise is None else exercise)
    target = path or f"{cls.__module__}.{cls.__qualname__}"
    header = f"{target}: {exercise.class_name}.{exercise.method}"
    mine = [run(cls, exercise, case, path) for case in cases(exercise.name)]
    expected = reference_outcomes(exercise.name)
    all_cases = cases(exercise.name)

    unwritten = next((o for o in mine if o.not_written), None)
    if unwritten is not None:
        return Result(exercise.name, target, STATUS_NOT_WRITTEN, "not written yet",
                      report=f"{header}: not written yet (it raises NotImplementedError). "
                             f"Write it, then check again.", total_cases=len(all_cases))

    judged = [findings(exercise, case, o, e) for case, o, e in zip(all_cases, mine, expected)]
    failing = [i for i, found in enumerate(judged) if found]
    if not failing:
        return Result(exercise.name, target, STATUS_PASSED,
                      report=f"{header}: passed ({len(all_cases)} configurations: "
                             f"{'; '.join(c.config.why for c in all_cases)})",
                      total_cases=len(all_cases))

    first = failing[0]
    lines = [f"{header}: FAILED on {len(failing)} of {len(all_cases)} configurations.",
             f"  First failure: {all_cases[first].title}"]
    for _, sentence in judged[first]:
        lines += [wrap(line, "    ") for line in sentence.splitlines()]
    correct = [name for name in [exercise.grad_in_name, *(f"dL/d{k}" for k in
                                                          expected[first].grads)]
               if not any(s.startswith(name + ":") for _, s in judged[first])]
    if correct and mine[first].error is None:
        lines.append(f"    correct: {', '.join(correct)}")

    matches = [mistake for mistake in exercise.mistakes
               if all(same_outcome(o, m, case.config.dtype) for case, o, m in
                      zip(all_cases, mine, mistake_outcomes(exercise.name, mistake.key)))]
    if len(matches) == 1:
        mistake = matches[0]
        lines += [wrap(f"Looks like a known mistake: {mistake.title}.", "  "),
                  wrap(f"Why it is wrong: {mistake.why}.", "    "),
                  wrap(f"Fix: {mistake.fix}.", "    ")]
        diagnosis = mistake.key
    else:
        diagnosis = judged[first][0][0]
        if diagnosis == "wrong values":
            lines.append(wrap(f"Not a mistake npnet knows. Compare your code with the formula "
                              f"in the docstring, and docs/backprop.md, section "
                              f"\"{exercise.section}\".", "  "))
        mistake = None
    return Result(exercise.name, target, STATUS_FAILED, diagnosis, mistake, "\n".join(lines),
                  len(failing), len(all_cases))


def wrap(text: str, indent: str) -> str:
    """One paragraph of the report, indented and wrapped at 96 columns."""
    return textwrap.fill(text, 96, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False, break_long_words=False)


def load_module(path: str):
    """Import the learner's file as a module of its own (a fresh one at every check)."""
    name = f"npnet_exercise_{Path(path).stem}_{abs(hash(str(Path(path).resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def exercise_for_file(path: Path, module) -> Exercise:
    """The exercise a file is: by its name (linear.py), else by the layer class it defines."""
    if path.stem in EXERCISES:
        return EXERCISES[path.stem]
    for exercise in EXERCISES.values():
        if isinstance(getattr(module, exercise.class_name, None), type):
            return exercise
    raise KeyError(f"{path} is not an exercise: name it after one ({', '.join(EXERCISES)}) "
                   f"or define one of the classes "
                   f"{', '.join(e.class_name for e in EXERCISES.values())}")


def check_file(path) -> Result:
    """Check the learner's file ``path`` (e.g. exercises/batch_norm.py)."""
    path = Path(path)
    shown = str(path)
    guess = EXERCISES.get(path.stem)
    try:
        module = load_module(str(path))
    except Exception as error:  # noqa: BLE001 - a syntax error, an import error ...
        lines = traceback.format_exception_only(type(error), error)
        return Result(guess.name if guess else path.stem, shown, STATUS_NOT_LOADED, "raised",
                      report=f"{shown}: could not load it:\n"
                             + "".join("    " + line for line in lines).rstrip())
    try:
        exercise = exercise_for_file(path, module)
    except KeyError as error:
        return Result(path.stem, shown, STATUS_NOT_LOADED, None, report=str(error.args[0]))
    cls = getattr(module, exercise.class_name, None)
    if not isinstance(cls, type):
        return Result(exercise.name, shown, STATUS_NOT_LOADED, None,
                      report=f"{shown}: defines no class {exercise.class_name}; the exercise "
                             f"is its {exercise.method} method")
    return check_class(cls, exercise, path=shown)


def check(target, exercise=None):
    """Check a learner's work: a file (a ``Result``), a folder (``Results``, one per exercise
    file in it), or a layer class (a ``Result``; ``exercise`` by name if its base class does
    not tell).

        >>> npnet.exercises.check("exercises/batch_norm.py").passed
    """
    if isinstance(target, type):
        return check_class(target, exercise)
    path = Path(target)
    if path.is_dir():
        files = [path / exercise.file_name for exercise in EXERCISES.values()
                 if (path / exercise.file_name).exists()]
        if not files:
            raise FileNotFoundError(f"{path} holds no exercise file "
                                    f"({', '.join(e.file_name for e in EXERCISES.values())})")
        return Results(check_file(file) for file in files)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    return check_file(path)
