"""Figures of a crbench run (matplotlib, Agg backend; each as PNG and PDF).

- Figure 4 (``figure4``): histograms of PSNR, SSIM, NRMSE(cloudy) and SAM over samples, one
  row per L, one colour (and line style) per method; infinite and undefined values are left
  out of the histograms.
- Figure 3 (``figure3``): example panels at one L: RGB composites (B04, B03, B02, reflectance
  x 3.5 clipped to [0, 1]) of the L inputs, each method's output and the target, for four
  kinds of sample. Per-input coverages come from the cloud-mask cache of the run's data root
  (``data`` in the run manifest); a date is *clear* when its coverage is at most 0.1 %
  (:data:`crbench.constants.TARGET_CLEAR_MAX`). The kinds and the sample shown for each:

  - cloud-free: every input clear; the one with the lowest mean input coverage;
  - partly cloudy: no input clear and mean coverage below 50 %; the one closest to 25 %;
  - one clear date: exactly one input clear (L >= 2); the one with the highest mean coverage;
  - no clear date: no input clear and mean coverage of 50 % or more; the highest mean coverage.

  Ties go to the first (roi, patch). A kind without any sample gets a row saying so. Method
  outputs come from predictions saved by ``crbench run --save-predictions``
  (``predictions/<method>/L<L>/<ROIsXXXX>_<id>_patch<n>.tif``); methods without saved
  predictions are left out and named in :attr:`FigureResult.messages`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..constants import RGB_IDX, TARGET_CLEAR_MAX
from .runs import manifest_value, method_sort_key

RGB_GAIN = 3.5
HIST_METRICS: tuple[tuple[str, str], ...] = (
    ("psnr", "PSNR [dB]"), ("ssim", "SSIM"), ("nrmse_cloudy", "NRMSE (cloudy)"),
    ("sam", "SAM [rad]"))
CATEGORIES: tuple[str, ...] = ("cloud-free", "partly cloudy", "one clear date", "no clear date")
FORMATS: tuple[str, ...] = ("png", "pdf")
LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")  # overlapping methods stay visible


@dataclass
class FigureResult:
    """Files written and remarks (skipped methods, empty categories, missing data)."""

    files: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<stem>.png`` and ``.pdf`` (:data:`FORMATS`), close it and
    return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.{ext}" for ext in FORMATS]
    for p in paths:
        fig.savefig(p, dpi=110)
    pyplot().close(fig)
    return paths


def method_order(methods: Sequence[str]) -> list[str]:
    """The distinct methods in display order (:func:`method_sort_key`)."""
    return sorted(set(methods), key=method_sort_key)


def method_styles(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Line properties (``color``, ``linestyle``) of each method, in display order: the k-th
    method present gets tab10 colour k and line style k % 4, in every figure of a report."""
    colours = pyplot().get_cmap("tab10")
    return {m: {"color": colours(k % 10), "linestyle": LINESTYLES[k % len(LINESTYLES)]}
            for k, m in enumerate(method_order(methods))}


