"""Exercises that diagnose (npnet/exercises, exercises/): the library's layers pass their own
exercises, every known mistake planted in a backward is named (and no other), the stubs say
"not written yet" and are what the generator writes, and the generic errors (None, a shape,
a dtype, `.grad =`, an exception ...) are reported with the layer and the shapes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import npnet
from npnet.exercises import EXERCISES, check, check_class, make_stubs, selftest, stub_text
from npnet.exercises.checker import planted

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "exercises"
ALL_MISTAKES = [(name, mistake.key) for name, exercise in EXERCISES.items()
                for mistake in exercise.mistakes]

# What a learner writes in place of the stub's `raise NotImplementedError(...)`, with the names
# the stub has already unpacked: a stub filled in with the right math must pass.
SOLUTIONS = {
    "linear": """
        grad_x = grad_out @ weight
        self.weight.grad += grad_out.T @ x
        if self.bias is not None:
            self.bias.grad += grad_out.sum(axis=0)
        return grad_x
    """,
    "conv2d": """
        self.weight.grad += np.tensordot(grad_out, cols, axes=([0, 2, 3], [0, 2, 3]))
        self.bias.grad += grad_out.sum(axis=(0, 2, 3))
        grad_cols = np.tensordot(grad_out, weight, axes=([1], [0])).transpose(0, 3, 1, 2, 4, 5)
        N, C, H, W = x_shape
        padded = (N, C, H + 2 * padding[0], W + 2 * padding[1])
        return col2im(grad_cols, padded, stride, padding)
    """,
    "avg_pool2d": """
        share = np.broadcast_to((grad_out / (kh * kw))[..., None, None], (*grad_out.shape, kh, kw))
        N, C, H, W = x_shape
        return col2im(share, (N, C, H + 2 * padding[0], W + 2 * padding[1]), stride, padding)
    """,
    "max_pool2d": """
        N, C, Ho, Wo = grad_out.shape
        winner = windows.reshape(N, C, Ho, Wo, kh * kw).argmax(axis=4)  # the first maximum
        is_winner = (winner[..., None] == np.arange(kh * kw)).reshape(N, C, Ho, Wo, kh, kw)
        N, C, H, W = x_shape
        ph, pw = self.padding
        return col2im(grad_out[..., None, None] * is_winner, (N, C, H + 2 * ph, W + 2 * pw),
                      self.stride, self.padding)
    """,
    "sigmoid": """
        return grad_out * y * (1 - y)
    """,
    "batch_norm": """
        g = grad_out * gamma
        self.gamma.grad += (grad_out * x_hat).sum(axis=axes, keepdims=True)
        self.beta.grad += grad_out.sum(axis=axes, keepdims=True)
        if not training:
            return inv_std * g
        return inv_std * (g - g.mean(axis=axes, keepdims=True)
                          - x_hat * (g * x_hat).mean(axis=axes, keepdims=True))
    """,
    "cross_entropy": """
        grad = np.exp(log_probs)
        grad[np.arange(N), labels] -= 1
        return grad / N
    """,
}


def filled_stub(name: str, body: str) -> str:
    """The stub of exercise ``name`` with ``body`` in place of its `raise NotImplementedError`."""
    exercise = EXERCISES[name]
    line = (f'        raise NotImplementedError("{exercise.class_name}.{exercise.method}: '
            f'not written yet")\n')
    text = stub_text(exercise)
    assert line in text
    return text.replace(line, textwrap.indent(textwrap.dedent(body).strip("\n"), " " * 8) + "\n")


def write_exercise(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(filled_stub(name, body))
    return path


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npnet.exercises", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------- the reference passes
@pytest.mark.parametrize("name", EXERCISES)
def test_the_library_layer_passes_its_own_exercise(name):
    result = check_class(EXERCISES[name].layer, name)
    assert result.passed, str(result)
    assert result.status == "passed" and "passed" in str(result)


@pytest.mark.parametrize("name", EXERCISES)
def test_a_stub_filled_in_with_the_right_math_passes(name, tmp_path):
    """The stub's given lines (cache, check of grad_out, the names unpacked) fit a solution."""
    result = check(write_exercise(tmp_path, name, SOLUTIONS[name]))
    assert result.passed, str(result)


