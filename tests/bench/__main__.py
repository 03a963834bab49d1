"""``python -m tests.bench [GROUP...]``: run benchmark groups (see tests/bench/runner.py).

No group named: every group of ``GROUPS`` that exists. Figures merge into
``bench/results/latest.json``; the table shows metric, value, goal and whether it is met.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

from tests.bench.runner import GROUPS, RESULTS_DIR, compare_table, format_table, read_results, run_groups

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    p.add_argument("groups", nargs="*", metavar="GROUP", help=f"groups to run ({' '.join(GROUPS)})")
    p.add_argument(
        "--results", type=Path, default=RESULTS_DIR / "latest.json", help="flat JSON to merge into"
    )
    p.add_argument("--check", action="store_true", help="exit 1 when a goal is not met")
    p.add_argument("--save-baseline", action="store_true", help="copy the results to baseline.json")
    p.add_argument("--compare", action="store_true", help="compare the results with baseline.json")
    args = p.parse_args(argv)
    baseline = args.results.with_name("baseline.json")
    if args.save_baseline:
        if not args.results.exists():
            print(f"error: no {args.results} yet: run `just bench` first", file=sys.stderr)
            return 1
        shutil.copyfile(args.results, baseline)
        print(f"==> saved {args.results} as {baseline}")
        return 0
    if args.compare:
        if not baseline.exists():
            print(f"error: no {baseline} yet: run `just bench-save` first", file=sys.stderr)
            return 1
        print(compare_table(read_results(baseline), read_results(args.results)))
        return 0
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        print(f"error: unknown group(s) {' '.join(unknown)}; known: {' '.join(GROUPS)}", file=sys.stderr)
        return 2
    rows, failed = asyncio.run(run_groups(args.groups or GROUPS, args.results))
    if rows:
        print()
        print(format_table(rows))
        print(f"\nmerged into {args.results}")
    else:
        print("no figures: no group ran")
    if failed:
        print(f"failed groups: {' '.join(failed)}", file=sys.stderr)
        return 1
    if args.check and any(r.met is False for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
