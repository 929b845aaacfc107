"""The seed's shape trace, reproduced line for line."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the seed notebook prints for X = torch.rand(size=(1, 1, 224, 224)), copied from it
SEED_TRACE = """\
Conv2d output shape:\t torch.Size([1, 6, 220, 220])
BatchNorm output shape:\t torch.Size([1, 6, 220, 220])
Sigmoid output shape:\t torch.Size([1, 6, 220, 220])
AvgPool2d output shape:\t torch.Size([1, 6, 110, 110])
Conv2d output shape:\t torch.Size([1, 16, 106, 106])
BatchNorm output shape:\t torch.Size([1, 16, 106, 106])
Sigmoid output shape:\t torch.Size([1, 16, 106, 106])
AvgPool2d output shape:\t torch.Size([1, 16, 21, 21])
Flatten output shape:\t torch.Size([1, 7056])
Linear output shape:\t torch.Size([1, 120])
BatchNorm output shape:\t torch.Size([1, 120])
Sigmoid output shape:\t torch.Size([1, 120])
Linear output shape:\t torch.Size([1, 84])
BatchNorm output shape:\t torch.Size([1, 84])
Sigmoid output shape:\t torch.Size([1, 84])
Linear output shape:\t torch.Size([1, 10])
"""


def as_npnet_line(seed_line):
    """'... torch.Size([1, 6, 220, 220])' -> '... (1, 6, 220, 220)'"""
    head, size = seed_line.split("torch.Size(")
    numbers = size.strip("[])").split(", ")
    return head + "(" + ", ".join(numbers) + ("," if len(numbers) == 1 else "") + ")"


def test_shape_trace_matches_the_seed_line_for_line():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "shape_trace.py")],
                            capture_output=True, text=True, check=True, cwd=ROOT)
    expected = [as_npnet_line(line) for line in SEED_TRACE.splitlines()]
    assert result.stdout.splitlines() == expected
