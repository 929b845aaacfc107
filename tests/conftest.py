"""Shared test settings.

Hypothesis explores new random configurations on every local run; in CI (the CI environment
variable is set) it draws the same ones every time, so a submission's result does not depend
on luck.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
