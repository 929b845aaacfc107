"""docs/write_a_layer.md stays true: its code runs, its outputs are what the code prints, and
the claims it makes about each layer and each planted bug hold.

How the page is read:

- every ```python block runs, in order, in one namespace (as a reader would, in one session);
- a block whose first line is ``# raises SomeError`` must raise that exception (and only such
  a block may raise);
- a ```text block right after a ```python block (blank lines between, nothing else) is that
  block's output: what it printed (warnings as ``Category: message``), or for a block that
  raises, ``SomeError: message``. It is compared with whitespace normalised (the page may
  wrap long lines) and every number replaced by ``#`` (errors of 1e-10 and timings differ
  from machine to machine; the claims on numbers are asserted below, one by one). A line
  ``[...]`` in the shown output stands for any text.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import npnet
from npnet.gradcheck import CORRECT

PAGE = Path(__file__).resolve().parent.parent / "docs" / "write_a_layer.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
RAISES = re.compile(r"#\s*raises\s+(\w+)")
NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")


def guide_blocks(text: str) -> list[dict]:
    """The python blocks of the page, in order: {"code", "line", "raises", "shown"}, where
    raises is the exception's name or None and shown the text block after it, or None."""
    matches = list(BLOCK.finditer(text))
    blocks = []
    for i, match in enumerate(matches):
        language, code = match.groups()
        if language != "python":
            continue
        shown = None
        if i + 1 < len(matches):
            after = matches[i + 1]
            if after.group(1) == "text" and not text[match.end():after.start()].strip():
                shown = after.group(2)
        first = code.lstrip().splitlines()[0] if code.strip() else ""
        raises = RAISES.fullmatch(first.strip())
        blocks.append({"code": code, "line": text.count("\n", 0, match.start()) + 2,
                       "raises": raises.group(1) if raises else None, "shown": shown})
    return blocks


def skeleton(text: str) -> str:
    """Whitespace normalised and every number replaced by '#'."""
    return NUMBER.sub("#", " ".join(text.split()))


def output_matches(shown: str, actual: str) -> bool:
    parts = [re.escape(skeleton(part)) for part in re.split(r"^\s*\[\.\.\.\]\s*$", shown,
                                                             flags=re.MULTILINE)]
    return re.fullmatch(r"\s*" + r".*?".join(parts) + r"\s*", skeleton(actual),
                        flags=re.DOTALL) is not None


def run_guide() -> tuple[dict, list[dict]]:
    """Run every python block of the page in one namespace; returns the namespace and, per
    block, what it printed and what it raised."""
    namespace = {"__name__": "write_a_layer"}
    results = []
    for block in guide_blocks(PAGE.read_text()):
        out = io.StringIO()

        def show(message, category, *args, **kwargs):
            print(f"{category.__name__}: {message}", file=out)

        error = None
        with warnings.catch_warnings(), contextlib.redirect_stdout(out):
            warnings.simplefilter("always")
            warnings.showwarning = show
            try:
                exec(compile(block["code"], f"{PAGE.name}, line {block['line']}", "exec"),
                     namespace)
            except Exception as raised:  # noqa: BLE001: compared with what the page says
                error = raised
                print(f"{type(raised).__name__}: {raised}", file=out)
        results.append({**block, "output": out.getvalue(), "error": error})
    return namespace, results


@pytest.fixture(scope="module")
def guide():
    return run_guide()


@pytest.fixture(scope="module")
def ns(guide):
    return guide[0]


# ------------------------------------------------------------------------- the page runs
def test_every_block_runs_and_raises_only_where_the_page_says(guide):
    _, results = guide
    assert len(results) >= 15
    for block in results:
        where = f"docs/write_a_layer.md, block at line {block['line']}"
        if block["raises"] is None:
            assert block["error"] is None, f"{where} raised {block['error']!r}"
        else:
            expected = getattr(builtins, block["raises"], None) or getattr(npnet,
                                                                           block["raises"])
            assert isinstance(block["error"], expected), \
                f"{where} should raise {block['raises']}; got {block['error']!r}"


def test_every_output_shown_is_what_the_code_prints(guide):
    _, results = guide
    shown = [block for block in results if block["shown"] is not None]
    assert len(shown) >= 14
    for block in shown:
        assert output_matches(block["shown"], block["output"]), (
            f"docs/write_a_layer.md, block at line {block['line']}: the page shows\n"
            f"{block['shown']}\nbut the code prints\n{block['output']}")