# ----------------------------------------------------------------------- known mistakes
@pytest.mark.parametrize("name,key", ALL_MISTAKES, ids=[f"{n}-{k}" for n, k in ALL_MISTAKES])
def test_each_planted_mistake_gets_its_own_diagnosis(name, key):
    exercise = EXERCISES[name]
    mistake = next(m for m in exercise.mistakes if m.key == key)
    result = check_class(planted(exercise, mistake), exercise)
    assert not result.passed
    assert result.diagnosis == key, str(result)  # named, and no other mistake matched
    assert f"Looks like a known mistake: {mistake.title}" in " ".join(str(result).split())


def test_every_exercise_plants_mistakes_and_selftest_counts_them_all():
    counts = selftest()
    assert set(counts) == set(EXERCISES)
    assert all(planted >= 3 and diagnosed == planted for diagnosed, planted in counts.values())


def test_the_issues_examples_are_in_the_catalogue():
    keys = set(ALL_MISTAKES)
    for example in [("batch_norm", "frozen_batch_statistics"), ("conv2d", "col2im_assigns"),
                    ("avg_pool2d", "col2im_assigns"), ("linear", "transposed_weight_gradient"),
                    ("cross_entropy", "missing_1_over_n"), ("sigmoid", "slope_s"),
                    ("max_pool2d", "every_tied_maximum"), ("sigmoid", "slope_from_the_input"),
                    ("conv2d", "kernel_rows_and_columns_swapped")]:
        assert example in keys


def test_a_known_mistake_in_a_file_is_named_by_the_command(tmp_path):
    """examples/break_a_layer.py's BatchNorm mistake, written by a learner: exit 1, the
    mistake named, the arrays that are right and wrong told apart."""
    path = write_exercise(tmp_path, "batch_norm", """
        self.gamma.grad += (grad_out * x_hat).sum(axis=axes, keepdims=True)
        self.beta.grad += grad_out.sum(axis=axes, keepdims=True)
        return grad_out * gamma * inv_std
    """)
    done = run_cli("check", path)
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "FAILED on 3 of 4 configurations" in out
    assert "the batch-statistics terms are missing" in out
    assert "dL/dx: wrong values" in out and "correct: dL/dgamma, dL/dbeta" in out


# ----------------------------------------------------------------------------- the stubs
@pytest.mark.parametrize("name", EXERCISES)
def test_a_stub_reports_that_it_is_not_written_yet(name):
    result = check(STUBS / f"{name}.py")
    assert result.status == "not written yet" and not result.passed
    assert result.diagnosis == "not written yet"
    assert f"{EXERCISES[name].class_name}.backward: not written yet" in str(result)


@pytest.mark.parametrize("name", EXERCISES)
def test_the_committed_stubs_are_what_the_generator_writes(name):
    path = STUBS / f"{name}.py"
    assert path.read_text() == stub_text(EXERCISES[name]), (
        f"{path.relative_to(ROOT)} differs from what `python -m npnet.exercises make` writes. "
        f"If the library changed, run `python -m npnet.exercises make exercises/ --force`; "
        f"if you are solving the exercises, work in a copy of your own "
        f"(`python -m npnet.exercises make my-exercises/`, see exercises/README.md)")


def test_make_writes_every_stub_and_leaves_existing_work_alone(tmp_path):
    assert sorted(p.name for p in make_stubs(tmp_path)) == sorted(
        f"{name}.py" for name in EXERCISES)
    work = tmp_path / "sigmoid.py"
    work.write_text(filled_stub("sigmoid", SOLUTIONS["sigmoid"]))
    assert make_stubs(tmp_path) == []
    assert check(work).passed
    assert make_stubs(tmp_path, force=True) == [work]
    assert not check(work).passed


# ------------------------------------------------------------------------ generic errors
GENERIC = {
    "returned None": """
        self.weight.grad += grad_out.T @ x
        self.bias.grad += grad_out.sum(axis=0)
        grad_x = grad_out @ weight
    """,
    "wrong shape": """
        self.weight.grad += grad_out.T @ x
        self.bias.grad += grad_out.sum(axis=0)
        return (grad_out @ weight).T
    """,
    "wrong dtype": """
        self.weight.grad += grad_out.T @ x
        self.bias.grad += grad_out.sum(axis=0)
        return (grad_out @ weight).astype(np.float32)
    """,
    "assigned .grad": """
        self.weight.grad = grad_out.T @ x
        self.bias.grad += grad_out.sum(axis=0)
        return grad_out @ weight
    """,
    "returned a tuple": """
        return grad_out @ weight, grad_out.T @ x, grad_out.sum(axis=0)
    """,
    "raised": """
        self.weight.grad += grad_out.T @ x
        return grad_out @ weight[:2]
    """,
    "wrong values": """
        self.weight.grad += grad_out.T @ x
        self.bias.grad += grad_out.sum(axis=0)
        return 2 * grad_out @ weight
    """,
}
GENERIC_SAYS = {
    "returned None": "dL/dx: returned None (a missing `return`?)",
    "wrong shape": "dL/dx: shape (3, 4), expected (4, 3) (its transpose's shape",
    "wrong dtype": "dL/dx: dtype float32, expected float64",
    "assigned .grad": "dL/dweight: .grad holds this backward's gradient alone",
    "returned a tuple": "dL/dx: returned a tuple of 3",
    "raised": "backward raised ValueError at line",
    "wrong values": "Not a mistake npnet knows",
}


