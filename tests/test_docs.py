"""docs/backprop.md stays true: every test and file it points at exists.

Each section ends with "In code" (files and functions) and "Tests" (``tests/file.py::name``,
or ``::name`` for another test of the file named just before). A test renamed or moved without
the page following would leave a reader looking for a check that is not there.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "backprop.md").read_text()


def referenced_tests() -> list[tuple[str, str]]:
    """(test file, test name) for every ``tests/x.py::name`` and ``::name`` on the page."""
    found, current = [], None
    for match in re.finditer(r"`(tests/[\w/]+\.py)?::(\w+)(?:\[[^\]`]*\])?`|`(tests/[\w/]+\.py)`",
                             PAGE):
        path, name, bare_path = match.groups()
        if bare_path:
            current = bare_path
            continue
        current = path or current
        found.append((current, name))
    return found


def test_every_test_the_page_names_exists():
    references = referenced_tests()
    assert len(references) > 30
    missing = [f"{path}::{name}" for path, name in references
               if path is None or not (ROOT / path).exists()
               or not re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.MULTILINE)]
    assert not missing, f"docs/backprop.md names tests that do not exist: {missing}"


def test_every_file_the_page_names_exists():
    paths = set(re.findall(r"`((?:npnet|examples|benchmarks|tests)/[\w/]+\.py)", PAGE))
    assert len(paths) > 10
    missing = sorted(path for path in paths if not (ROOT / path).exists())
    assert not missing, f"docs/backprop.md names files that do not exist: {missing}"
