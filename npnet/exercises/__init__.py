"""Exercises that diagnose: write a layer's backward yourself, and have it checked.

For each layer of LeNet-BN (Linear, Conv2d, AvgPool2d, MaxPool2d, Sigmoid, BatchNorm and the
softmax cross-entropy) there is a stub, a subclass of the library's layer whose ``backward``
you fill in (exercises/ in the repository; ``python -m npnet.exercises make DIR`` writes a
fresh copy). One command checks it against the library's own layer:

    python -m npnet.exercises check exercises/batch_norm.py    # one exercise
    python -m npnet.exercises check exercises/                 # all of them

and says "passed", "not written yet", or what is wrong: the arrays that differ, where and by
how much, the line that raised, and, when it is a mistake npnet knows (the batch-statistics
terms missing in BatchNorm, `=` instead of `+=` where windows overlap, a transposed weight
gradient, a missing 1/N, ...), its name and where the fix is. In a notebook:

    result = npnet.exercises.check("exercises/batch_norm.py")   # or check(MyBatchNorm)
    result.passed, result.diagnosis; print(result)

The solutions are the library's layers themselves. ``python -m npnet.exercises list`` shows
the known mistakes; ``python -m npnet.exercises selftest`` plants each one and reports how
many are diagnosed.
"""

from .catalogue import EXERCISES, Exercise, MaxPool2dKeepingWindows, WindowsCache
from .checker import Result, Results, check, check_class
from .mistakes import MISTAKES, Mistake
from .stubs import make_stubs, stub_text

__all__ = ["EXERCISES", "MISTAKES", "Exercise", "MaxPool2dKeepingWindows", "Mistake", "Result",
           "Results", "WindowsCache", "check", "check_class", "make_stubs", "selftest",
           "stub_text"]


def selftest() -> dict:
    """Plant every known mistake and check it: {exercise: (diagnosed, planted)}, where a
    mistake counts as diagnosed when the check names it and no other."""
    from .checker import planted
    counts = {}
    for name, exercise in EXERCISES.items():
        diagnosed = sum(check_class(planted(exercise, mistake), exercise).diagnosis
                        == mistake.key for mistake in exercise.mistakes)
        counts[name] = (diagnosed, len(exercise.mistakes))
    return counts
