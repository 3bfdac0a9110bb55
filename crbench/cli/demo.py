"""`crbench demo`: synth -> masks -> train (tiny presets) -> run -> report on a built-in
synthetic dataset; prints the tables and where the tables and figures are.

Default output directory: ``./crbench-demo`` (git-ignored). See :mod:`crbench.demo`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the whole pipeline on a small synthetic dataset (CPU, minutes)",
        description="Synthesize a small dataset, compute cloud masks, train the learned "
                    "methods briefly (tiny presets), evaluate every method at L = 3, 4, 5 and "
                    "write the report (tables and figures).")
    p.add_argument("--out", type=Path, default=Path("crbench-demo"), metavar="DIR",
                   help="output directory (default ./crbench-demo)")
    p.add_argument("--quick", action="store_true",
                   help="smaller smoke test: 4 ROIs, 2 patches, L = 3 only, 2 training "
                        "steps on 32 px crops")
    p.add_argument("--data", type=Path, default=None, metavar="ROOT",
                   help="use this existing dataset tree instead of synthesizing one")
    p.add_argument("--device", default=None, metavar="D",
                   help="torch device (default cuda if available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    summary = run_demo(args.out, quick=args.quick, device=args.device,
                       progress=not args.no_progress, data=args.data)
    print(summary.text())
    return 0
