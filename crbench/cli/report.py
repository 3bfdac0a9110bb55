"""`crbench report`: Tables 1-4 (Markdown, CSV or LaTeX), Figures 3-4 and the coverage figures
of a run.

Without ``--results`` the most recent run directory under ``results/`` that holds rows is
used (the one whose manifest or row files were written last; ``results/baseline`` is ignored;
newer run directories without rows are named on stderr and skipped). Files go to
``<results>/report/`` unless ``--out`` says otherwise; the tables are also printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="result tables (Markdown/CSV/LaTeX) and figures of a run",
        description="Tables 1 (all methods at one L), 2 (methods x L), 3 (--by-coverage) and "
                    "4 (ablation pairs) from the per-sample rows of a run; --figures draws "
                    "Figures 3 (example panels) and 4 (metric histograms) and the coverage "
                    "figures (samples per Table 3 coverage bin, metrics by coverage bin).")
    p.add_argument("--results", type=Path, nargs="+", default=None, metavar="DIR",
                   help="run directory (several, or a folder of runs/shards, are merged); "
                        "default: the most recent run under results/")
    p.add_argument("--by-coverage", action="store_true",
                   help="add Table 3: 10 %% bins of input cloud coverage x L")
    p.add_argument("--format", default="md", choices=("md", "csv", "tex"),
                   help="table format (default md)")
    p.add_argument("--figures", action="store_true",
                   help="draw Figures 3 and 4 and the coverage figures (PNG + PDF)")
    p.add_argument("--ci", action="store_true", help="show bootstrap 95 %% intervals")
    p.add_argument("--L", type=int, default=None, metavar="N",
                   help="L of Table 1 and Figure 3 (default: the smallest L present)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output directory (default <results>/report)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import build_report

    result = build_report(args.results, by_coverage=args.by_coverage, fmt=args.format,
                          ci=args.ci, L=args.L, out=args.out, figures=args.figures,
                          progress=not args.no_progress)
    for run in result.passed_over:
        print(f"crbench report: skipped {run} (no rows)", file=sys.stderr)
    print(result.text())
    print(f"tables written to {result.out_dir}: "
          + ", ".join(p.name for p in result.files))
    if args.figures:
        for msg in result.messages:
            print(f"figures: {msg}")
        print(f"figures written to {result.out_dir / 'figures'}: "
              + (", ".join(p.name for p in result.figures) or "none"))
    return 0
