"""README.md stays true: its commands match CI, and its example runs."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_command():
    main_job, tests = [block.strip() for block in code_blocks("bash")[:2]]
    assert main_job == "pip install -e . && python examples/train_lenet.py"
    assert tests == 'pip install -e ".[test]" && python -m pytest -q'
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == tests


def test_readme_example_runs_and_its_gradcheck_passes():
    namespace = {}
    example = code_blocks("python")[0].replace("print(npnet.gradcheck(", "result = (npnet.gradcheck(")
    exec(compile(example, "README example", "exec"), namespace)
    assert np.isfinite(namespace["loss"])
    assert namespace["result"].max_error < 1e-6
    assert namespace["net"].dtype == np.float32  # the check left the network as it was


def test_readme_fast_loop_runs_after_the_example_and_changes_the_weights():
    namespace = {}
    first, fast_loop = code_blocks("python")[:2]
    exec(compile(first.replace("print(npnet.gradcheck(", "(npnet.gradcheck("), "README example",
                 "exec"), namespace)
    before = namespace["net"].state_dict()
    exec(compile(fast_loop, "README fast loop", "exec"), namespace)
    assert np.isfinite(namespace["loss"])
    after = namespace["net"].state_dict()
    assert not np.array_equal(before["0.weight"], after["0.weight"])
