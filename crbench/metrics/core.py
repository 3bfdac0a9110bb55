"""Per-sample image metrics for cloud removal, and their aggregation across samples.

Conventions (DESIGN.md, "Per-sample results"), stated once here:

- Inputs: ``pred`` and ``target`` of shape (B, 13, H, W) with reflectance in [0, 1] (S2 DN
  clipped to [0, 10000] / 10000). Values up to :data:`VALUE_TOL` outside [0, 1] are clipped
  (rounding of a network's output); anything further out, NaN or inf is a
  :class:`~crbench.errors.UsageError`. ``masks``: (B, L, H, W), 1 = cloud, values in {0, 1}.
- Every metric is computed per sample over all 13 bands and all pixels (``bands``: over those
  bands only, for a method that predicts a subset itself, e.g. STGAN's 4-band variants).
- ``nrmse_all`` = RMSE over every band and pixel (NRMSE = RMSE because data lie in [0, 1]).
- ``nrmse_cloudy`` / ``nrmse_clear``: the same RMSE restricted to the pixels of a region (all
  13 bands of each such pixel). Regions come from the L input masks (:func:`region_masks`):
  :attr:`MaskConvention.PAPER` (default): cloudy = cloudy in every input, clear = clear in at
  least one input. :attr:`MaskConvention.TOOLBOX`: cloudy = cloudy in at least one input,
  clear = clear in all inputs. Under both, clear is the complement of cloudy. An empty region
  gives NaN.
- ``psnr`` = 20 log10(1 / RMSE) in dB, RMSE = ``nrmse_all``. RMSE 0 (a perfect
  reconstruction) gives ``+inf``, as scikit-image does; the value is kept (see aggregation).
- ``ssim``: Gaussian window of 11 taps, sigma 1.5 (normalised to sum 1), zero padding at the
  borders (no renormalisation), K1 = 0.01, K2 = 0.03, data range 1, population (not sample)
  covariance; the SSIM map is averaged over all bands and pixels, borders included.
- ``sam``: per-pixel spectral angle between the 13-band vectors, in radians, in [0, pi/2],
  averaged over the pixels. It is computed as 2 atan2(|u - v|, |u + v|) with u, v the unit
  spectra, which is exact for identical spectra (arccos of a rounded cosine is not). A pixel
  whose spectral norm is 0 has no direction: the angle is 0 if both spectra are zero and
  pi/2 (orthogonal, the largest angle between non-negative spectra) if exactly one is, so SAM
  is never NaN.

Numerics: float32 arithmetic on chunks of the batch (one 13x256x256 sample at a time on
CPU, larger chunks on GPUs), no per-pixel Python loops; per-pixel band sums are float32
(13 terms), SSIM column or row sums are float32 (H or W terms) and every other sum over
pixels is accumulated in float64. Each chunk's values are checked as it is used. SSIM's
local moments (:mod:`crbench.metrics.ssim`) come from separable float32 Gaussian filters of
images centred by a per-band level and padded with the centred value of zero, which
reproduces zero padding exactly; centring limits the float32 cancellation in
E[x^2] - mu^2. The SSIM map agrees with a float64 computation to a few 1e-6 on
reflectance-like images (the mean over pixels much better).

Back ends (:class:`~crbench.metrics.ssim.FilterBackend`, the same formulas and float32
arithmetic in each, tested against each other and the float64 references): on CPU,
crbench's C kernel (:mod:`crbench.metrics.native`, built at install time where a C compiler
exists) streams each sample once for SSIM and once for the squared error and SAM (with a
float32 arctangent of about one rounding); without it, OpenCV filters and torch operations;
on other devices, torch operations and depthwise convolutions. On CPU with several torch
threads, chunks run in a pool of single-threaded workers (see :func:`_run_chunks`).
Results are (B,) float64 tensors on ``pred``'s device.

Aggregation (:func:`aggregate`): the mean over samples ignoring NaN (empty regions) and a
percentile-bootstrap confidence interval from a seeded numpy Generator. ``+inf`` values (PSNR
of a perfect reconstruction) are kept, not dropped or capped: the mean of such a set is
``+inf``, the interval bounds are computed without turning inf into NaN, and
:attr:`Aggregate.n_inf` counts them so a report can say why.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..constants import N_S2_BANDS
from ..errors import UsageError, parse_enum
from . import native
from .ssim import (
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    FilterBackend,
    SsimEngine,
    gaussian_window,
    opencv_threads,
)

__all__ = [
    "HIGHER_IS_BETTER", "METRIC_NAMES", "SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_WINDOW",
    "VALUE_TOL", "Aggregate", "MaskConvention", "aggregate", "aggregate_frame",
    "compute_metrics", "gaussian_window", "region_masks", "sam_map", "ssim_map",
]


class MaskConvention(enum.Enum):
    """How the L input cloud masks define the cloudy and clear regions of a sample."""

    PAPER = "paper"  # cloudy in every input; clear in at least one
    TOOLBOX = "toolbox"  # cloudy in at least one input; clear in all


METRIC_NAMES: tuple[str, ...] = (
    "nrmse_all", "nrmse_cloudy", "nrmse_clear", "psnr", "ssim", "sam",
)
HIGHER_IS_BETTER: dict[str, bool] = {
    "nrmse_all": False, "nrmse_cloudy": False, "nrmse_clear": False,
    "psnr": True, "ssim": True, "sam": False,
}

VALUE_TOL = 1e-4  # values this far outside [0, 1] are clipped; further out is an error

# Elements (B*13*H*W) per chunk: one 13x256x256 sample on CPU keeps the working set small;
# on GPUs 16 such samples need about 0.8 GiB of scratch memory (padded maps, filter outputs).
_CHUNK_ELEMS = {"cpu": 13 * 256 * 256, "default": 16 * 13 * 256 * 256}


# --------------------------------------------------------------------------- validation


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise UsageError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def _check_image(x: Any, name: str, shape: Sequence[int] | None = None) -> torch.Tensor:
    """Validate the shape and dtype of one (B, 13, H, W) image batch; its values are checked
    chunk by chunk as they are used (:func:`_chunk`)."""
    t = _as_tensor(x, name)
    if t.ndim != 4:
        raise UsageError(f"{name} must have shape (B, {N_S2_BANDS}, H, W), "
                         f"got {tuple(t.shape)}")
    if t.shape[1] != N_S2_BANDS:
        raise UsageError(f"{name} has {t.shape[1]} bands (shape {tuple(t.shape)}); "
                         f"metrics need all {N_S2_BANDS} Sentinel-2 bands")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise UsageError(f"{name} has shape {tuple(t.shape)} but pred has {tuple(shape)}; "
                         "they must match")
    if t.numel() == 0:
        raise UsageError(f"{name} is empty (shape {tuple(t.shape)})")
    if t.dtype == torch.bool or t.is_complex():
        raise UsageError(f"{name} has dtype {t.dtype}; expected real values in [0, 1]")
    return t


def _value_error(t: torch.Tensor, name: str) -> UsageError:
    """The error for an image batch with values outside [0, 1] beyond the tolerance, NaN or
    inf, describing the whole batch."""
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        return UsageError(f"{name} contains {bad} NaN or infinite values; expected values "
                          "in [0, 1]")
    lo, hi = (float(v) for v in torch.aminmax(t if t.dtype.is_floating_point else t.float()))
    return UsageError(f"{name} has values in [{lo:.6g}, {hi:.6g}], outside [0, 1] beyond "
                      f"the tolerance {VALUE_TOL:g}; expected reflectance scaled to [0, 1] "
                      "(S2 DN clipped to [0, 10000] / 10000)")


def _chunk(t: torch.Tensor, s: slice, name: str) -> torch.Tensor:
    """Samples ``s`` of a checked image batch as float32 with their values validated and,
    within :data:`VALUE_TOL`, clipped to [0, 1]; never modifies the caller's data.

    Checking each chunk as it is used reads it once, into the cache the metrics then use.
    """
    c = t[s]
    lo, hi = (float(v) for v in torch.aminmax(c if c.dtype.is_floating_point else c.float()))
    out = c.to(dtype=torch.float32)
    if lo >= 0 and hi <= 1:
        return out
    if not (lo >= -VALUE_TOL and hi <= 1 + VALUE_TOL):  # also NaN
        raise _value_error(t, name)
    return out.clamp(0.0, 1.0) if out.data_ptr() == c.data_ptr() else out.clamp_(0.0, 1.0)


def _check_masks(masks: Any, b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """Validate (B, L, H, W) masks with values in {0, 1}; return them as bool on device."""
    m = _as_tensor(masks, "masks")
    if m.ndim != 4:
        raise UsageError(f"masks must have shape (B, L, H, W), got {tuple(m.shape)}")
    if m.shape[1] == 0:
        raise UsageError(f"masks has L = 0 input masks (shape {tuple(m.shape)}); "
                         "need at least one")
    if (m.shape[0], m.shape[2], m.shape[3]) != (b, h, w):
        raise UsageError(f"masks has shape {tuple(m.shape)}; expected (B, L, H, W) with "
                         f"B={b}, H={h}, W={w} as in pred")
    m = m.to(device)
    if m.dtype != torch.bool:
        ok = (m == 0) | (m == 1)
        if not bool(ok.all()):
            bad = m[~ok].flatten()[:3].tolist()
            raise UsageError(f"masks must contain only 0 and 1 (1 = cloud), found values "
                             f"such as {bad}")
        m = m != 0
    return m


def _as_convention(convention: MaskConvention | str) -> MaskConvention:
    value = convention.lower() if isinstance(convention, str) else convention
    return parse_enum(MaskConvention, value, "convention")


# --------------------------------------------------------------------------- regions


def region_masks(masks: torch.Tensor | np.ndarray,
                 convention: MaskConvention | str = MaskConvention.PAPER
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cloudy and clear regions of each sample from its L input cloud masks.

    Args:
        masks: (B, L, H, W), 1 = cloud (bool or numbers in {0, 1}).
        convention: PAPER (cloudy in every input, clear in at least one) or TOOLBOX (cloudy
            in at least one input, clear in all).

    Returns:
        (cloudy, clear), each (B, H, W) bool; under both conventions clear == ~cloudy.

    Raises:
        UsageError: bad shape, L = 0, values other than 0/1 or an unknown convention.
    """
    conv = _as_convention(convention)
    m = _as_tensor(masks, "masks")
    if m.ndim != 4:
        raise UsageError(f"masks must have shape (B, L, H, W), got {tuple(m.shape)}")
    m = _check_masks(m, m.shape[0], m.shape[2], m.shape[3], m.device)
    combine = torch.logical_and if conv is MaskConvention.PAPER else torch.logical_or
    cloudy = m[:, 0].clone()
    for i in range(1, m.shape[1]):  # faster than all/any over a strided dimension
        combine(cloudy, m[:, i], out=cloudy)
    return cloudy, ~cloudy


