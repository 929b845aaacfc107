"""``python -m npnet.exercises``: check, make, list, selftest (see __init__.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXERCISES, check, make_stubs, selftest, stub_text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m npnet.exercises",
        description="Write a layer's backward yourself; check it against npnet's own layer.")
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="check exercise files, or a folder of them")
    checking.add_argument("paths", nargs="+", help="e.g. exercises/ or exercises/linear.py")
    making = commands.add_parser("make", help="write the stubs into a folder")
    making.add_argument("folder", help="e.g. my-exercises/")
    making.add_argument("--force", action="store_true",
                        help="overwrite files that exist (they may hold your work)")
    commands.add_parser("list", help="the exercises and the mistakes each one diagnoses")
    commands.add_parser("selftest", help="plant every known mistake; count the diagnosed")
    args = parser.parse_args(argv)

    if args.command == "make":
        written = make_stubs(args.folder, force=args.force)
        for path in written:
            print(f"wrote {path}")
        folder = Path(args.folder)
        for exercise in EXERCISES.values():
            path = folder / exercise.file_name
            if path not in written:
                same = path.read_text() == stub_text(exercise)
                print(f"{path}: " + ("up to date" if same else
                                     "already there, left alone (it may hold your work; "
                                     "--force overwrites it)"))
        return 0
    if args.command == "list":
        for name, exercise in EXERCISES.items():
            print(f"{name}: {exercise.class_name}.{exercise.method}, "
                  f"{len(exercise.configs)} configurations")
            for mistake in exercise.mistakes:
                print(f"    {mistake.key}: {mistake.title}")
        return 0
    if args.command == "selftest":
        counts = selftest()
        print("exercise: mistakes diagnosed / mistakes planted")
        for name, (diagnosed, planted) in counts.items():
            print(f"  {name}: {diagnosed} / {planted}")
        return 0 if all(d == p for d, p in counts.values()) else 1
    results = []
    for path in args.paths:
        try:
            found = check(path)
        except (FileNotFoundError, KeyError) as error:
            print(error.args[0] if error.args else error)
            return 2
        results += found if isinstance(found, list) else [found]
    print("\n\n".join(str(result) for result in results))
    passed = sum(result.passed for result in results)
    if len(results) > 1:
        print(f"\n{passed} of {len(results)} exercises passed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
