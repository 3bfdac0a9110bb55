"""Calibration of the methods that give an uncertainty: a table and a reliability diagram.

Input: the uncertainty sidecars of ``crbench run`` (``rows/*.uncertainty.csv``, written when a
variance exists: ``--samples K`` draws of a stochastic method, or a method's variance head),
read by :func:`crbench.runner.store.read_uncertainty`; the metrics are defined in
:mod:`crbench.metrics.uncertainty`.

- Calibration table (``calibration``): per L, method and source (``draws``: the spread of K
  samples; ``head``: the method's own variance), the means over samples of ``nrmse_mean``
  (RMSE of the scored prediction), ``nrmse_certain90`` / ``nrmse_certain50`` (RMSE over the
  90 % / 50 % most certain pixels), ``spearman`` (rank correlation of predicted std and
  error), ``uce`` / ``auce`` (per sample), ``mean_std``; and ``uce_pooled`` / ``auce_pooled``,
  computed once from the calibration bins summed over all samples of the group (the UnCRtainTS
  paper's data-set-level calibration error).
- Reliability diagram (``figure_reliability``): one panel per L; per method and source, the
  pooled RMSE of each calibration bin against the bin's root mean predicted variance, on
  log-log axes, with the diagonal (perfect calibration). A point above the diagonal: the
  method is over-confident there; below: under-confident. Bins holding fewer than
  :data:`MIN_BIN_PIXELS` pixels are left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics.uncertainty import uce_auce
from ..runner.store import parse_bins
from .figures import method_order, method_styles, pyplot, save_figure
from .tables import Table, _sorted, summarize

STEM = "figure_reliability"
MIN_BIN_PIXELS = 20
METRICS: tuple[str, ...] = ("nrmse_mean", "nrmse_certain90", "nrmse_certain50", "spearman",
                            "uce", "auce", "uce_pooled", "auce_pooled", "mean_std")
HIGHER: dict[str, bool | None] = {"nrmse_mean": False, "nrmse_certain90": False,
                                  "nrmse_certain50": False, "spearman": True, "uce": False,
                                  "auce": False, "uce_pooled": False, "auce_pooled": False,
                                  "mean_std": None}
KEYS = ["L", "method", "source"]
NOTE = ("Uncertainty of the prediction scored in the other tables (for K draws: their mean "
        "image, against the draws' per-pixel variance). uce / auce: calibration error "
        "|MSE - mean predicted variance| over fixed bins of the predicted std, weighted by bin "
        "size / unweighted (variance units; 0 = calibrated); *_pooled: from the bins of all "
        "samples together. spearman: rank correlation of predicted std and absolute error per "
        "pixel. nrmse_certain90/50: RMSE over the 90 % / 50 % most certain pixels, below "
        "nrmse_mean when the uncertainty is informative.")


def pooled_bins(unc: pd.DataFrame) -> np.ndarray:
    """The (3, n_bins) calibration bins summed over the rows of ``unc``."""
    return np.sum([np.asarray(parse_bins(b)) for b in unc["bins"]], axis=0)


def calibration_table(unc: pd.DataFrame) -> Table | None:
    """The calibration table of uncertainty sidecar rows; None without rows."""
    if unc.empty:
        return None
    frame = unc.copy()
    frame["uce_pooled"] = frame["auce_pooled"] = np.nan
    stats = _sorted(summarize(frame, KEYS, metrics=METRICS), KEYS)
    for i, row in stats.iterrows():
        group = unc[(unc["L"] == row["L"]) & (unc["method"] == row["method"])
                    & (unc["source"] == row["source"])]
        stats.loc[i, ["uce_pooled", "auce_pooled"]] = uce_auce(pooled_bins(group))
        stats.loc[i, ["uce_pooled_n", "auce_pooled_n"]] = len(group)
    return Table("calibration", "Calibration of the predicted uncertainty", KEYS, ["L"], stats,
                 [NOTE], metrics=METRICS, higher=HIGHER)


def reliability_points(bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(root mean predicted variance, RMSE) of the bins with enough pixels."""
    count, svar, sse = np.asarray(bins, dtype=np.float64)
    keep = count >= MIN_BIN_PIXELS
    return np.sqrt(svar[keep] / count[keep]), np.sqrt(sse[keep] / count[keep])


def reliability_figure(unc: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Draw the reliability diagram (PNG and PDF); no files without rows."""
    if unc.empty:
        return []
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    Ls = sorted(int(v) for v in unc["L"].unique())
    fig, axes = plt.subplots(1, len(Ls), figsize=(4.2 * len(Ls), 4), squeeze=False)
    styles = method_styles(list(unc["method"]))
    for ax, L in zip(axes[0], Ls, strict=True):
        at_L = unc[unc["L"] == L]
        lo, hi = np.inf, 0.0
        for method in method_order(list(at_L["method"])):
            for source, group in at_L[at_L["method"] == method].groupby("source"):
                x, y = reliability_points(pooled_bins(group))
                if x.size:
                    lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
                ax.plot(x, y, marker="o", ms=3, label=f"{method} ({source}, n={len(group)})",
                        **styles[method])
        if hi > 0:
            ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, label="calibrated")
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):  # ticks at 1, 2, 5 x 10^k, plainly labelled
                axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                axis.set_minor_locator(NullLocator())
                axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.set_title(f"L={L}")
        ax.set_xlabel("predicted std (root mean variance per bin)")
        ax.set_ylabel("observed RMSE per bin")
        ax.legend(fontsize=7)
    fig.suptitle("Reliability: observed error against predicted uncertainty")
    fig.tight_layout()
    return save_figure(fig, out_dir, STEM)