def histogram_figure(rows: pd.DataFrame, out_dir: Path, stem: str = "figure4") -> list[Path]:
    """Figure 4: per-L histograms of PSNR, SSIM, NRMSE(cloudy), SAM; returns PNG and PDF."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    Ls = sorted(int(v) for v in rows["L"].unique())
    styles = method_styles(rows["method"].unique())
    fig, axes = plt.subplots(len(Ls), len(HIST_METRICS), squeeze=False,
                             figsize=(3.2 * len(HIST_METRICS), 2.4 * len(Ls)))
    for r, L in enumerate(Ls):
        at_L = rows[rows["L"] == L]
        for c, (metric, label) in enumerate(HIST_METRICS):
            ax = axes[r][c]
            values = at_L[metric].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                ax.text(0.5, 0.5, "undefined for all samples", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8)
            else:
                lo, hi = float(finite.min()), float(finite.max())
                bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 21)
                for method, style in styles.items():
                    v = at_L.loc[at_L["method"] == method, metric].to_numpy(dtype=float)
                    v = v[np.isfinite(v)]
                    if v.size:
                        ax.hist(v, bins=bins, histtype="step", linewidth=1.4, label=method,
                                **style)
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel(f"L={L}: samples" if c == 0 else "", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=8,
                   bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_size_inches()[1]))
    return save_figure(fig, out_dir, stem)


# ----------------------------------------------------------------------------- Figure 3


@dataclass
class Example:
    """The sample chosen for one category of Figure 3."""

    category: str
    roi: str
    patch: int
    input_idx: list[int]
    target_idx: int
    coverages: list[float]


def categorize(coverages: Sequence[float]) -> str | None:
    """Category of a sample from its per-input coverages (rule in the module docstring)."""
    cov = np.asarray(coverages, dtype=float)
    n_clear = int((cov <= TARGET_CLEAR_MAX).sum())
    if n_clear == cov.size:
        return "cloud-free"
    if n_clear == 1:
        return "one clear date"
    if n_clear == 0:
        return "partly cloudy" if cov.mean() < 0.5 else "no clear date"
    return None


def choose_examples(samples: pd.DataFrame) -> dict[str, Example | None]:
    """One example per category from ``samples`` (columns roi, patch, input_idx as "0;1;2",
    target_idx, coverage_inputs as a list of floats), by the module docstring's rule."""
    score = {"cloud-free": lambda c: c.mean(), "partly cloudy": lambda c: abs(c.mean() - 0.25),
             "one clear date": lambda c: -c.mean(), "no clear date": lambda c: -c.mean()}
    best: dict[str, tuple[tuple[float, str, int], Example] | None] = dict.fromkeys(CATEGORIES)
    for _, s in samples.iterrows():
        cov = np.asarray(s["coverage_inputs"], dtype=float)
        cat = categorize(cov)
        if cat is None:
            continue
        key = (float(score[cat](cov)), str(s["roi"]), int(s["patch"]))
        if best[cat] is None or key < best[cat][0]:
            ex = Example(cat, str(s["roi"]), int(s["patch"]),
                         [int(i) for i in str(s["input_idx"]).split(";")], int(s["target_idx"]),
                         [float(c) for c in cov])
            best[cat] = (key, ex)
    return {c: (v[1] if v is not None else None) for c, v in best.items()}


def rgb(image: np.ndarray) -> np.ndarray:
    """(13, H, W) reflectance in [0, 1] -> (H, W, 3) RGB display image (B04, B03, B02)."""
    return np.clip(np.moveaxis(image[list(RGB_IDX)], 0, -1) * RGB_GAIN, 0.0, 1.0)


def prediction_path(run_dir: Path, method: str, L: int, roi: str, patch: int) -> Path:
    """Where ``crbench run --save-predictions`` stores one prediction."""
    return (Path(run_dir) / "predictions" / method / f"L{L}"
            / f"{roi.replace('/', '_')}_patch{patch}.tif")


def read_prediction(path: Path) -> np.ndarray:
    """A saved prediction as (13, H, W) reflectance in [0, 1] (integer files are S2 DN)."""
    import rasterio

    from ..data.io import read_raster, scale_s2

    with rasterio.open(path) as src:
        is_int = np.issubdtype(np.dtype(src.dtypes[0]), np.integer)
    array = read_raster(path, 13).array
    return scale_s2(array) if is_int else np.clip(array, 0.0, 1.0)


def _input_coverages(samples: pd.DataFrame, data_root: Path, split: str,
                     progress: bool) -> pd.DataFrame:
    from tqdm.auto import tqdm

    from ..data.index import scan_tree
    from ..data.masks import MaskCache

    records = {(r.roi, r.patch): r for r in scan_tree(data_root, split=split)}
    cache = MaskCache(data_root)
    covs = []
    for _, s in tqdm(list(samples.iterrows()), desc="figure 3: coverages", disable=not progress,
                     leave=False):
        rec = records.get((str(s["roi"]), int(s["patch"])))
        idx = [int(i) for i in str(s["input_idx"]).split(";")]
        covs.append(None if rec is None else cache.coverages([rec.s2[rec.pos(i)] for i in idx]))
    out = samples.assign(coverage_inputs=covs)
    return out[out["coverage_inputs"].notna()]