def test_every_block_that_raises_shows_its_message(guide):
    for block in guide[1]:
        if block["raises"]:
            assert block["shown"] is not None, f"block at line {block['line']}"
            assert block["shown"].strip().startswith(block["raises"] + ":")


def test_output_comparison_is_not_vacuous():
    assert output_matches("correct, worst 2.1e-10 at (0, 1)", "correct, worst 9.9e-11 at (3, 4)")
    assert not output_matches("correct, worst 2.1e-10", "wrong, worst 2.1e-10")
    assert output_matches("a\n[...]\nz 1", "a b c\nz 2")


# ------------------------------------------------------------------- what the page claims
def test_forgetting_super_init_is_named_on_the_page(guide):
    (block,) = [b for b in guide[1] if "Forgetful(3)(" in b["code"]]
    assert isinstance(block["error"], AttributeError)
    assert "Forgetful.__init__ must call super().__init__()" in str(block["error"])


def test_leaky_relu_is_correct_and_keeps_float32(ns):
    layer, x = ns["LeakyReLU"](), ns["x"]
    assert x.dtype == np.float32 and layer(x).dtype == np.float32
    y = layer(x)
    assert layer.backward(np.ones_like(y)).dtype == np.float32
    np.testing.assert_array_equal(y, np.where(x > 0, x, np.float32(0.01) * x))
    result = npnet.gradcheck(layer, x)
    assert result.verdict == "correct" and result.max_error < CORRECT


def test_leaky_relu_near_zero_leaves_one_entry_out_and_judges_one_at_a_smaller_step(ns):
    result = npnet.gradcheck(ns["LeakyReLU"](), ns["x_near_zero"])
    (check,) = result.arrays
    assert result.verdict == "correct"
    assert (check.kinks, check.finer_step) == (1, 1)
    assert check.checked == check.total - 1 == 19


def test_a_check_where_every_entry_sits_at_a_kink_is_suspicious(ns):
    result = npnet.gradcheck(ns["LeakyReLU"](), np.full((2, 3), 1e-8))
    assert result.verdict == "suspicious" and result.arrays[0].checked == 0


def test_scale_uses_the_forwards_scale_or_refuses(ns):
    layer = ns["Scale"](3)
    y = layer(ns["x4"])
    layer.scale.data = layer.scale.data * 2  # an optimizer step between forward and backward
    with pytest.raises(RuntimeError, match=r"Scale\(3\)\.scale changed"):
        layer.backward(np.ones_like(y))


def test_scale_is_correct_and_its_ones_are_perturbed(ns):
    result = npnet.gradcheck(ns["Scale"](3), ns["x4"])
    assert result.verdict == "correct"
    assert [a.name for a in result.arrays] == ["input", "scale"]
    assert any("scale (all 1)" in note for note in result.notes)


def test_a_forgotten_scale_hides_behind_ones_unless_perturbed(ns):
    make, x4 = ns["ForgetsTheScale"], ns["x4"]
    assert npnet.gradcheck(make(3), x4, perturb=False).verdict == "correct"
    result = npnet.gradcheck(make(3), x4)
    checks = {a.name: a for a in result.arrays}
    assert checks["input"].verdict == "wrong" and checks["scale"].verdict == "correct"
    assert 0.2 < checks["input"].max_error < 0.3  # "wrong by 25% at its worst entry"


def test_assigning_grad_is_wrong_with_error_one_and_says_write_plus_equals(ns):
    result = npnet.gradcheck(ns["AssignsTheGrad"](3), ns["x4"])
    check = {a.name: a for a in result.arrays}["scale"]
    assert check.verdict == "wrong" and check.max_error == pytest.approx(1.0)
    assert check.analytic == 0.0 and check.numeric != 0.0  # added nothing, where it should
    assert "write scale.grad += ..., not =" in check.reason