@pytest.mark.parametrize("kind", GENERIC)
def test_a_generic_error_is_reported_with_the_layer_and_the_shapes(kind, tmp_path):
    result = check(write_exercise(tmp_path, "linear", GENERIC[kind]))
    report = " ".join(str(result).split())
    assert not result.passed and result.status == "failed"
    assert result.diagnosis == kind, report
    assert GENERIC_SAYS[kind] in report
    assert "First failure: Linear(3, 5), x (4, 3) float64;" in report  # the layer, the shapes


def test_the_line_that_raised_is_quoted(tmp_path):
    result = check(write_exercise(tmp_path, "linear", GENERIC["raised"]))
    assert "return grad_out @ weight[:2]" in str(result)


def test_a_gradient_changed_in_place_is_reported(tmp_path):
    result = check(write_exercise(tmp_path, "sigmoid", """
        grad_out *= y * (1 - y)
        return grad_out
    """))
    assert result.diagnosis == "changed grad_out", str(result)
    assert "changed grad_out in place" in str(result)


def test_a_float64_result_of_a_float32_layer_is_reported(tmp_path):
    """np.zeros(shape) without dtype: right in float64, wrong dtype in the float32 case."""
    result = check(write_exercise(tmp_path, "cross_entropy", """
        one_hot = np.zeros(log_probs.shape)
        one_hot[np.arange(N), labels] = 1
        return (np.exp(log_probs) - one_hot) / N
    """))
    assert result.diagnosis == "wrong dtype", str(result)
    assert "FAILED on 1 of 3" in str(result) and "dtype float64, expected float32" in str(result)


def test_a_file_that_does_not_load_says_why(tmp_path):
    path = write_exercise(tmp_path, "linear", "return grad_out @@ weight")
    result = check(path)
    assert result.status == "could not load" and not result.passed
    assert "SyntaxError" in str(result)


def test_a_class_from_a_notebook_is_checked_by_its_base_class():
    class MySigmoid(npnet.Sigmoid):
        def backward(self, grad_out):
            y = self.require_cache()
            return self.check_grad(grad_out, y.shape) * y

    result = check(MySigmoid)
    assert result.exercise == "sigmoid" and result.diagnosis == "slope_s"
    assert repr(result) == "Result(sigmoid: failed, diagnosis='slope_s')"


def test_a_check_leaves_npnets_random_generator_alone():
    npnet.manual_seed(7)
    expected = npnet.rng.get_rng().random()
    npnet.manual_seed(7)
    check(npnet.Linear)
    assert npnet.rng.get_rng().random() == expected


# ------------------------------------------------------------------------- the command
def test_the_command_on_the_stubs_says_not_written_yet_and_fails():
    done = run_cli("check", "exercises/")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.count("not written yet") == len(EXERCISES)
    assert f"0 of {len(EXERCISES)} exercises passed" in done.stdout


def test_the_command_passes_a_solved_folder(tmp_path):
    for name, body in SOLUTIONS.items():
        write_exercise(tmp_path, name, body)
    done = run_cli("check", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(EXERCISES)} of {len(EXERCISES)} exercises passed" in done.stdout


def test_the_command_refuses_a_file_that_is_no_exercise(tmp_path):
    other = tmp_path / "notes.py"
    other.write_text("x = 1\n")
    done = run_cli("check", other)
    assert done.returncode == 1 and "is not an exercise" in done.stdout


def test_a_wrong_factor_and_a_gradient_not_added_are_pointed_out(tmp_path):
    doubled = check(write_exercise(tmp_path, "linear", GENERIC["wrong values"]))
    assert "yours is 2 times the expected everywhere" in " ".join(str(doubled).split())
    tuple_back = check(write_exercise(tmp_path, "linear", GENERIC["returned a tuple"]))
    assert "dL/dweight: nothing was added into .grad" in str(tuple_back)
