"""`crbench check`: compare a run's aggregate metrics with a baseline file; exit 1 on a
regression, a missing method / L or a changed sample count.

``--write`` (re)creates the baseline from the results instead (after an intended change);
``--tolerance METRIC=VALUE`` sets per-metric absolute tolerances stored in the new baseline.
The file format is documented in :mod:`crbench.check`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="compare aggregate metrics with a baseline (exit 1 on regression)",
        description="Compare the mean metrics per method and L of a run with a baseline file "
                    "(per-metric absolute tolerances); exit 1 naming each regression. "
                    "--write (re)creates the baseline from the results.")
    p.add_argument("--results", type=Path, nargs="+", required=True, metavar="DIR",
                   help="run directory of `crbench run` (several or a folder of runs/shards "
                        "are merged)")
    p.add_argument("--baseline", type=Path, required=True, metavar="FILE",
                   help="baseline JSON, e.g. results/baseline/ci.json")
    p.add_argument("--write", action="store_true",
                   help="write the baseline from the results instead of checking")
    p.add_argument("--tolerance", action="append", default=[], metavar="METRIC=VALUE",
                   help="with --write: absolute tolerance of one metric (repeatable)")
    p.set_defaults(func=run)


def _parse_tolerances(items: list[str]) -> dict[str, float]:
    from ..errors import UsageError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UsageError(f"--tolerance: {item!r} is not METRIC=VALUE with a number, "
                             "e.g. psnr=0.05")
    return out


def run(args: argparse.Namespace) -> int:
    from ..check import check_results, write_baseline
    from ..errors import RegressionError, UsageError

    tolerances = _parse_tolerances(args.tolerance)
    if args.baseline.is_dir():
        raise UsageError(f"--baseline: {args.baseline} is a directory; expected a baseline "
                         "JSON file, e.g. results/baseline/ci.json")
    if args.write:
        path = write_baseline(args.results, args.baseline, tolerances)
        print(f"baseline written: {path}")
        return 0
    if tolerances:
        raise UsageError("--tolerance: only used with --write (tolerances live in the "
                         "baseline file)")
    report = check_results(args.results, args.baseline)
    if report.checked == 0:
        raise UsageError(f"--baseline: {args.baseline} has no method/L in common with the "
                         f"results (results: {', '.join(report.unchecked) or 'none'}), so "
                         "nothing was compared; pass the baseline of these methods, or "
                         "write one with --write")
    print(report.summary())
    if not report.ok:
        raise RegressionError("\n".join(report.failures()))
    return 0
