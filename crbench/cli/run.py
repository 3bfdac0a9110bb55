"""`crbench run`: evaluate methods x L on a split and write per-sample rows to a run dir.

The default ``--out`` is ``results/run-<split>-<hash8>`` (hash of the data root, split,
region, mask convention, protocol, seed and checkpoints dir), so rerunning the same command
resumes where it stopped and `crbench report` (most recent run under results/) finds it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .dataset_arg import add_dataset_arg, resolve


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="evaluate methods x L on a split (resumable, shardable)",
        description="Evaluate each method at each L on a split of SEN12MS-CR-TS (or "
                    "SEN12MS-CR, L = 1); one row per "
                    "sample goes to <out>/rows/*.csv as it is computed. Rerunning the same "
                    "command resumes an interrupted run.")
    p.add_argument("--data", type=Path, required=True, metavar="ROOT", help="dataset root")
    add_dataset_arg(p)
    p.add_argument("--methods", required=True, metavar="A,B",
                   help="comma-separated method names (see `crbench methods`)")
    p.add_argument("--L", type=int, nargs="+", required=True, metavar="N", dest="L",
                   help="one or more sequence lengths, e.g. --L 3 4 5")
    p.add_argument("--split", default="test", help="train, val, test or all (default test)")
    p.add_argument("--region", default="all", help="region (default all)")
    p.add_argument("--checkpoints", type=Path, default=None, metavar="DIR",
                   help="trained checkpoints: DIR/<method>/L<L>/ or DIR/<method>/")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="run directory (default results/run-<split>-<hash of settings>)")
    p.add_argument("--shard", default="1/1", metavar="k/n",
                   help="evaluate the k-th of n disjoint slices (default 1/1)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="only the first N matching samples (after sharding)")
    p.add_argument("--mask-convention", default="paper", choices=("paper", "toolbox"),
                   help="cloudy/clear regions of nrmse_cloudy/clear (default paper)")
    p.add_argument("--protocol", default="toolbox", choices=("toolbox", "strict", "parity"),
                   help="toolbox: the target may be an input; strict: never; parity: "
                        "toolbox plus its blank-as-clear rule and exact mosaicing (default "
                        "toolbox; README Conventions)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="default 8")
    p.add_argument("--workers", type=int, default=0, metavar="W",
                   help="data-loading processes (default 0: in the main process)")
    p.add_argument("--device", default=None, metavar="D",
                   help="torch device (default cuda if available, else cpu)")
    p.add_argument("--save-predictions", action="store_true",
                   help="write predictions as GeoTIFF under <out>/predictions/")
    p.add_argument("--seed", type=int, default=0, help="seed for stochastic methods")
    p.add_argument("--steps", type=int, default=None, metavar="N", dest="sample_steps",
                   help="respaced sampling steps of diffusion methods (default: the "
                        "checkpoint's, 1000 as in the paper for the full preset)")
    p.add_argument("--samples", type=int, default=1, metavar="K",
                   help="draws per input for stochastic methods: rows hold the mean metric "
                        "over the K draws, rows/*.spread.csv their std; deterministic methods "
                        "run once (default 1)")
    p.add_argument("--allow-odd-values", action="store_true",
                   help="run even if sampled images have values implausible for the dataset "
                        "(S2 not L1C digital numbers, e.g. reflectance 0..1 or uint8; S1 not "
                        "in dB); without it such a tree is refused")
    p.add_argument("--min-dates", type=int, default=None, metavar="N",
                   help="partial trees: evaluate only patches with at least N dates (default "
                        "L + 1, the fewest the fixed sampler can use)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def check_data(data: Path, split: str, region: str, allow_odd_values: bool) -> None:
    """Before anything is written: ``--data`` is a tree whose split lists cleanly, and (unless
    ``allow_odd_values``) a sample of its images has plausible values
    (:func:`crbench.data.verify.sample_odd_values`: 8 S2 and 8 S1 images, not the tree).

    Raises:
        DatasetNotFoundError / DataError: naming ``--data`` or the file.
    """
    from ..data.index import check_root, scan_tree
    from ..data.verify import SAMPLED_FILES, sample_odd_values
    from ..errors import DataError

    records = scan_tree(check_root(data, flag="--data"), split, region)
    if allow_odd_values:
        return
    odd = sample_odd_values(records)
    if odd:
        path, why = odd[0]
        raise DataError(f"--data: {len(odd)} of {2 * SAMPLED_FILES} sampled images have "
                        f"implausible values, e.g. {path}: {why}; check the units "
                        f"(`crbench data verify {data}` checks every file) or pass "
                        "--allow-odd-values")


def _summary_table(run_dir: Path, methods: list[str], seq_lens: list[int]) -> str:
    from ..runner import read_rows

    rows = read_rows(run_dir)
    rows = rows[rows["method"].isin(methods) & rows["L"].isin(seq_lens)]
    if rows.empty:
        return "no rows"
    cols = ["psnr", "ssim", "nrmse_all", "nrmse_cloudy", "sam"]
    agg = rows.groupby(["method", "L"], sort=False)[cols].mean()
    agg.insert(0, "n", rows.groupby(["method", "L"], sort=False).size())
    order = [(m, L) for L in seq_lens for m in methods if (m, L) in agg.index]
    return agg.loc[order].to_string(float_format=lambda v: f"{v:.4f}")


def _no_s1_note(n: int) -> str:
    return f", {n} without S1 skipped (named in the manifest)" if n else ""


def _samples_note(asked: int, used: int) -> str:
    if used > 1:
        return f" (mean of {used} draws per input; spread in *.spread.csv)"
    if asked > 1:
        return f" (deterministic: ran once, --samples {asked} does not apply)"
    return ""


def run(args: argparse.Namespace) -> int:
    from ..runner import RunConfig
    from ..runner import run as run_all

    cfg = RunConfig(data=args.data, methods=args.methods, seq_lens=args.L, split=args.split,
                    region=args.region, checkpoints=args.checkpoints, out=args.out,
                    shard=args.shard, limit=args.limit, mask_convention=args.mask_convention,
                    protocol=args.protocol, batch_size=args.batch_size, workers=args.workers,
                    device=args.device, save_predictions=args.save_predictions,
                    seed=args.seed, progress=not args.no_progress,
                    sample_steps=args.sample_steps, samples=args.samples,
                    min_dates=args.min_dates)
    if args.dataset is not None or cfg.data.is_dir():
        resolve(cfg.data, args.dataset, "--data", tuple(cfg.seq_lens))
    check_data(cfg.data, cfg.split, cfg.region, args.allow_odd_values)
    summary = run_all(cfg, on_start=lambda out: print(
        f"crbench run: writing rows to {out / 'rows'}", file=sys.stderr, flush=True))
    for mr in summary.runs:
        print(f"{mr.method} L={mr.L} shard {mr.shard}: {mr.n_evaluated}/{mr.n_selected} "
              f"samples ({mr.n_new} new), {mr.n_skipped} non-matching skipped"
              f"{_no_s1_note(mr.n_skipped_no_s1)} -> "
              f"{cfg.out / mr.rows}{_samples_note(cfg.samples, mr.samples)}")
    print()
    print(_summary_table(cfg.out, list(cfg.methods), list(cfg.seq_lens)))
    print(f"\nrun directory: {cfg.out}  (tables: crbench report --results {cfg.out})")
    return 0
