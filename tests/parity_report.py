"""Print how far npnet is from PyTorch, layer by layer: ``python tests/parity_report.py``.

Runs the same comparisons as tests/test_torch_parity.py (which asserts on them) and prints,
for every layer and configuration, the worst error over all the arrays compared (output, input
gradient, parameter gradients, moving statistics):

- max abs: max |npnet - torch| over all entries;
- max rel: the same divided by max |torch| of that array (the error on the array's own scale),
  worst over the arrays;
- worst: the array where the relative error is largest.

Arrays that are zero up to rounding on both sides (the gradient of a bias followed by
BatchNorm in training mode) count in "max abs" but not in "max rel".

Everything is float64 except the last rows (float32 forward).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the test module, and npnet from this checkout

import test_torch_parity as parity  # noqa: E402


def main() -> None:
    rows = []
    for layer, case, triples in parity.all_cases():
        worst_abs, worst_rel, worst_label = 0.0, 0.0, ""
        for label, actual, expected in triples:
            abs_err, rel_err = parity.errors(actual, expected)
            worst_abs = max(worst_abs, abs_err)
            if rel_err >= worst_rel:  # False for nan: an array that is zero on both sides
                worst_rel, worst_label = rel_err, label
        rows.append((layer, case, len(triples), worst_abs, worst_rel, worst_label))

    header = ("layer", "case", "arrays", "max abs", "max rel", "worst")
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in (0, 1, 2)]
    line = f"{{:<{widths[0]}}}  {{:<{widths[1]}}}  {{:>{widths[2]}}}  {{:>8}}  {{:>8}}  {{}}"
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths), "-" * 8, "-" * 8, "-" * 5))
    for layer, case, count, abs_err, rel_err, label in rows:
        print(line.format(layer, case, count, f"{abs_err:.1e}", f"{rel_err:.1e}", label))


if __name__ == "__main__":
    main()
