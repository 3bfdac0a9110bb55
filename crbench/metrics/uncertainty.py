"""Uncertainty metrics: does a method know where it is wrong?

For a prediction with a per-pixel variance (the spread of a stochastic method's K draws, or a
variance head such as UnCRtainTS'), per sample and over all 13 bands in [0, 1]:

- Per pixel: ``var`` = the variance averaged over the bands, ``se`` = the squared error of
  the prediction averaged over the bands (the band-mean is what "a pixel's uncertainty" means
  in the tables and the reliability diagram).
- Calibration bins: :data:`CALIBRATION_EDGES`, fixed edges of the predicted standard deviation
  sqrt(var), log-spaced from 1e-3 to 1 (values below the first edge fall in the first bin,
  above the last in the last). Fixed edges make samples comparable and let the report pool
  them; the UnCRtainTS code instead spreads 20 equal-width bins between the minimum and the
  maximum of the data at hand, which cannot be pooled over samples. Per bin the count, the
  summed variance and the summed squared error are kept (:func:`calibration_bins`).
- UCE (uncertainty calibration error, Laves et al. 2020, as used by the UnCRtainTS paper,
  Ebel et al. 2023, doi:10.48550/arXiv.2304.05464): the bin-size-weighted mean of
  ``|MSE(bin) - mean var(bin)|`` over the bins; AUCE: the unweighted mean over the non-empty
  bins. Both in variance units (reflectance squared); 0 for a perfectly calibrated predictor.
  ``root=True`` compares RMSE with the root mean variance instead, as the UnCRtainTS code
  does (``compute_uce_auce(..., l2=True)``).
- ``spearman``: Spearman's rank correlation between the predicted std and the absolute error
  per pixel (1: the ranking of pixels by uncertainty is the ranking by error; scale-free, so a
  mis-scaled but well-ordered predictor still scores high here and badly in UCE).
- ``nrmse_certain90`` / ``nrmse_certain50``: the RMSE over the 90 % / 50 % of pixels with the
  smallest predicted variance (ties: pixel order). Lower than ``nrmse_mean`` (the RMSE over
  all pixels of the same prediction) when the uncertainty is informative.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import UsageError

CALIBRATION_EDGES: tuple[float, ...] = tuple(float(e) for e in np.logspace(-3, 0, 21))
"""Edges of the predicted-std bins (21 edges, 20 bins), in [0, 1] reflectance units."""
N_BINS = len(CALIBRATION_EDGES) - 1
KEEP_FRACTIONS: tuple[float, ...] = (0.9, 0.5)
UNCERTAINTY_NAMES: tuple[str, ...] = (
    "mean_std", "nrmse_mean", "uce", "auce", "spearman", "nrmse_certain90", "nrmse_certain50")
"""Scalar uncertainty metrics per sample, in the order :func:`uncertainty_metrics` gives."""


def _pixelwise(pred: torch.Tensor, target: torch.Tensor, var: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H*W) band-mean variance and band-mean squared error."""
    if pred.dim() != 4 or pred.shape != target.shape or var.shape != pred.shape:
        raise UsageError(f"uncertainty: expected pred, target and variance of one shape "
                         f"(B, C, H, W); got {tuple(pred.shape)}, {tuple(target.shape)} and "
                         f"{tuple(var.shape)}")
    v = var.double()
    if bool((v < 0).any()) or not bool(torch.isfinite(v).all()):
        raise UsageError("uncertainty: the variance has negative or non-finite values; "
                         "expected finite values >= 0")
    se = (pred.double() - target.double()).square().mean(1).flatten(1)
    return v.mean(1).flatten(1), se