def _draw_examples(examples: dict[str, Example | None], data_root: Path, split: str, L: int,
                   preds: dict[str, list[Path]]) -> Any:
    from ..data.index import scan_tree
    from ..data.io import read_s2, scale_s2

    plt = pyplot()
    records = {(r.roi, r.patch): r for r in scan_tree(data_root, split=split)}
    methods = list(preds)
    ncol = L + len(methods) + 1
    fig, axes = plt.subplots(len(CATEGORIES), ncol, squeeze=False,
                             figsize=(1.7 * ncol, 1.9 * len(CATEGORIES)))
    for ax in axes.flat:
        ax.axis("off")
    for r, cat in enumerate(CATEGORIES):
        ex = examples[cat]
        if ex is None:
            axes[r][0].text(0, 0.5, f"{cat}: no sample of this kind at L={L}", fontsize=8,
                            va="center", transform=axes[r][0].transAxes)
            continue
        rec = records[(ex.roi, ex.patch)]
        for j, (t, c) in enumerate(zip(ex.input_idx, ex.coverages, strict=True)):
            axes[r][j].imshow(rgb(scale_s2(read_s2(rec.s2[rec.pos(t)]).array)))
            axes[r][j].set_title(f"input t={t} ({100 * c:.0f} % cloud)", fontsize=6)
        for k, method in enumerate(methods):
            ax = axes[r][L + k]
            path = next((p for p in (prediction_path(d, method, L, ex.roi, ex.patch)
                                     for d in preds[method]) if p.is_file()), None)
            if path is None:
                ax.text(0.5, 0.5, "no saved\nprediction", ha="center", va="center",
                        fontsize=7, transform=ax.transAxes)
            else:
                ax.imshow(rgb(read_prediction(path)))
            ax.set_title(method, fontsize=7)
        axes[r][ncol - 1].imshow(rgb(scale_s2(read_s2(rec.s2[rec.pos(ex.target_idx)]).array)))
        axes[r][ncol - 1].set_title(f"target t={ex.target_idx}", fontsize=6)
        axes[r][0].text(-0.08, 0.5, f"{cat}\n{ex.roi} p{ex.patch}", fontsize=7, rotation=90,
                        ha="right", va="center", transform=axes[r][0].transAxes)
    fig.suptitle(f"Example outputs at L={L} (RGB = B04, B03, B02 x {RGB_GAIN})", fontsize=9)
    # fixed margins: tight_layout would shrink the images around the long "no sample" texts
    fig.subplots_adjust(left=0.6 / fig.get_size_inches()[0], right=0.995, bottom=0.01,
                        top=1 - 0.45 / fig.get_size_inches()[1], wspace=0.06, hspace=0.25)
    return fig


def example_figure(rows: pd.DataFrame, data_root: Path, run_dirs: Sequence[Path], L: int,
                   out_dir: Path, progress: bool = False, stem: str = "figure3") -> FigureResult:
    """Figure 3 at ``L`` (rule in the module docstring); PNG and PDF plus remarks."""
    result = FigureResult()
    at_L = rows[rows["L"] == L]
    split = str(at_L["split"].mode().iloc[0])
    preds: dict[str, list[Path]] = {}
    for method in method_order(at_L["method"].unique()):
        dirs = [d for d in run_dirs if (Path(d) / "predictions" / method / f"L{L}").is_dir()]
        if dirs:
            preds[method] = dirs
        else:
            result.messages.append(f"figure 3 leaves out {method}: no saved predictions at "
                                   f"L={L} (run with --save-predictions)")
    samples = at_L.drop_duplicates(["roi", "patch", "input_idx", "target_idx"])
    examples = choose_examples(_input_coverages(samples, data_root, split, progress))
    for cat, ex in examples.items():
        if ex is None:
            result.messages.append(f"figure 3: no {cat} sample at L={L}")
    fig = _draw_examples(examples, data_root, split, L, preds)
    result.files = save_figure(fig, out_dir, stem)
    return result


def make_figures(rows: pd.DataFrame, manifests: Sequence[dict[str, Any]],
                 results: Sequence[Path], out_dir: Path, L: int, progress: bool = False
                 ) -> FigureResult:
    """Figures 4 and 3 of a report. Figure 3 needs the run's data root (manifest ``data``);
    when it is unknown or gone, only Figure 4 is drawn and a message says why."""
    result = FigureResult(files=histogram_figure(rows, out_dir))
    roots = [Path(str(manifest_value(m, "data"))) for m in manifests if manifest_value(m, "data")]
    root = next((r for r in roots if r.is_dir()), None)
    if root is None:
        where = ", ".join(map(str, roots)) or "no data root in the run manifests"
        result.messages.append(f"figure 3 not drawn: the run's data root is not available "
                               f"({where})")
        return result
    run_dirs = sorted({Path(m["_path"]).parent for m in manifests if "_path" in m}
                      | {Path(d) for d in results})
    ex = example_figure(rows, root, run_dirs, L, out_dir, progress)
    result.files += ex.files
    result.messages += ex.messages
    return result