def test_wrong_axes_are_refused_by_numpy_or_by_gradcheck_or_found_wrong(guide, ns):
    blocks = {name: b for b in guide[1] for name in ("KeepsTheBatchAxis", "DropsKeepdims")
              if f"class {name}" in b["code"]}
    assert "(2,3,1,1)" in str(blocks["KeepsTheBatchAxis"]["error"])
    assert "scale.grad has shape (1, 3, 1, 3); it must have its parameter's shape " \
           "(1, 3, 1, 1)" in str(blocks["DropsKeepdims"]["error"])

    class SumsOverChannelsToo(ns["Scale"]):  # the page tells, without code, what this gives
        def backward(self, grad_out):
            x = self.require_cache()
            grad_out = self.check_grad(grad_out, x.shape)
            self.scale.grad += (grad_out * x).sum(axis=(0, 1, 2, 3), keepdims=True)
            return grad_out * self.scale.data

    result = npnet.gradcheck(SumsOverChannelsToo(3), ns["x4"])
    assert {a.name: a.verdict for a in result.arrays} == {"input": "correct", "scale": "wrong"}
    assert round(result.max_error, 2) == 1.46  # "wrong (error 1.46)"


def test_returning_nothing_is_refused_with_the_input_shape(guide):
    (block,) = [b for b in guide[1] if "class ReturnsNothing" in b["code"]]
    assert "ReturnsNothing(3).backward returned None; it must return dL/dx, an array of the " \
           "input's shape (2, 3, 4, 4)" in str(block["error"])


def test_dropout_with_its_own_generator_is_correct_and_a_fresh_one_is_not_deterministic(ns):
    layer = ns["MyDropout"](0.5)
    state = layer.rng.bit_generator.state
    assert npnet.gradcheck(layer, ns["x2"]).verdict == "correct"
    assert layer.rng.bit_generator.state == state  # the check drew nothing from it
    result = npnet.gradcheck(ns["FreshMaskEveryTime"](0.5), ns["x2"])
    assert result.verdict == "not deterministic" and not result.passed


def test_the_network_trained_with_the_layers_as_written(guide, ns):
    (block,) = [b for b in guide[1] if "npnet.fit(" in b["code"]]
    assert block["output"].count("FastPathWarning") == 2
    assert "Scale(4) (layer 1) has no fast kernel; running it as written" in block["output"]
    history = ns["history"]
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_acc[-1] > 0.5  # it learned: a backward that trains


def test_a_float64_leak_is_refused_by_name_and_noted_by_gradcheck(guide, ns):
    (block,) = [b for b in guide[1] if "leaky_net = " in b["code"]]
    assert str(block["error"]).startswith("LeakyReLU64(negative_slope=0.01) (layer 1) was "
                                          "given float32 and returned float64")
    x = ns["x"]
    assert ns["LeakyReLU64"]()(x).dtype == np.float64
    result = npnet.gradcheck(ns["LeakyReLU64"](), x)
    assert result.verdict == "correct"  # its gradient is right: float64 hides nothing there
    assert "returns float64 for a float32 input" in result.notes[0]


def test_the_residual_block_of_next_steps_works_with_the_page_layers(ns):
    block = npnet.Residual(npnet.Sequential(ns["Scale"](3), ns["LeakyReLU"]()))
    result = npnet.gradcheck(block, ns["x4"])
    assert result.verdict == "correct", str(result)


# --------------------------------------------------- a layer that forgot super().__init__()
class ForgotWithAParameter(npnet.Module):
    def __init__(self):
        self.scale = npnet.Parameter(np.ones(3))  # no super().__init__()

    def forward(self, x):
        self.cache = x
        return x * self.scale.data


class ForgotWithoutParameters(npnet.Module):
    def __init__(self, slope=0.1):
        self.slope = slope  # no super().__init__()

    def forward(self, x):
        self.cache = x
        return x * self.slope


def super_init_message(cls) -> str:
    return rf"{cls.__name__}.__init__ must call super\(\)\.__init__\(\)"


@pytest.mark.parametrize("cls", [ForgotWithAParameter, ForgotWithoutParameters])
def test_forgetting_super_init_is_named_when_training_is_read(cls):
    with pytest.raises(AttributeError, match=super_init_message(cls)):
        cls().training


@pytest.mark.parametrize("cls", [ForgotWithAParameter, ForgotWithoutParameters])
def test_forgetting_super_init_is_named_when_the_layer_is_called(cls):
    with pytest.raises(AttributeError) as raised:
        cls()(np.ones((2, 3)))
    assert re.search(super_init_message(cls), str(raised.value)), str(raised.value)