def calibration_bins(var: torch.Tensor, se: torch.Tensor) -> torch.Tensor:
    """Per-bin count, summed variance and summed squared error of each sample.

    Args:
        var: (B, N) per-pixel variance.
        se: (B, N) per-pixel squared error.

    Returns:
        (B, 3, N_BINS) float64: rows count, sum of var, sum of se.
    """
    edges = torch.tensor(CALIBRATION_EDGES[1:-1], dtype=torch.float64, device=var.device)
    idx = torch.bucketize(var.double().sqrt(), edges, right=True)  # 0 .. N_BINS - 1
    out = torch.zeros(var.shape[0], 3, N_BINS, dtype=torch.float64, device=var.device)
    for row, values in enumerate((torch.ones_like(var, dtype=torch.float64), var, se)):
        out[:, row].scatter_add_(1, idx, values.double())
    return out


def uce_auce(bins: torch.Tensor | np.ndarray, root: bool = False) -> tuple[float, float]:
    """UCE and AUCE of one (3, N_BINS) bin table (or several summed: pooled calibration).

    Args:
        bins: counts, summed variances and summed squared errors per bin.
        root: compare RMSE with root mean variance (the UnCRtainTS code) instead of MSE with
            mean variance (the paper's definition).

    Returns:
        (uce, auce); NaN when every bin is empty.
    """
    b = np.asarray(bins, dtype=np.float64)
    count, svar, sse = b[0], b[1], b[2]
    full = count > 0
    if not full.any():
        return float("nan"), float("nan")
    mvar, mse = svar[full] / count[full], sse[full] / count[full]
    if root:
        mvar, mse = np.sqrt(mvar), np.sqrt(mse)
    err = np.abs(mse - mvar)
    return float((count[full] * err).sum() / count.sum()), float(err.mean())


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks along the last axis (ties share their mean rank)."""
    out = torch.empty_like(x, dtype=torch.float64)
    for i, row in enumerate(x):
        _, inverse, counts = torch.unique(row, return_inverse=True, return_counts=True)
        mean_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2
        out[i] = mean_rank[inverse]
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Spearman's rank correlation per row of two (B, N) tensors; NaN for a constant row."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    rho = (ra * rb).sum(1) / den
    return [float(r) if float(d) > 0 else float("nan") for r, d in zip(rho, den, strict=True)]


def nrmse_most_certain(var: torch.Tensor, se: torch.Tensor, keep: float) -> list[float]:
    """RMSE over the ``keep`` fraction of pixels with the smallest variance, per row."""
    if not 0 < keep <= 1:
        raise UsageError(f"keep: bad value {keep!r}; expected a fraction in (0, 1]")
    n = max(1, round(keep * var.shape[1]))
    order = torch.argsort(var, dim=1, stable=True)[:, :n]
    return [float(v) for v in se.gather(1, order).mean(1).sqrt()]


def uncertainty_metrics(pred: torch.Tensor, target: torch.Tensor, var: torch.Tensor,
                        keep: Sequence[float] = KEEP_FRACTIONS
                        ) -> tuple[dict[str, list[float]], torch.Tensor]:
    """Per-sample uncertainty metrics of a batch.

    Args:
        pred: (B, C, H, W) prediction in [0, 1].
        target: (B, C, H, W) reference in [0, 1].
        var: (B, C, H, W) predicted variance of ``pred`` (>= 0).
        keep: fractions of most certain pixels for the ``nrmse_certain<percent>`` entries.

    Returns:
        ({name: B values} with :data:`UNCERTAINTY_NAMES` for the default ``keep``, and the
        (B, 3, N_BINS) calibration bins of every sample).
    """
    v, se = _pixelwise(pred, target, var)
    bins = calibration_bins(v, se)
    pairs = [uce_auce(b) for b in bins.cpu()]
    out = {"mean_std": [float(x) for x in v.sqrt().mean(1)],
           "nrmse_mean": [float(x) for x in se.mean(1).sqrt()],
           "uce": [p[0] for p in pairs], "auce": [p[1] for p in pairs],
           "spearman": spearman(v, se)}
    for k in keep:
        out[f"nrmse_certain{round(100 * k)}"] = nrmse_most_certain(v, se, k)
    return out, bins
