"""The stubs: one file per exercise, generated from the library.

A stub is the layer's class as a subclass of the library's, with the ``backward`` to write:
its first lines (taking the cache, checking grad_out) are copied from the library's own
``backward``, its docstring and the file's come from the library's docstrings (the math and
the shapes), and its body ends in ``raise NotImplementedError``. Where the library changes,
``python -m npnet.exercises make exercises/ --force`` writes them again, and
tests/test_exercises.py fails until it has.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

from .catalogue import EXERCISES, Exercise

def formula_lines(exercise: Exercise) -> list[str]:
    """The lines of the layer module's docstring that hold the math, as the catalogue picks
    them: (the text a block's first line contains, how many lines)."""
    lines = exercise.module.__doc__.splitlines()
    picked = []
    for first, count in exercise.formulas:
        start = next((i for i, line in enumerate(lines) if first in line), None)
        if start is None:
            raise ValueError(f"{exercise.module.__name__}'s docstring no longer has a line "
                             f"with {first!r}: update npnet/exercises/catalogue.py")
        if picked:
            picked.append("")
        picked += textwrap.dedent("\n".join(lines[start:start + count])).splitlines()
    return ["    " + line if line else "" for line in picked]


def given_lines(exercise: Exercise, method) -> list[str]:
    """The library method's source: its ``def`` line, and its body up to the line that
    contains ``exercise.given_until`` (the bookkeeping, not the math)."""
    source = textwrap.dedent(inspect.getsource(method)).splitlines()
    end = next((i for i, line in enumerate(source) if exercise.given_until in line), None)
    if end is None:
        raise ValueError(f"{method.__qualname__} no longer has a line with "
                         f"{exercise.given_until!r}: update npnet/exercises/catalogue.py")
    return source[:end + 1]


def library_file(exercise: Exercise) -> str:
    return f"npnet/{Path(exercise.module.__file__).name}"


def solution_name(exercise: Exercise) -> str:
    if exercise.function is not None:
        return f"{library_file(exercise)}: {exercise.function.__name__}"
    return f"{library_file(exercise)}: {exercise.class_name}.{exercise.method}"


def stub_text(exercise: Exercise) -> str:
    """The stub file of ``exercise``, as ``make`` writes it."""
    name = exercise.class_name
    library_method = getattr(exercise.layer, exercise.method)
    given = given_lines(exercise, library_method)
    doc = exercise.doc
    if exercise.function is not None:
        function = exercise.function
        doc += (f"\n\nThe library computes the same with {function.__module__}."
                f"{function.__name__}:\n{inspect.cleandoc(function.__doc__)}")
    method = [given[0], textwrap.indent(f'"""{doc}"""', "    "), *given[1:]]
    method += ["    " + line for line in exercise.unpack]
    method += ["    # Your code here.", *("    # " + line for line in exercise.todo)]
    method += [f'    raise NotImplementedError("{name}.{exercise.method}: not written yet")']

    forward = []
    if exercise.base is not None:  # a forward the exercise gives (it keeps other things)
        forward = ["", *textwrap.dedent(inspect.getsource(exercise.base.forward)).splitlines()]
        class_doc = inspect.cleandoc(exercise.base.__doc__)
        class_doc += (f"\n\nThe forward below is given (it is {exercise.base.__module__}."
                      f"{exercise.base.__name__}.forward);\nthe backward is yours.")
    else:
        class_doc = (f"npnet.{name} with a {exercise.method} of your own (the forward, the "
                     f"parameters\nand the checks are the library's).")

    imports = ["import numpy as np", "", "import npnet", *exercise.imports]
    header = f'''"""Exercise: the backward pass of {name}.

Write ``{name}.{exercise.method}`` below, then check it against npnet's own layer:

    python -m npnet.exercises check exercises/{exercise.file_name}   # or this file's path

The checker runs it on a few cases chosen so that mistakes cannot hide, says what differs,
and names the mistake when it is one it knows.

The math, from {library_file(exercise)} (derived in docs/backprop.md, "{exercise.section}"):

{chr(10).join(formula_lines(exercise))}

The solution is the library's own code, {solution_name(exercise)}:
look at it when you are done, or stuck. (This file was generated from the library by
``python -m npnet.exercises make``.)
"""
'''
    lines = [header, *imports, "", "",
             f"class {name}(npnet.{name}):",
             textwrap.indent(f'"""{class_doc}"""', "    "),
             *(textwrap.indent(line, "    ") for line in [*forward, "", *method])]
    return "\n".join(lines).rstrip() + "\n"


def make_stubs(folder, force: bool = False) -> list[Path]:
    """Write every exercise's stub into ``folder`` (created if missing); returns the files
    written. An existing file is left alone (it may hold your work) unless ``force``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for exercise in EXERCISES.values():
        path = folder / exercise.file_name
        text = stub_text(exercise)
        if path.exists() and (not force or path.read_text() == text):
            continue
        path.write_text(text)
        written.append(path)
    return written
