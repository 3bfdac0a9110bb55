"""Cloud-coverage figures of a crbench run: the pictures behind Table 3 (each as PNG and PDF).

Both use Table 3's bins, :func:`crbench.report.tables.coverage_bins` (10 % bins of the mean
input cloud coverage, ``[0, 10)``, ..., ``[90, 100]``), and are drawn from the same per-sample
rows as the tables:

- coverage histogram (``figure_coverage_hist``, data: :func:`coverage_counts`): one panel per
  L, the number of evaluated samples in each bin, i.e. Table 3's ``n``. Only samples with a
  row are counted; samples the fixed sampler skipped (not enough qualifying inputs or a cloudy
  target) are not, and their number from the run manifests is named in the panel title.
- metrics by coverage (``figure_metrics_by_coverage``, data: :func:`coverage_means`): one row
  of panels per L, one column per metric (nrmse_all, nrmse_cloudy, nrmse_clear, psnr, ssim,
  sam); x = coverage bin, one line per method (colours and line styles as in Figure 4,
  :func:`crbench.report.figures.method_styles`). The values are Table 3's means (undefined
  values left out). A bin without samples, or whose metric is undefined for all its samples,
  is a gap. A bin whose mean is infinite (Table 3 shows ``inf``: it holds an exact
  reconstruction, PSNR = inf) is drawn as a triangle on the panel's top edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..metrics import HIGHER_IS_BETTER, METRIC_NAMES
from .figures import FigureResult, method_order, method_styles, pyplot, save_figure
from .tables import N_BINS, bin_label, coverage_bins, table3

HIST_STEM = "figure_coverage_hist"
METRICS_STEM = "figure_metrics_by_coverage"
SAMPLE_COLUMNS: tuple[str, ...] = ("split", "roi", "patch", "input_idx", "target_idx")
"""Columns that identify one evaluated sample at one L (every method sees the same ones)."""
METRIC_LABELS: dict[str, str] = {
    "nrmse_all": "NRMSE (all pixels)", "nrmse_cloudy": "NRMSE (cloudy)",
    "nrmse_clear": "NRMSE (clear)", "psnr": "PSNR [dB]", "ssim": "SSIM", "sam": "SAM [rad]"}
COVERAGE_AXIS = "mean input cloud coverage [%]"
INF_MARKER = "^"


def _tick_labels() -> list[str]:
    return [bin_label(b).removesuffix(" %") for b in range(N_BINS)]


# ----------------------------------------------------------------------------- data


def coverage_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Evaluated samples per L and Table 3 coverage bin (the histogram's bars).

    A sample (:data:`SAMPLE_COLUMNS`) counts once per L however many methods ran on it, so
    when every method ran the same samples the count equals Table 3's ``n`` of each method.

    Returns:
        Columns ``L``, ``coverage`` (bin index 0..9) and ``n``; every bin of every L present,
        empty bins with n = 0, sorted by L and bin.
    """
    samples = rows.drop_duplicates(["L", *SAMPLE_COLUMNS])
    binned = samples.assign(coverage=coverage_bins(samples["coverage"]))
    counts = binned.groupby(["L", "coverage"]).size()
    Ls = sorted(int(v) for v in rows["L"].unique())
    full = pd.MultiIndex.from_product([Ls, range(N_BINS)], names=["L", "coverage"])
    out = counts.reindex(full, fill_value=0).rename("n").reset_index()
    return out.astype({"L": int, "coverage": int, "n": int})


