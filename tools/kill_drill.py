"""Fault drill for examples/train_lenet.py: kill -9 it at random moments, again and again, and
check that the run's folder never holds a damaged file and that the next run continues.

    python tools/kill_drill.py               # 20 kills, about a minute
    python tools/kill_drill.py --kills 100 --seed 3

Each round starts (or resumes) a small run on the MNIST sample in one folder, kills it with
SIGKILL after a random delay (while it imports, loads, trains, or saves a checkpoint or a
plot), and then checks:

- checkpoint.npz, if there, loads into a LeNet-BN with its optimizer (load_checkpoint);
- history.json, if there, is valid JSON with one value per epoch in every list;
- learning_curves.png and predictions.png, if there, are whole PNG files (they end with the
  IEND chunk);

and the next round, started with --resume, must not fail: it takes over the lock of the
killed run and deletes its temporary files. At the end one uninterrupted run finishes the
training; the folder then holds exactly the four files. Not part of the test suite (slow);
exit code 1 and a message on the first problem.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "train_lenet.py"
sys.path.insert(0, str(ROOT))

import npnet  # noqa: E402
from npnet.checkpoint import load_checkpoint  # noqa: E402
from npnet.models import lenet  # noqa: E402

PNG_END = b"IEND\xaeB`\x82"
RUN = ["--dataset", "sample", "--limit", "512", "--batch-size", "128", "--no-progress"]


def check_folder(out: Path) -> list[str]:
    """What is wrong with the files in out (empty list: nothing)."""
    problems = []
    checkpoint = out / "checkpoint.npz"
    if checkpoint.exists():
        model = lenet(batch_norm=True)
        try:
            load_checkpoint(checkpoint, model, npnet.SGD(model.parameters(), lr=1.0))
        except Exception as error:  # noqa: BLE001 - any failure is a finding
            problems.append(f"{checkpoint}: {type(error).__name__}: {error}")
    history = out / "history.json"
    if history.exists():
        try:
            lengths = {len(v) for v in json.loads(history.read_text()).values()}
            if len(lengths) > 1:
                problems.append(f"{history}: lists of different lengths {lengths}")
        except ValueError as error:
            problems.append(f"{history}: not JSON ({error})")
    for name in ("learning_curves.png", "predictions.png"):
        picture = out / name
        if picture.exists() and not picture.read_bytes().endswith(PNG_END):
            problems.append(f"{picture}: a truncated PNG ({picture.stat().st_size} bytes)")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=4.0,
                        help="kill after up to this many seconds (default: %(default)s)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        out = folder / "run"
        env = dict(os.environ, NPNET_DATA=str(folder / "data"), HOME=str(folder),
                   XDG_CACHE_HOME=str(folder / "cache"), MPLBACKEND="Agg")
        epochs = 1
        for kill in range(1, args.kills + 1):
            resume = ["--resume"] if (out / "checkpoint.npz").exists() else []
            epochs += 1
            process = subprocess.Popen(
                [sys.executable, str(SCRIPT), *RUN, "--epochs", str(epochs), "--out", str(out),
                 *resume], cwd=folder, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            delay = rng.uniform(0.2, args.max_delay)
            time.sleep(delay)
            finished = process.poll() is not None
            if not finished:
                process.send_signal(signal.SIGKILL)
            stdout, stderr = process.communicate()
            if finished and process.returncode != 0:
                sys.exit(f"round {kill}: the run failed by itself (exit code "
                         f"{process.returncode}):\n{stdout}{stderr}")
            problems = check_folder(out)
            left = sorted(p.name for p in out.iterdir()) if out.exists() else []
            print(f"round {kill}: {'finished' if finished else f'killed after {delay:.1f} s'}; "
                  f"{', '.join(left) or 'no files'}")
            if problems:
                sys.exit("FOUND:\n  " + "\n  ".join(problems))
        # one last, uninterrupted run: it must take over and clean up everything
        resume = ["--resume"] if (out / "checkpoint.npz").exists() else []
        result = subprocess.run([sys.executable, str(SCRIPT), *RUN, "--epochs",
                                 str(epochs + 1), "--out", str(out), *resume], cwd=folder,
                                env=env, capture_output=True, text=True)
        left = sorted(p.name for p in out.iterdir())
        expected = ["checkpoint.npz", "history.json", "learning_curves.png", "predictions.png"]
        if result.returncode != 0 or left != expected or check_folder(out):
            sys.exit(f"the final run: exit code {result.returncode}, files {left}, problems "
                     f"{check_folder(out)}\n{result.stdout}{result.stderr}")
        history = json.loads((out / "history.json").read_text())
        print(f"all {args.kills} kills survived; the final run trained to epoch "
              f"{len(history['train_loss'])} and left {', '.join(left)}")


if __name__ == "__main__":
    main()
