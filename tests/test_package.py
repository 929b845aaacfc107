"""The package as a learner meets it: ``import npnet`` needs numpy alone, and the README's
attribute-style calls work after it."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_npnet_needs_numpy_alone():
    out = run_python("import sys, npnet; "
                     "print(sorted(m for m in ('tqdm', 'matplotlib', 'torch') if m in sys.modules))")
    assert out.strip() == "[]"


def test_the_readme_attribute_calls_work_after_import_npnet():
    out = run_python("import npnet; net = npnet.models.lenet(); "
                     "rec = npnet.instruments.Recorder(net); print(type(rec).__name__, "
                     "npnet.fast.FastNet.__name__, npnet.datasets.DataLoader.__name__)")
    assert out.split() == ["Recorder", "FastNet", "DataLoader"]


@pytest.mark.parametrize("module", ["summary", "container", "init", "conv", "linear", "fast",
                                    "train", "checkpoint", "instruments", "plots_inside"])
def test_each_module_imports_first_on_its_own(module):
    """Any module can be the first one a learner imports (``from npnet.summary import
    summary`` in a fresh notebook)."""
    run_python(f"import importlib; importlib.import_module('npnet.{module}')")