def coverage_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Table 3's means, the values the metrics-by-coverage figure plots.

    Computed by :func:`crbench.report.tables.table3` itself (means over the samples of a
    bin ignoring NaN; a bin holding an infinite value has an infinite mean).

    Returns:
        Columns ``L``, ``coverage`` (bin index), ``method``, ``n`` and one per metric of
        :data:`crbench.metrics.METRIC_NAMES`; every bin of every (L, method), in Table 3's
        order.
    """
    stats = table3(rows).stats
    return stats[["L", "coverage", "method", "n", *METRIC_NAMES]].astype(
        {"L": int, "coverage": int, "n": int})


def uneven_methods(rows: pd.DataFrame) -> list[str]:
    """Remarks for each L whose methods were evaluated on different numbers of samples (then
    the histogram counts every sample that any method was evaluated on)."""
    out = []
    for L, group in rows.groupby("L"):
        per_method = group.groupby("method").size()
        if per_method.nunique() > 1:
            sizes = ", ".join(f"{m}: {int(per_method[m])}" for m in method_order(per_method.index))
            out.append(f"coverage histogram: at L={int(L)} the methods were evaluated on "
                       f"different numbers of samples ({sizes}); the bars count every sample "
                       "evaluated by any method")
    return out


# ----------------------------------------------------------------------------- histogram


def coverage_hist_figure(rows: pd.DataFrame, out_dir: Path,
                         skipped: Mapping[int, int] | None = None,
                         stem: str = HIST_STEM) -> list[Path]:
    """The coverage histogram (module docstring); ``skipped``: samples skipped per L (from
    the manifests), named in the panel titles. Returns the PNG and PDF paths."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    counts = coverage_counts(rows)
    Ls = sorted(counts["L"].unique())
    fig, axes = plt.subplots(1, len(Ls), squeeze=False, sharey=True,
                             figsize=(max(4.6, 3.6 * len(Ls)), 3.4))
    top = max(int(counts["n"].max()), 1)
    for ax, L in zip(axes[0], Ls, strict=True):
        n = counts.loc[counts["L"] == L, "n"].to_numpy()
        bars = ax.bar(np.arange(N_BINS), n, width=0.8, color="tab:gray")
        ax.bar_label(bars, fontsize=7, padding=1)
        title = f"L={L}: {int(n.sum())} evaluated samples"
        if skipped and skipped.get(int(L)):
            title += f"\n({skipped[int(L)]} skipped by the sampler, not counted)"
        ax.set_title(title, fontsize=8)
        _coverage_axis(ax)
        ax.set_ylim(0, top * 1.15)
    axes[0][0].set_ylabel("evaluated samples", fontsize=8)
    axes[0][0].yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Evaluated samples per input cloud-coverage bin (Table 3's n; samples "
                 "skipped by the sampler are not counted)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


def _coverage_axis(ax: Any, labels: bool = True) -> None:
    ax.set_xticks(np.arange(N_BINS))
    ax.set_xticklabels(_tick_labels() if labels else [], rotation=45, fontsize=7)
    ax.set_xlim(-0.6, N_BINS - 0.4)
    ax.tick_params(labelsize=7)
    if labels:
        ax.set_xlabel(COVERAGE_AXIS, fontsize=8)


# ----------------------------------------------------------------------------- metrics


def metrics_by_coverage_figure(rows: pd.DataFrame, out_dir: Path, stem: str = METRICS_STEM
                               ) -> list[Path]:
    """The metrics-by-coverage grid (module docstring). Returns the PNG and PDF paths."""
    plt = pyplot()
    means = coverage_means(rows)
    Ls = sorted(means["L"].unique())
    styles = method_styles(means["method"].unique())
    fig, axes = plt.subplots(len(Ls), len(METRIC_NAMES), squeeze=False, sharex=True,
                             sharey="col", figsize=(2.75 * len(METRIC_NAMES), 2.3 * len(Ls) + 1.6))
    any_inf = False
    for r, L in enumerate(Ls):
        at_L = means[means["L"] == L]
        for c, metric in enumerate(METRIC_NAMES):
            ax = axes[r][c]
            any_inf |= _metric_panel(ax, at_L, metric, styles)
            _coverage_axis(ax, labels=r == len(Ls) - 1)
            if r == 0:
                arrow = "higher" if HIGHER_IS_BETTER[metric] else "lower"
                ax.set_title(f"{METRIC_LABELS[metric]}\n({arrow} is better)", fontsize=8,
                             pad=9)  # room for the triangles of infinite means
            if c == 0:
                ax.set_ylabel(f"L={L}: mean", fontsize=8)
    _finish_metrics_figure(fig, axes, styles, any_inf)
    return save_figure(fig, out_dir, stem)


def _metric_panel(ax: Any, at_L: pd.DataFrame, metric: str,
                  styles: Mapping[str, Mapping[str, Any]]) -> bool:
    """One method line per method; infinite means as triangles on the top edge. Returns
    whether any mean was infinite."""
    from matplotlib.transforms import blended_transform_factory

    top_edge = blended_transform_factory(ax.transData, ax.transAxes)
    drawn = has_inf = False
    for method, style in styles.items():
        sub = at_L[at_L["method"] == method].sort_values("coverage")
        x = sub["coverage"].to_numpy()
        y = sub[metric].to_numpy(dtype=float)
        finite = np.isfinite(y)
        if finite.any():
            ax.plot(x, np.where(finite, y, np.nan), marker="o", markersize=3.5, linewidth=1.3,
                    label=method, **style)
            drawn = True
        inf = np.isinf(y)
        if inf.any():
            ax.plot(x[inf], np.ones(int(inf.sum())), linestyle="none", marker=INF_MARKER,
                    markersize=6, color=style["color"], transform=top_edge, clip_on=False)
            has_inf = True
    if not drawn and not has_inf:
        ax.text(0.5, 0.5, "undefined for all samples", ha="center", va="center",
                transform=ax.transAxes, fontsize=7)
    return has_inf


def _finish_metrics_figure(fig: Any, axes: Any, styles: Mapping[str, Mapping[str, Any]],
                           any_inf: bool) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", markersize=3.5, linewidth=1.3, **style)
               for style in styles.values()]
    labels = list(styles)
    if any_inf:
        handles.append(Line2D([], [], linestyle="none", marker=INF_MARKER, color="black"))
        labels.append("on the top edge: mean is inf (an exact reconstruction in the bin)")
    height = fig.get_size_inches()[1]
    fig.suptitle("Mean metrics per input cloud-coverage bin (Table 3)", fontsize=9,
                 y=1 - 0.06 / height, va="top")
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 7), fontsize=8,
               bbox_to_anchor=(0.5, 1 - 0.28 / height), frameon=False)
    note = ("Means over the samples of each bin as in Table 3: undefined values (empty "
            "cloudy/clear region) left out; a gap is a bin without samples or with the metric "
            "undefined for all of them; a triangle on the top edge is a bin whose mean is "
            "infinite (Table 3: inf). Sample counts: figure_coverage_hist.")
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1 - 0.42 / height))


# ----------------------------------------------------------------------------- both


def coverage_figures(rows: pd.DataFrame, out_dir: Path,
                     skipped: Mapping[int, int] | None = None) -> FigureResult:
    """Both coverage figures into ``out_dir``, with remarks (:func:`uneven_methods`)."""
    files = [*coverage_hist_figure(rows, out_dir, skipped),
             *metrics_by_coverage_figure(rows, out_dir)]
    return FigureResult(files=files, messages=uneven_methods(rows))

