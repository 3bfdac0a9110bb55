"""Compare SeqDMs' training variants (Eq. 28 and fusion) against least cloudy and mosaicing.

Each variant trains the ``tiny`` configuration from the same initial weights, data order and
seeds for ``--steps`` iterations, then samples the test split (fixed sampler, strict protocol,
L = 3) and is scored with :func:`crbench.metrics.compute_metrics` (paper mask convention);
least cloudy and mosaicing are scored on the same samples. Variants:

- ``literal``: Algorithm 2 as written: Eq. 28's loss over every pixel, the known region noised
  with draws independent of the regressed eps_hat (``seq_loss_region=all``);
- ``literal-noise``: as ``literal``, and the unknown region of X~_t pure N(0, I) as the paper
  writes it (``seq_unknown=noise``);
- ``unknown`` (the default): Eq. 28's loss over the unknown region only;
- ``shared``: the known region noised with eps_hat (``shared_noise=true``), loss everywhere;
- ``shared+unknown``: both;
- ``fuse-then-noise``: ``unknown`` with the clean dates averaged before diffusing;
- ``no-tts``: Eq. 27 only (Table 4's ablation);
- ``previous-tiny``: ``unknown`` with the tiny preset's earlier network, condition and
  parameterisation (S1 diffused as in MmDM, attention at 32 px, the noise estimated);
- ``eps``: ``unknown`` with the network estimating the noise (the paper) instead of the
  EDM-preconditioned output of the tiny preset;
- ``x0``: ``unknown`` with the network estimating x0 itself.

Usage::

    python scripts/compare_seqdm_variants.py [--root DIR] [--steps 300] [--sample-steps 25]

Without ``--root`` the demo's synthetic default is written to a temporary directory (6 ROIs,
3 patches, 64 x 64, seed 0). Prints a Markdown table (means over test samples, NaN left out).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS: dict[str, dict[str, object]] = {
    "literal": {"seq_loss_region": "all"},
    "literal-noise": {"seq_loss_region": "all", "seq_unknown": "noise"},
    "unknown": {"seq_loss_region": "unknown"},
    "shared": {"seq_loss_region": "all", "shared_noise": True},
    "shared+unknown": {"seq_loss_region": "unknown", "shared_noise": True},
    "fuse-then-noise": {"seq_loss_region": "unknown", "fusion": "fuse-then-noise"},
    "no-tts": {"temporal_training": False},
    "previous-tiny": {"aux_condition": "diffused", "attention_resolutions": [32],
                      "prediction": "eps"},
    "eps": {"prediction": "eps"},
    "x0": {"prediction": "x0"},
}
BASELINES = ("least_cloudy", "mosaicing")
COLUMNS = ("psnr", "ssim", "nrmse_cloudy", "nrmse_clear", "nrmse_all")


def evaluate(method: object, root: Path, batch_size: int, min_cov: float) -> dict[str, float]:
    """Mean metrics of ``method`` over the test split (NaN ignored)."""
    from crbench.api import collate
    from crbench.data.dataset import SEN12MSCRTS
    from crbench.metrics import compute_metrics

    # strict protocol: the target is never an input, so there is something to reconstruct
    ds = SEN12MSCRTS(root, split="test", L=3, sampler="fixed", protocol="strict",
                     min_cov=min_cov)
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
               "batch_size": args.batch_size, **VARIANTS[name]}
    method = SeqDM(preset="tiny", **options)
    t0 = time.perf_counter()
    method.fit(root, work / name, steps=args.steps, seed=args.seed, progress=False,
               crop=args.crop)
    row = evaluate(method, root, args.batch_size, args.min_cov)
    row["seconds"] = time.perf_counter() - t0
    return row


def table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table of the per-variant means."""
    head = "| variant | " + " | ".join(COLUMNS) + " | test samples | seconds |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for name, r in rows.items():
        cells = " | ".join(f"{r[k]:.4f}" for k in COLUMNS)
        lines.append(f"| {name} | {cells} | {int(r['n'])} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=None, help="dataset root (default: synthetic)")
    p.add_argument("--steps", type=int, default=300, help="training iterations per variant")
    p.add_argument("--sample-steps", type=int, default=25, help="respaced sampling steps")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--crop", type=int, default=None, help="training crop (default: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-cov", type=float, default=0.0,
                   help="lower coverage bound of a test input date")
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
            synthesize(root, rois=6, patches=3, size=64, seed=args.seed)
        from crbench.registry import create_method

        rows = {}
        for name in BASELINES:
            t0 = time.perf_counter()
            rows[name] = evaluate(create_method(name), root, args.batch_size, args.min_cov)
            rows[name]["seconds"] = time.perf_counter() - t0
        for name in names:
            rows[name] = run_variant(name, root, Path(tmp) / "ckpt", args)
            print(f"{name}: done in {rows[name]['seconds']:.0f} s", file=sys.stderr)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