# --------------------------------------------------------------------------- per pixel


def _sam_parts(x: torch.Tensor, y: torch.Tensor, scratch: torch.Tensor,
               out: Sequence[torch.Tensor]) -> None:
    """Per-pixel |x|^2, |y|^2 and |x |y| / |x| - y|^2 (x taken as 0 where |x| = 0) of
    float32 chunks x, y (b, C, H, W), into ``out`` ((b, H, W) each).

    The last is |y|^2 |u - v|^2 for the unit spectra u, v; it is exactly 0 for identical
    spectra (the scale is exactly 1 and the product is rounded before the subtraction).
    """
    nx2, ny2, w2 = out
    torch.sum(torch.mul(x, x, out=scratch), dim=1, out=nx2)
    torch.sum(torch.mul(y, y, out=scratch), dim=1, out=ny2)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    k = torch.where(nx2 > 0, torch.div(ny2, nx2).sqrt_(), zero).unsqueeze(1)
    w = torch.mul(x, k, out=scratch).sub_(y)
    torch.sum(w.mul_(w), dim=1, out=w2)


def _sam_angles(nx2: torch.Tensor, ny2: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Spectral angles from :func:`_sam_parts`: 2 atan2(|u - v|, |u + v|) with
    |u + v|^2 = 2(|u|^2 + |v|^2) - |u - v|^2, where a zero spectrum is the zero vector:
    pi/2 against a non-zero spectrum, 0 between two zero spectra (overwrites w2)."""
    has_x, has_y = (nx2 > 0).to(w2.dtype), ny2 > 0
    a2 = torch.where(has_y, w2.div_(ny2), has_x)  # |u - v|^2
    b2 = has_x.add_(has_y).mul_(2).sub_(a2).clamp_min_(0)
    return torch.atan2(a2.sqrt_(), b2.sqrt_()).mul_(2)


class _Workspace:
    """Scratch memory of one worker: a float32 chunk (torch path) and an SSIM engine."""

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        self.ssim = SsimEngine(shape, device)
        self.native = self.ssim.backend is FilterBackend.NATIVE
        self.scratch = None if self.native else torch.empty(shape, dtype=torch.float32,
                                                            device=device)

    def sample_sums(self, p: torch.Tensor, t: torch.Tensor, s: slice,
                    cloudy: torch.Tensor | None, sam_out: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample sums of samples ``s`` of the checked batches p, t: (totals, x, y) with
        totals (b, 4) float64 = squared error over all / cloudy / clear pixels (``cloudy``:
        (b, H, W) bool, None for no cloudy pixel) and the spectral angle, and x, y the
        validated float32 chunks (:func:`_chunk`); the angles go to ``sam_out`` if given.

        The C kernel reports the chunks' value range as it reads them: when every value is
        finite and in [0, 1] (the usual case), the separate validating pass is skipped.
        """
        if self.native:
            x, y = (v[s].to(dtype=torch.float32).contiguous() for v in (p, t))
            totals, ranges = self._native_sums(x, y, cloudy, sam_out)
            lo, hi = float(ranges[:, 0].min()), float(ranges[:, 1].max())
            if lo >= 0 and hi <= 1 and bool(torch.isfinite(totals[:, 0]).all()):
                return totals, x, y
        x, y = _chunk(p, s, "pred"), _chunk(t, s, "target")
        if self.native:  # values clipped to [0, 1]: sums again
            return self._native_sums(x, y, cloudy, sam_out)[0], x, y
        return self._torch_sums(x, y, cloudy, sam_out), x, y

    @staticmethod
    def _native_sums(x: torch.Tensor, y: torch.Tensor, cloudy: torch.Tensor | None,
                     sam_out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The C kernel's (totals, ranges) for chunks in any memory layout (the kernel
        reads C-contiguous buffers; ``sam_out`` is always a slice of a fresh tensor)."""
        region = None if cloudy is None else cloudy.contiguous()
        return native.sample_sums(x.contiguous(), y.contiguous(), region, sam_out)

    def _torch_sums(self, x: torch.Tensor, y: torch.Tensor, cloudy: torch.Tensor | None,
                    sam_out: torch.Tensor | None) -> torch.Tensor:
        """:meth:`sample_sums` in torch operations, for float32 chunks x, y (b, C, H, W)."""
        b, _, h, w = x.shape
        scratch = self.scratch[:b]
        sq = torch.sum(torch.sub(x, y, out=scratch).square_(), dim=1)
        parts = torch.empty((3, b, h, w), dtype=torch.float32, device=x.device)
        _sam_parts(x, y, scratch, parts.unbind(0))
        angles = _sam_angles(*parts.unbind(0))
        if sam_out is not None:
            sam_out.copy_(angles)
        region = torch.zeros_like(sq, dtype=torch.bool) if cloudy is None else cloudy
        maps = (sq, torch.where(region, sq, 0), torch.where(region, 0, sq), angles)
        return torch.stack([m.sum(dim=(1, 2), dtype=torch.float64) for m in maps], dim=1)


def _run_chunks(shape: Sequence[int], device: torch.device,
                task: Callable[[slice, _Workspace], None]) -> None:
    """Call ``task(batch_slice, workspace)`` on chunks of about ``_CHUNK_ELEMS`` elements.

    On CPU with several torch threads and several chunks, the chunks run in a pool of
    ``torch.get_num_threads()`` Python threads (torch, OpenCV and the C kernel release the
    GIL) with single-threaded operations: the metrics are many small operations, and an
    OpenMP barrier after each of them costs far more than the work on a busy machine.
    Torch's thread setting is restored afterwards.
    """
    b, rest = shape[0], math.prod(shape[1:])
    step = max(1, _CHUNK_ELEMS.get(device.type, _CHUNK_ELEMS["default"]) // max(rest, 1))
    slices = [slice(s, min(b, s + step)) for s in range(0, b, step)]
    chunk = (min(b, step), *shape[1:])
    threads = torch.get_num_threads()
    workers = min(threads, len(slices)) if device.type == "cpu" else 1
    if workers <= 1:
        work = _Workspace(chunk, device)
        with opencv_threads(threads):
            for s in slices:
                task(s, work)
        return
    spare: queue.SimpleQueue[_Workspace] = queue.SimpleQueue()
    for _ in range(workers):
        spare.put(_Workspace(chunk, device))

    def run(s: slice) -> None:
        work = spare.get()
        try:
            task(s, work)
        finally:
            spare.put(work)

    torch.set_num_threads(1)
    try:
        with opencv_threads(1), ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, slices))
    finally:
        torch.set_num_threads(threads)


def _exact(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` without autograd and with autocast off, so that metrics are computed in
    float32/float64 even when called inside a caller's mixed-precision context."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(torch.autocast("cpu", enabled=False))
            if torch.cuda.is_available():
                stack.enter_context(torch.autocast("cuda", enabled=False))
            return fn(*args, **kwargs)

    return wrapper


def _checked_pair(pred: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p = _check_image(pred, "pred")
    return p, _check_image(target, "target", shape=p.shape).to(p.device)


# --------------------------------------------------------------------------- public maps


@_exact
def ssim_map(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray
             ) -> torch.Tensor:
    """Per-band, per-pixel SSIM (B, 13, H, W) float32 with the module's conventions.

    ``compute_metrics(...)["ssim"]`` is the mean of this map over bands and pixels.
    """
    p, t = _checked_pair(pred, target)
    out = torch.empty(p.shape, dtype=torch.float32, device=p.device)

    def task(s: slice, work: _Workspace) -> None:
        work.ssim.sums(_chunk(p, s, "pred"), _chunk(t, s, "target"), out_map=out[s])

    _run_chunks(p.shape, p.device, task)
    return out


@_exact
def sam_map(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray
            ) -> torch.Tensor:
    """Per-pixel spectral angle (B, H, W) in radians, float32 (zero norms: see module doc)."""
    p, t = _checked_pair(pred, target)
    b, _, h, w = p.shape
    out = torch.empty((b, h, w), dtype=torch.float32, device=p.device)

    def task(s: slice, work: _Workspace) -> None:
        work.sample_sums(p, t, s, None, sam_out=out[s])

    _run_chunks(p.shape, p.device, task)
    return out


# --------------------------------------------------------------------------- metrics


@_exact
def compute_metrics(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                    masks: torch.Tensor | np.ndarray,
                    convention: MaskConvention | str = MaskConvention.PAPER,
                    bands: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """All per-sample metrics of a batch (conventions in the module docstring).

    Args:
        pred: (B, 13, H, W) prediction in [0, 1].
        target: (B, 13, H, W) cloud-free target in [0, 1]; moved to ``pred``'s device.
        masks: (B, L, H, W) cloud masks of the L inputs, 1 = cloud, values in {0, 1}.
        convention: how the masks define cloudy/clear regions (PAPER or TOOLBOX).
        bands: indices (0..12) of the bands to score, every metric then being computed over
            those bands only (RMSEs and SSIM averaged over them, SAM between their spectra);
            None: all 13.

    Returns:
        ``{name: (B,) float64 tensor}`` for every name in :data:`METRIC_NAMES`, on
        ``pred``'s device. Empty regions give NaN; PSNR of a perfect prediction is +inf.

    Raises:
        UsageError: naming the argument, for wrong shapes, band count, values outside [0, 1]
            beyond :data:`VALUE_TOL`, masks not in {0, 1}, L = 0 or an unknown convention.
    """
    p, t = _checked_pair(pred, target)
    if bands is not None:
        idx = _band_index(bands, p.device)
        p, t = p.index_select(1, idx), t.index_select(1, idx)
    conv = _as_convention(convention)
    b, c, h, w = p.shape
    cloudy, _ = region_masks(_check_masks(masks, b, h, w, p.device), conv)
    # per sample: squared error summed over all / cloudy / clear pixels, SAM and SSIM sums
    totals = torch.empty((5, b), dtype=torch.float64, device=p.device)

    def task(s: slice, work: _Workspace) -> None:
        sums, x, y = work.sample_sums(p, t, s, cloudy[s])
        totals[:4, s] = sums.T
        totals[4, s] = work.ssim.sums(x, y)

    _run_chunks(p.shape, p.device, task)
    n_cloudy = cloudy.sum(dim=(1, 2)).to(torch.float64)
    rmse = torch.sqrt(totals[0] / (c * h * w))
    return {
        "nrmse_all": rmse,
        "nrmse_cloudy": _region_rmse(totals[1], n_cloudy, c),
        "nrmse_clear": _region_rmse(totals[2], h * w - n_cloudy, c),
        "psnr": -20.0 * torch.log10(rmse),
        "ssim": totals[4] / (c * h * w),
        "sam": totals[3] / (h * w),
    }


def _band_index(bands: Sequence[int], device: torch.device) -> torch.Tensor:
    """``bands`` as an index tensor after checking them: distinct integers in 0..12."""
    values = list(bands)
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if not (values and ints and all(0 <= v < N_S2_BANDS for v in values)
            and len(set(values)) == len(values)):
        raise UsageError(f"bands: bad value {values!r}; expected distinct band indices in "
                         f"0..{N_S2_BANDS - 1}")
    return torch.tensor(values, dtype=torch.long, device=device)


def _region_rmse(total: torch.Tensor, n: torch.Tensor, bands: int) -> torch.Tensor:
    """RMSE from a region's summed squared error and pixel count; NaN where it is empty."""
    nan = torch.full_like(total, float("nan"))
    return torch.where(n > 0, torch.sqrt(total / (bands * n.clamp_min(1))), nan)


# --------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class Aggregate:
    """A metric summarised over samples.

    Attributes:
        mean: mean over the non-NaN values (+inf if any value is +inf; NaN if none).
        low: lower bound of the percentile-bootstrap confidence interval.
        high: upper bound of the interval.
        n: number of values used (not NaN).
        n_nan: number of NaN values ignored (e.g. samples with an empty region).
        n_inf: number of infinite values among the n used (e.g. PSNR of a perfect sample).
    """

    mean: float
    low: float
    high: float
    n: int
    n_nan: int
    n_inf: int = 0


def _quantile_sorted(s: np.ndarray, q: float) -> float:
    """Linear-interpolated quantile of sorted ``s`` (numpy's default) that keeps inf as inf
    where numpy would give NaN (inf - inf)."""
    pos = q * (len(s) - 1)
    i = math.floor(pos)
    f = pos - i
    if f == 0 or i + 1 >= len(s) or s[i] == s[i + 1]:
        return float(s[i])
    if math.isinf(s[i + 1]) or math.isinf(s[i]):
        return float(s[i + 1] if math.isinf(s[i + 1]) else s[i])
    return float(s[i] + f * (s[i + 1] - s[i]))


def _boot_means(v: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of n_boot resamples with replacement, vectorised in memory-bounded blocks."""
    n = len(v)
    rows = max(1, (1 << 22) // n)
    out = np.empty(n_boot, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        for s in range(0, n_boot, rows):
            m = min(rows, n_boot - s)
            out[s:s + m] = v[rng.integers(0, n, size=(m, n))].mean(axis=1)
    return out


def aggregate(values: Any, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> Aggregate:
    """Mean over samples ignoring NaN, with a percentile-bootstrap confidence interval.

    Args:
        values: per-sample values (1-D: list, numpy array, torch tensor or pandas Series).
        n_boot: number of bootstrap resamples (>= 1).
        ci: confidence level in (0, 1), e.g. 0.95 for a 95 % interval.
        seed: seed of the numpy Generator (same inputs and seed give the same interval).

    Returns:
        Aggregate(mean, low, high, n, n_nan, n_inf); with no usable value mean, low and high
        are NaN; with one, low == high == mean.

    Raises:
        UsageError: values not 1-D numbers, n_boot < 1 or ci outside (0, 1).
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise UsageError(f"values must be numbers, got {type(values).__name__}") from None
    if a.ndim != 1:
        raise UsageError(f"values must be 1-D (one value per sample), got shape {a.shape}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise UsageError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if not 0 < ci < 1:
        raise UsageError(f"ci must be in (0, 1) (e.g. 0.95), got {ci!r}")
    nan = np.isnan(a)
    v = a[~nan]
    n, n_nan, n_inf = len(v), int(nan.sum()), int(np.isinf(v).sum())
    if n == 0:
        return Aggregate(math.nan, math.nan, math.nan, 0, n_nan, 0)
    with np.errstate(invalid="ignore"):
        mean = float(v.mean())
    if n == 1:
        return Aggregate(mean, mean, mean, 1, n_nan, n_inf)
    boot = np.sort(_boot_means(v, n_boot, np.random.default_rng(seed)))
    alpha = (1 - ci) / 2
    return Aggregate(mean, _quantile_sorted(boot, alpha), _quantile_sorted(boot, 1 - alpha),
                     n, n_nan, n_inf)


def aggregate_frame(df: Any, by: Sequence[str] = (), metrics: Sequence[str] | None = None,
                    n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> Any:
    """:func:`aggregate` every metric column of a per-sample table, per group.

    Args:
        df: pandas DataFrame with one row per sample (DESIGN.md result rows).
        by: grouping columns, e.g. ``["method", "L"]``; empty for one overall row.
        metrics: metric columns; default the names of :data:`METRIC_NAMES` present in df.
        n_boot, ci, seed: as in :func:`aggregate` (the same seed for every group).

    Returns:
        DataFrame with one row per group: the ``by`` columns, ``n_samples``, and for each
        metric ``m``: ``m`` (mean), ``m_low``, ``m_high``, ``m_n``, ``m_n_nan``, ``m_n_inf``.

    Raises:
        UsageError: a named column is missing.
    """
    import pandas as pd

    by = list(by)
    cols = [m for m in METRIC_NAMES if m in df.columns] if metrics is None else list(metrics)
    missing = [c for c in [*by, *cols] if c not in df.columns]
    if missing:
        raise UsageError(f"columns {missing} not in the table (has {list(df.columns)})")
    groups = df.groupby(by, sort=True, dropna=False) if by else [((), df)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row["n_samples"] = len(g)
        for m in cols:
            r = aggregate(g[m].to_numpy(dtype=np.float64), n_boot=n_boot, ci=ci, seed=seed)
            row.update({m: r.mean, f"{m}_low": r.low, f"{m}_high": r.high, f"{m}_n": r.n,
                        f"{m}_n_nan": r.n_nan, f"{m}_n_inf": r.n_inf})
        rows.append(row)
    return pd.DataFrame(rows)
