"""Compare SeqDM's fusion variants on the validation split of a synthetic tree.

Each variant trains the ``tiny`` configuration from the same initial weights, data order and
seeds for ``--steps`` iterations, then samples the validation split (fixed sampler, L = 3) and
is scored with :func:`crbench.metrics.compute_metrics` (paper mask convention). Variants:

- ``paper``: noise-then-fuse, independent noise per date (Zhao & Jia 2023, the default);
- ``fuse-then-noise``: average the clean dates, then diffuse once;
- ``shared-noise``: noise-then-fuse with every date noised by the target's eps_hat (Eq. 28);
- ``fuse-then-noise+shared``: both;
- ``no-tts``: the paper's fusion, trained with Eq. 27 only (Table 4's ablation).

Usage::

    python scripts/compare_seqdm_variants.py [--root DIR] [--steps 40] [--sample-steps 25]

Without ``--root`` a synthetic tree (7 ROIs: 3 train, 2 val; 2 patches; 32 x 32) is written to
a temporary directory. Validation uses the strict protocol and input dates with coverage at
least ``--min-cov``, so that some pixels are cloudy on every input. Prints a Markdown table
(mean over validation samples). A tiny model trained for a few dozen iterations on CPU (with a
raised learning rate and a short EMA) is far from converged: read it as a smoke comparison.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS: dict[str, dict[str, object]] = {
    "paper": {},
    "fuse-then-noise": {"fusion": "fuse-then-noise"},
    "shared-noise": {"shared_noise": True},
    "fuse-then-noise+shared": {"fusion": "fuse-then-noise", "shared_noise": True},
    "no-tts": {"temporal_training": False},
}
COLUMNS = ("psnr", "ssim", "nrmse_cloudy", "nrmse_clear", "nrmse_all")


def evaluate(method: object, root: Path, batch_size: int, min_cov: float) -> dict[str, float]:
    """Mean metrics of ``method`` over the validation split (NaN ignored)."""
    from crbench.api import collate
    from crbench.data.dataset import SEN12MSCRTS
    from crbench.metrics import compute_metrics

    # strict protocol (the target is never an input) and cloudy inputs, so that there is
    # something to reconstruct; every sample is scored, matching or not
    ds = SEN12MSCRTS(root, split="val", L=3, sampler="fixed", protocol="strict",
                     min_cov=min_cov, only_matching=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate)
    values: dict[str, list[float]] = {k: [] for k in COLUMNS}
    for batch in loader:
        pred = method.predict(batch.inputs)  # type: ignore[attr-defined]
        metrics = compute_metrics(pred, batch.target, batch.inputs.masks)
        for k in COLUMNS:
            values[k].extend(metrics[k].tolist())
    out = {}
    for k, v in values.items():
        t = torch.tensor(v, dtype=torch.float64)
        out[k] = float(t[~t.isnan()].mean()) if (~t.isnan()).any() else float("nan")
    out["n"] = float(len(ds))
    return out


def run_variant(name: str, root: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """Train one variant and score it."""
    from crbench_methods.seqdm import SeqDM

    options = {"sample_steps": args.sample_steps, "val_batches": 0, "ckpt_every": args.steps,
               "batch_size": args.batch_size, "lr": args.lr, "ema_decay": args.ema_decay,
               **VARIANTS[name]}
    method = SeqDM(preset="tiny", **options)
    t0 = time.perf_counter()
    method.fit(root, work / name, steps=args.steps, seed=args.seed, progress=False,
               crop=args.crop)
    row = evaluate(method, root, args.batch_size, args.min_cov)
    row["seconds"] = time.perf_counter() - t0
    return row


def table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table of the per-variant means."""
    head = "| variant | " + " | ".join(COLUMNS) + " | val samples | seconds |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for name, r in rows.items():
        cells = " | ".join(f"{r[k]:.4f}" for k in COLUMNS)
        lines.append(f"| {name} | {cells} | {int(r['n'])} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=None, help="dataset root (default: synthetic)")
    p.add_argument("--steps", type=int, default=40, help="training iterations per variant")
    p.add_argument("--sample-steps", type=int, default=25, help="respaced sampling steps")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--crop", type=int, default=None, help="training crop (default: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3, help="higher than the paper's 1e-4 so "
                   "that a short run moves the weights")
    p.add_argument("--ema-decay", type=float, default=0.9)
    p.add_argument("--min-cov", type=float, default=0.3,
                   help="lower coverage bound of a validation input date")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {', '.join(VARIANTS)}")
    args = p.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown variant {unknown[0]!r}; expected {', '.join(VARIANTS)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            from crbench.synth import synthesize

            root = Path(tmp) / "synth"
            synthesize(root, rois=7, patches=2, size=32, seed=args.seed)
        rows = {}
        for name in names:
            rows[name] = run_variant(name, root, Path(tmp) / "ckpt", args)
            print(f"{name}: done in {rows[name]['seconds']:.0f} s", file=sys.stderr)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
