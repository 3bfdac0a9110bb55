"""Learning curves of the learned methods on a seeded synthetic tree.

Each learned method (default: every trainable method of the registry; ``--methods`` to choose)
trains with its ``tiny`` preset for a fixed budget (``--steps``, or ``--budget`` seconds of
training estimated from a short probe run), validating every ``--val-every`` steps. The
validation points are the rows of its ``history.csv`` with a ``val_nrmse_cloudy`` value: the
NRMSE over the pixels cloudy in every input of real prediction (or sampling) on the first
``--val-samples`` samples of the val split (fixed sampler, strict protocol: the target is never
an input). One PNG plots them against the training step and against wall time (the history's
``seconds``), least cloudy's and mosaicing's NRMSE on the same samples as horizontal lines; a
CSV holds the plotted numbers. A method whose history has no ``val_nrmse_cloudy`` values (or
that fails to train) is left out with a message.

Usage::

    python scripts/learning_curves.py [--out DIR] [--methods seq2point,stgan]
        [--steps 100 | --steps seq2point=75,stgan=100 | --budget 30] [--val-every N]
        [--seed 0] [--size 64] [--data ROOT]

Without ``--data`` the demo's tree (6 ROIs x 3 patches, ``--size`` px, ``--seed``) is written
to ``OUT/data``. Writes ``OUT/learning_curves.png``, ``OUT/learning_curves.csv`` (columns
:data:`CSV_COLUMNS`; baselines have no step) and each method's run under ``OUT/runs/<method>``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

BASELINES = ("least_cloudy", "mosaicing")
CSV_COLUMNS = ("method", "kind", "step", "seconds", "val_nrmse_cloudy", "val_psnr_cloudy",
               "val_psnr")
PNG_NAME, CSV_NAME = "learning_curves.png", "learning_curves.csv"
PROBE_STEPS = 10


@dataclass
class Settings:
    """What to train and how (the command-line options)."""

    out: Path
    methods: list[str] | None = None
    steps: dict[str, int] = field(default_factory=dict)
    default_steps: int = 100
    budget: float | None = None
    val_every: int | None = None
    val_samples: int = 4
    seq_len: int = 3
    batch_size: int = 4
    seed: int = 0
    size: int = 64
    data: Path | None = None
    device: str | None = None


@dataclass
class Curves:
    """What :func:`run` produced."""

    png: Path
    csv: Path
    frame: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- methods
def learned_methods() -> list[str]:
    """Registered methods with weights to train, by name (those that fail to import too: they
    are reported when trained)."""
    from crbench.errors import CrbenchError
    from crbench.registry import get_method_class, is_trainable, list_methods

    names = []
    for info in list_methods():
        try:
            if is_trainable(get_method_class(info.name)):
                names.append(info.name)
        except CrbenchError:
            names.append(info.name)
    return sorted(set(names))


def validation_overrides(config: Mapping[str, Any], every: int, samples: int,
                         batch_size: int) -> dict[str, Any]:
    """Config overrides for validating every ``every`` steps on ``samples`` samples: the
    generic loop's ``val_every``/``val_samples`` or SeqDMs' ``ckpt_every``/``val_batches``."""
    out: dict[str, Any] = {}
    if "val_every" in config:
        out["val_every"] = every
    elif "ckpt_every" in config:
        out["ckpt_every"] = every
    if "val_samples" in config:
        out["val_samples"] = samples
    elif "val_batches" in config:
        out["val_batches"] = max(1, math.ceil(samples / batch_size))
    return out


def _fit(name: str, root: Path, out: Path, steps: int, every: int, s: Settings) -> Path:
    from crbench.registry import get_method_class

    cls = get_method_class(name)
    probe = cls(seq_len=s.seq_len, preset="tiny")
    overrides = validation_overrides(probe.config, every, s.val_samples, s.batch_size)
    model = cls(seq_len=s.seq_len, preset="tiny", **overrides)
    shutil.rmtree(out, ignore_errors=True)
    return model.fit(root, out, steps=steps, batch_size=s.batch_size, device=s.device,
                     seed=s.seed, progress=False)


def steps_for_budget(name: str, root: Path, s: Settings) -> int:
    """Steps that fill ``s.budget`` seconds of training, from a :data:`PROBE_STEPS` run's
    ``seconds`` (its wall time when the history has none)."""
    from crbench.training.history import read_history, step_column

    out = s.out / "probe" / name
    start = time.perf_counter()
    _fit(name, root, out, PROBE_STEPS, PROBE_STEPS, s)
    per_step = (time.perf_counter() - start) / PROBE_STEPS
    hist = read_history(out / "history.csv")
    if "seconds" in hist.columns:
        last = hist[hist[step_column(hist)] == PROBE_STEPS]["seconds"].dropna()
        if len(last):
            per_step = float(last.iloc[0]) / PROBE_STEPS
    shutil.rmtree(out.parent, ignore_errors=True)
    assert s.budget is not None
    return max(1, int(s.budget / max(per_step, 1e-6)))


def curve(name: str, history: pd.DataFrame) -> pd.DataFrame:
    """The validation points of one history: rows with a finite ``val_nrmse_cloudy``.

    Raises:
        ValueError: the history has no such row.
    """
    from crbench.training.history import step_column

    if "val_nrmse_cloudy" not in history.columns:
        raise ValueError("its history.csv has no val_nrmse_cloudy column")
    rows = history[pd.to_numeric(history["val_nrmse_cloudy"], errors="coerce").notna()]
    if rows.empty:
        raise ValueError("its history.csv has no val_nrmse_cloudy values")
    points = pd.DataFrame({"method": name, "kind": "learned",
                           "step": rows[step_column(history)].astype(int)})
    for col in CSV_COLUMNS[3:]:
        points[col] = rows[col] if col in rows.columns else math.nan
    return points.reset_index(drop=True)


def train_curve(name: str, root: Path, s: Settings) -> pd.DataFrame:
    """Train ``name`` for its budget and return its validation points."""
    from crbench.training.history import read_history

    steps = steps_for_budget(name, root, s) if s.budget else s.steps.get(name, s.default_steps)
    every = s.val_every or max(1, steps // 10)
    out = _fit(name, root, s.out / "runs" / name, steps, every, s)
    return curve(name, read_history(Path(out) / "history.csv"))


# ----------------------------------------------------------------------------- baselines
def baseline_scores(root: Path, s: Settings) -> tuple[pd.DataFrame, int]:
    """Least cloudy's and mosaicing's scores on the validation samples the methods use, and
    the number of those samples."""
    import torch

    from crbench.registry import create_method
    from crbench.training import TrainOptions, validation_batches
    from crbench.training.validation import cloudy_region_scores, mean_scores

    opts = TrainOptions(seq_len=s.seq_len, batch_size=s.batch_size, val_samples=s.val_samples)
    batches = validation_batches(root, opts)
    rows = []
    for name in BASELINES:
        method = create_method(name)
        with torch.no_grad():
            scores = mean_scores(cloudy_region_scores(method.predict(b.inputs), b.target,
                                                      b.inputs.masks) for b in batches)
        rows.append({"method": name, "kind": "baseline", "step": math.nan,
                     "seconds": math.nan, **scores})
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS)), sum(len(b.meta) for b in batches)


# ----------------------------------------------------------------------------- figure
def _minor_label(value: float, _pos: int) -> str:
    """Minor log-axis label at 2, 3 and 5 times a power of ten (others unlabelled)."""
    if value <= 0:
        return ""
    lead = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if round(lead) in (2, 3, 5) else ""


def plot(frame: pd.DataFrame, path: Path, title: str) -> Path:
    """Validation nrmse_cloudy against step and wall time, baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharey=True, constrained_layout=True)
    learned = frame[frame["kind"] == "learned"]
    for i, (name, points) in enumerate(learned.groupby("method", sort=False)):
        style = {"marker": "o", "markersize": 4, "linewidth": 1.8, "color": f"C{i}",
                 "label": name}
        axes[0].plot(points["step"], points["val_nrmse_cloudy"], **style)
        timed = points.dropna(subset=["seconds"])
        if len(timed):
            axes[1].plot(timed["seconds"], timed["val_nrmse_cloudy"], **style)
    dashes = {"least_cloudy": "--", "mosaicing": ":"}
    for _, row in frame[frame["kind"] == "baseline"].iterrows():
        for ax in axes:
            ax.axhline(row["val_nrmse_cloudy"], color="0.3", linewidth=1.5,
                       linestyle=dashes.get(row["method"], "-."),
                       label=f"{row['method']} (baseline, {row['val_nrmse_cloudy']:.3f})")
    for ax, xlabel in zip(axes, ("training step", "wall time (s)"), strict=True):
        ax.set_xlabel(xlabel, fontsize=11)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(labelsize=10)
        ax.set_xlim(left=0)
    axes[0].set_ylabel("validation nrmse_cloudy (lower is better)", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4),
               fontsize=10, frameon=False)
    fig.suptitle(title, fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- driver
def _tree(s: Settings) -> Path:
    if s.data is not None:
        return s.data
    from crbench.synth import synthesize

    root = s.out / "data"
    synthesize(root, rois=6, patches=3, size=s.size, seed=s.seed)  # replaces an earlier one
    return root


def run(s: Settings, log: Any = print) -> Curves:
    """Train every method, write the CSV and the PNG; ``log`` receives progress messages."""
    from crbench.errors import CrbenchError

    s.out.mkdir(parents=True, exist_ok=True)
    root = _tree(s)
    frames, skipped = [], {}
    for name in s.methods or learned_methods():
        try:
            points = train_curve(name, root, s)
        except (CrbenchError, ValueError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
            log(f"learning curves: {name} left out ({skipped[name]})")
            continue
        last = points.iloc[-1]
        log(f"learning curves: {name} {int(last['step'])} steps in {last['seconds']:.1f} s, "
            f"val nrmse_cloudy {points['val_nrmse_cloudy'].iloc[0]:.4f} -> "
            f"{last['val_nrmse_cloudy']:.4f}")
        frames.append(points)
    base, n = baseline_scores(root, s)
    frame = pd.concat([*frames, base], ignore_index=True)[list(CSV_COLUMNS)]
    frame["step"] = frame["step"].astype("Int64")
    csv = s.out / CSV_NAME
    frame.to_csv(csv, index=False)
    title = (f"Validation nrmse_cloudy of the tiny presets: L = {s.seq_len}, strict protocol, "
             f"{n} val samples, synthetic tree (seed {s.seed})")
    png = plot(frame, s.out / PNG_NAME, title)
    return Curves(png=png, csv=csv, frame=frame, skipped=skipped)


def parse_steps(text: str | None) -> tuple[int | None, dict[str, int]]:
    """``"100"`` -> (100, {}); ``"seq2point=75,stgan=100"`` -> (None, {...})."""
    if not text:
        return None, {}
    if "=" not in text:
        return int(text), {}
    pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
    return None, {k.strip(): int(v) for k, v in pairs}


def parse_args(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/learning-curves"))
    p.add_argument("--methods", default=None, help="comma-separated (default: all learned)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--steps", default=None,
                       help="steps for every method (N) or per method (A=N,B=M); default 100")
    group.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                       help="training seconds per method (estimated from a probe run)")
    p.add_argument("--val-every", type=int, default=None, help="default: steps / 10")
    p.add_argument("--val-samples", type=int, default=4)
    p.add_argument("--L", dest="seq_len", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="synthetic patch size (px)")
    p.add_argument("--data", type=Path, default=None, help="an existing tree instead")
    p.add_argument("--device", default=None)
    a = p.parse_args(argv)
    default, per_method = parse_steps(a.steps)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    return Settings(out=a.out, methods=methods, steps=per_method,
                    default_steps=default or 100, budget=a.budget, val_every=a.val_every,
                    val_samples=a.val_samples, seq_len=a.seq_len, batch_size=a.batch_size,
                    seed=a.seed, size=a.size, data=a.data, device=a.device)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    from crbench.errors import CrbenchError

    try:
        result = run(parse_args(argv))
    except CrbenchError as exc:
        print(f"learning curves: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {result.png} and {result.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
