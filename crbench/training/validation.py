"""Validation scores that measure learning: errors over the region the method must fill.

A cloud-removal method copies (or nearly copies) the clear pixels, so PSNR over whole images
mostly scores the copy and stays flat while the network learns. Every training loop logs, on a
few fixed validation samples of real prediction (or sampling), the whole-image PSNR and the
NRMSE and PSNR over the pixels cloudy in every input (the paper's mask convention, as
``nrmse_cloudy`` of :mod:`crbench.metrics`), so a learning curve shows the fill improving.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from ..metrics import MaskConvention, region_masks

VAL_COLUMNS = ("val_psnr", "val_nrmse_cloudy", "val_psnr_cloudy")


def cloudy_region_scores(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
    """Per-sample scores of a batch, each a (B,) float64 tensor.

    Args:
        pred: (B, C, H, W) prediction in [0, 1].
        target: (B, C, H, W) cloud-free target in [0, 1].
        masks: (B, L, H, W) cloud masks of the inputs, 1 = cloud.

    Returns:
        ``val_psnr`` (20 log10(1 / RMSE) over the whole image), ``val_nrmse_cloudy`` (RMSE over
        the pixels cloudy in every input, NaN where there are none) and ``val_psnr_cloudy``
        (its PSNR).
    """
    err = (pred.double() - target.to(pred.device).double()) ** 2
    rmse = err.mean(dim=(1, 2, 3)).sqrt()
    cloudy = region_masks(masks.to(pred.device), MaskConvention.PAPER)[0]
    cloudy = cloudy.unsqueeze(1).to(err.dtype)
    n = cloudy.sum(dim=(1, 2, 3)) * err.shape[1]
    rmse_c = ((err * cloudy).sum(dim=(1, 2, 3)) / n.clamp(min=1)).sqrt()
    rmse_c = torch.where(n > 0, rmse_c, torch.full_like(rmse_c, math.nan))
    return {"val_psnr": 20 * torch.log10(1.0 / rmse.clamp(min=1e-10)),
            "val_nrmse_cloudy": rmse_c,
            "val_psnr_cloudy": 20 * torch.log10(1.0 / rmse_c.clamp(min=1e-10))}


def mean_scores(batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, float]:
    """Means over all samples of several batches' :func:`cloudy_region_scores`, NaN left out
    (NaN where no sample had a value)."""
    values: dict[str, list[float]] = {}
    for scores in batches:
        for key, v in scores.items():
            values.setdefault(key, []).extend(float(x) for x in v.reshape(-1).tolist())
    out = {}
    for key, vals in values.items():
        kept = [v for v in vals if math.isfinite(v)]
        out[key] = float(sum(kept) / len(kept)) if kept else math.nan
    return out
