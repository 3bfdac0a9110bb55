"""Fused CPU kernels of :mod:`crbench.metrics`, from the optional C extension.

``crbench/metrics/_kernel.c`` is compiled when crbench is installed (``pip install .`` or
``-e .``); where no C compiler is available the install still succeeds without it, and the
metrics run on OpenCV and torch instead: the same conventions and the same float32
arithmetic, 2-3x slower on CPU. :func:`available` says whether the kernel is
there; the chosen back end is :func:`crbench.metrics.ssim.filter_backend`.

The kernel reads raw addresses, so every buffer handed to it is checked here first
(device, dtype, contiguity, shape); it releases the GIL, so the worker threads of
:func:`crbench.metrics.core._run_chunks` run it in parallel.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
import torch

try:
    from . import _kernel
except ImportError:  # pragma: no cover - built without a C compiler
    _kernel = None

__all__ = ["available", "sample_sums", "ssim_sums"]


def available() -> bool:
    """Whether the compiled kernel was built and can be used."""
    return _kernel is not None


def _address(t: torch.Tensor, name: str, dtype: torch.dtype, shape: Sequence[int]) -> int:
    """The data address of ``t`` after checking that the kernel may read or write it."""
    if (t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous()
            or tuple(t.shape) != tuple(shape)):
        raise ValueError(f"{name}: the metrics kernel needs a contiguous CPU {dtype} tensor "
                         f"of shape {tuple(shape)}, got {t.dtype} {tuple(t.shape)} on "
                         f"{t.device} (contiguous: {t.is_contiguous()})")
    return t.data_ptr()


def _kernel_or_raise() -> ModuleType:
    if _kernel is None:
        raise RuntimeError("crbench.metrics._kernel is not built (no C compiler at install "
                           "time); crbench.metrics uses OpenCV/torch instead")
    return _kernel


def ssim_sums(x: torch.Tensor, y: torch.Tensor, window: np.ndarray,
              out_map: torch.Tensor | None = None) -> torch.Tensor:
    """SSIM summed over the pixels of each plane of x and y.

    Args:
        x, y: (P, H, W) float32 planes, values in [0, 1], C-contiguous, on CPU.
        window: the 11-tap float32 Gaussian window (symmetric, sums to 1).
        out_map: optional (P, H, W) float32 tensor that receives the SSIM map.

    Returns:
        (P,) float64 sums.
    """
    kernel = _kernel_or_raise()
    shape = tuple(x.shape)
    if len(shape) != 3:
        raise ValueError(f"x must be (P, H, W) planes, got shape {shape}")
    g = np.ascontiguousarray(window, dtype=np.float32)
    if g.shape != (11,) or not np.array_equal(g, g[::-1]):
        raise ValueError(f"window must be a symmetric 11-tap window, got {g!r}")
    sums = torch.empty(shape[0], dtype=torch.float64)
    addresses = (_address(x, "x", torch.float32, shape), _address(y, "y", torch.float32, shape))
    map_address = 0 if out_map is None else _address(out_map, "out_map", torch.float32, shape)
    kernel.ssim_sums(*addresses, *shape, g.ctypes.data, sums.data_ptr(), map_address)
    return sums


def sample_sums(x: torch.Tensor, y: torch.Tensor, cloudy: torch.Tensor | None = None,
                sam_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample sums of the squared error and of the spectral angle, and value ranges.

    Args:
        x, y: (b, C, H, W) float32, values in [0, 1], C-contiguous, on CPU.
        cloudy: (b, H, W) bool region (None: no pixel is cloudy).
        sam_out: optional (b, H, W) float32 tensor that receives the per-pixel angles.

    Returns:
        (totals, ranges): totals (b, 4) float64, the squared error summed over all bands and
        all / cloudy / clear pixels, and the spectral angle (radians) summed over pixels;
        ranges (b, 2) float32, the smallest and largest value of x and y together (NaN and
        inf show as non-finite totals). The angle follows ``crbench.metrics.core._sam_parts``
        and ``_sam_angles`` (exact 0 for identical spectra, zero spectra as documented
        there) with a float32 arctangent of about one rounding.
    """
    kernel = _kernel_or_raise()
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise ValueError(f"x must be (b, C, H, W), got shape {shape}")
    b, c, h, w = shape
    addresses = (_address(x, "x", torch.float32, shape), _address(y, "y", torch.float32, shape))
    region = 0 if cloudy is None else _address(cloudy, "cloudy", torch.bool, (b, h, w))
    sam = 0 if sam_out is None else _address(sam_out, "sam_out", torch.float32, (b, h, w))
    totals = torch.empty((b, 4), dtype=torch.float64)
    ranges = torch.empty((b, 2), dtype=torch.float32)
    kernel.sample_sums(*addresses, region, b, c, h, w, totals.data_ptr(), ranges.data_ptr(),
                       sam)
    return totals, ranges
