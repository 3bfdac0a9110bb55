"""Per-sample image metrics (NRMSE all / cloudy / clear, PSNR, SSIM, SAM) and aggregation.

Owns: :mod:`.core` (validation, chunking, the metric formulas, aggregation; the conventions are
in its docstring), :mod:`.ssim` (SSIM's Gaussian filters and the back-end choice,
:class:`~crbench.metrics.ssim.FilterBackend`), :mod:`.native` (the checked wrapper of the
optional C kernel ``crbench.metrics._kernel``, built from ``_kernel.c`` beside it).

May import: ``crbench.errors`` and ``crbench.constants`` only (see README, "Architecture").
The public names are re-exported here: ``from crbench.metrics import compute_metrics``.
"""

from .core import (
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    VALUE_TOL,
    Aggregate,
    MaskConvention,
    aggregate,
    aggregate_frame,
    compute_metrics,
    gaussian_window,
    region_masks,
    sam_map,
    ssim_map,
)
from .ssim import FilterBackend

__all__ = [
    "HIGHER_IS_BETTER", "METRIC_NAMES", "SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_WINDOW",
    "VALUE_TOL", "Aggregate", "FilterBackend", "MaskConvention", "aggregate", "aggregate_frame",
    "compute_metrics", "gaussian_window", "region_masks", "sam_map", "ssim_map",
]
