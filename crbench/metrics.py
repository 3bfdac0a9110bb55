"""Per-sample image metrics for cloud removal, and their aggregation across samples.

Conventions (DESIGN.md, "Per-sample results"), stated once here:

- Inputs: ``pred`` and ``target`` of shape (B, 13, H, W) with reflectance in [0, 1] (S2 DN
  clipped to [0, 10000] / 10000). Values up to :data:`VALUE_TOL` outside [0, 1] are clipped
  (rounding of a network's output); anything further out, NaN or inf is a
  :class:`~crbench.errors.UsageError`. ``masks``: (B, L, H, W), 1 = cloud, values in {0, 1}.
- Every metric is computed per sample over all 13 bands and all pixels.
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
(13 terms) and every sum over pixels is accumulated in float64. SSIM's local moments come
from depthwise separable float32 convolutions (channels-last) of images centred by a
per-band level, with the zero padding of the uncentred image restored exactly at the
borders; centring limits the float32 cancellation in E[x^2] - mu^2. The SSIM map agrees
with a float64 computation to ~1e-6 on textured reflectance-like images; on smooth,
high-contrast images (flat areas far from the band's mean level) single pixels may differ
by a few 1e-5 (the mean over pixels much less). Results are (B,) float64 tensors on
``pred``'s device.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .constants import N_S2_BANDS
from .errors import UsageError

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

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
VALUE_TOL = 1e-4  # values this far outside [0, 1] are clipped; further out is an error

_C1 = (SSIM_K1 * 1.0) ** 2  # data range 1
_C2 = (SSIM_K2 * 1.0) ** 2
# Elements (B*13*H*W) per chunk: one 13x256x256 sample on CPU keeps the working set small;
# on GPUs 16 such samples need well under 1 GiB of scratch memory.
_CHUNK_ELEMS = {"cpu": 13 * 256 * 256, "default": 16 * 13 * 256 * 256}


# --------------------------------------------------------------------------- validation


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise UsageError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def _check_image(x: Any, name: str, shape: Sequence[int] | None = None) -> tuple[
        torch.Tensor, bool]:
    """Validate one (B, 13, H, W) image batch; return it and whether it needs clipping."""
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
    lo, hi = (float(v) for v in torch.aminmax(t if t.dtype.is_floating_point else t.float()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int((~torch.isfinite(t)).sum())
        raise UsageError(f"{name} contains {bad} NaN or infinite values; expected values "
                         "in [0, 1]")
    if lo < -VALUE_TOL or hi > 1 + VALUE_TOL:
        raise UsageError(f"{name} has values in [{lo:.6g}, {hi:.6g}], outside [0, 1] beyond "
                         f"the tolerance {VALUE_TOL:g}; expected reflectance scaled to [0, 1] "
                         "(S2 DN clipped to [0, 10000] / 10000)")
    return t, (lo < 0 or hi > 1)


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
    if isinstance(convention, MaskConvention):
        return convention
    try:
        return MaskConvention(str(convention).lower())
    except ValueError:
        choices = ", ".join(c.value for c in MaskConvention)
        raise UsageError(f"convention must be one of {choices}, got {convention!r}") from None


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
    cloudy = m.all(dim=1) if conv is MaskConvention.PAPER else m.any(dim=1)
    return cloudy, ~cloudy


# --------------------------------------------------------------------------- kernels


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1-D Gaussian window (float64, sums to 1) whose outer product is SSIM's window."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_weights(channels: int, device: torch.device, scale: float = 1.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise (1 x 11) and (11 x 1) conv weights for ``channels`` channels (the first
    multiplied by ``scale``)."""
    g = torch.as_tensor(gaussian_window(), dtype=torch.float32, device=device)
    kw = (g * scale).view(1, 1, 1, SSIM_WINDOW).expand(channels, 1, 1, SSIM_WINDOW)
    kh = g.view(1, 1, SSIM_WINDOW, 1).expand(channels, 1, SSIM_WINDOW, 1)
    return kw.contiguous(), kh.contiguous()


class _Blur:
    """Separable zero-padded Gaussian filters (float32 depthwise convolutions).

    ``plain`` gives E[z]; ``var`` gives E[z] + C2 and ``cov`` gives 2 E[z] + C2, folding the
    SSIM constants into the convolution (weights and bias) to save passes over the data.
    """

    def __init__(self, channels: int, h: int, w: int, device: torch.device) -> None:
        self.w1 = _blur_weights(channels, device)
        self.w2 = _blur_weights(channels, device, scale=2.0)
        self.c2 = torch.full((channels,), _C2, dtype=torch.float32, device=device)
        wt = np.outer(_inside_weight(h), _inside_weight(w))
        self.frame = []  # (index, 2 (1 - Wt), (1 - Wt) Wt, Wt - 1) per border strip

        def f32(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.float32, device=device)

        for rows, cols in _frame(h, w):
            ws = wt[rows, cols]
            self.frame.append(((..., rows, cols), f32(2 * (1 - ws)), f32((1 - ws) * ws),
                               f32(ws - 1)))

    def _run(self, z: torch.Tensor, w: tuple[torch.Tensor, torch.Tensor],
             bias: torch.Tensor | None) -> torch.Tensor:
        pad = SSIM_WINDOW // 2
        z = F.conv2d(z, w[0], padding=(0, pad), groups=z.shape[1])
        return F.conv2d(z, w[1], bias, padding=(pad, 0), groups=z.shape[1])

    def plain(self, z: torch.Tensor) -> torch.Tensor:
        return self._run(z, self.w1, None)

    def var(self, z: torch.Tensor) -> torch.Tensor:
        return self._run(z, self.w1, self.c2)

    def cov(self, z: torch.Tensor) -> torch.Tensor:
        return self._run(z, self.w2, self.c2)


class _Work:
    """Float32 scratch buffers reused across the chunks of one call.

    Reusing a few buffers (sliced to the chunk's batch size) instead of allocating fresh
    large tensors for every chunk saves allocation and page-fault time.
    """

    def __init__(self, shape: Sequence[int], device: torch.device) -> None:
        self.shape, self.device = tuple(shape), device
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, n: int, channels_last: bool = False) -> torch.Tensor:
        if name not in self._bufs:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            self._bufs[name] = torch.empty(self.shape, dtype=torch.float32, device=self.device,
                                           memory_format=fmt)
        return self._bufs[name][:n]


def _inside_weight(n: int) -> np.ndarray:
    """Per position along an axis of length n: the sum of the 1-D window taps that fall
    inside the image (exactly 1 where the whole window fits)."""
    g, r = gaussian_window(), SSIM_WINDOW // 2
    out = np.ones(n, dtype=np.float64)
    for i in [*range(min(r, n)), *range(max(r, n - r), n)]:
        out[i] = g[max(0, r - i):SSIM_WINDOW - max(0, i + r + 1 - n)].sum()
    return out


def _frame(h: int, w: int) -> list[tuple[slice, slice]]:
    """Non-overlapping (rows, cols) strips covering the pixels whose window leaves the image."""
    r = SSIM_WINDOW // 2
    top, bottom = slice(0, min(r, h)), slice(max(min(r, h), h - r), h)
    left, right = slice(0, min(r, w)), slice(max(min(r, w), w - r), w)
    middle = slice(top.stop, bottom.start)
    strips = [(top, slice(0, w)), (bottom, slice(0, w)), (middle, left), (middle, right)]
    return [(a, b) for a, b in strips if a.stop > a.start and b.stop > b.start]


def _centred(t: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t - c) written into ``out`` (channels-last), c (b, C, 1, 1) a per-image, per-band
    level (mean of a subsample).

    Local moments are shift invariant, and centring keeps the float32 rounding of
    E[x^2] - mu^2 small where an image is far from 0 (bright, flat areas); the exact zero
    padding is restored by :func:`_fix_border`.
    """
    step = max(1, min(t.shape[-2:]) // 32)
    c = t[..., ::step, ::step].mean(dim=(2, 3), keepdim=True)
    return torch.sub(t, c, out=out), c


def _fix_border(md: tuple[torch.Tensor, torch.Tensor], var: torch.Tensor, cov: torch.Tensor,
                c: tuple[torch.Tensor, torch.Tensor], blur: _Blur
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn moments of centred images (zero-padded) into those of the original images.

    With inside weight Wt (1 in the interior), x = c + d and zero padding of x:
    mu_x = mu_d + c Wt; var_x = var_d + (1 - Wt)(c^2 Wt + 2 c mu_d); similarly for cov.
    ``var`` (sum of both variances) and ``cov`` (twice the covariance) are corrected in
    place on the border strips; returns (mu_x, mu_y), computed in place of ``md``.
    """
    (mdx, mdy), (cx, cy) = md, c
    c_sq, c_xy = cx * cx + cy * cy, 2 * cx * cy
    for s, om2, omw, wm1 in blur.frame:
        dx, dy = mdx[s], mdy[s]
        var[s].addcmul_(om2, torch.mul(dx, cx).addcmul_(dy, cy)).addcmul_(omw, c_sq)
        cov[s].addcmul_(om2, torch.mul(dy, cx).addcmul_(dx, cy)).addcmul_(omw, c_xy)
        dx.addcmul_(wm1, cx)  # becomes mu_x - cx on the strip; + cx below
        dy.addcmul_(wm1, cy)
    return mdx.add_(cx), mdy.add_(cy)


def _ssim_map_chunk(x: torch.Tensor, y: torch.Tensor, blur: _Blur, work: _Work
                    ) -> torch.Tensor:
    """SSIM map (b, C, H, W) of float32 chunks x, y (b, C, H, W), in a channels-last
    scratch buffer (valid until the next chunk)."""
    n = x.shape[0]
    dx, cx = _centred(x, work.get("dx", n, True))
    dy, cy = _centred(y, work.get("dy", n, True))
    s2 = torch.mul(dx, dx, out=work.get("s2", n, True)).addcmul_(dy, dy)
    pxy = torch.mul(dx, dy, out=work.get("pxy", n, True))
    mdx, mdy, var, cov = blur.plain(dx), blur.plain(dy), blur.var(s2), blur.cov(pxy)
    var.addcmul_(mdx, mdx, value=-1).addcmul_(mdy, mdy, value=-1)  # var_x + var_y + C2
    cov.addcmul_(mdx, mdy, value=-2)  # 2 cov_xy + C2
    mx, my = _fix_border((mdx, mdy), var, cov, (cx, cy), blur)
    c1 = torch.tensor(_C1, dtype=torch.float32, device=x.device)
    num = torch.addcmul(c1, mx, my, value=2, out=work.get("s2", n, True)).mul_(cov)
    den = torch.addcmul(c1, mx, mx, out=work.get("pxy", n, True)).addcmul_(my, my).mul_(var)
    return num.div_(den)


def _sam_chunk(x: torch.Tensor, y: torch.Tensor, work: _Work) -> torch.Tensor:
    """Per-pixel spectral angle (b, H, W) of float32 chunks x, y (b, C, H, W).

    angle = 2 atan2(|u - v|, |u + v|) for unit spectra u, v, with |u + v|^2 =
    2(|u|^2 + |v|^2) - |u - v|^2; a zero spectrum becomes the zero vector, so the angle
    is pi/2 against a non-zero spectrum and 0 between two zero spectra.
    """
    n = x.shape[0]
    u, v = work.get("u", n), work.get("v", n)
    nx2 = torch.mul(x, x, out=u).sum(dim=1, keepdim=True)
    ny2 = torch.mul(y, y, out=v).sum(dim=1, keepdim=True)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    rx = torch.where(nx2 > 0, torch.rsqrt(nx2), zero)
    ry = torch.where(ny2 > 0, torch.rsqrt(ny2), zero)
    torch.mul(x, rx, out=u).sub_(torch.mul(y, ry, out=v))
    a2 = u.mul_(u).sum(dim=1)
    units = (nx2 > 0).squeeze(1).to(x.dtype) + (ny2 > 0).squeeze(1).to(x.dtype)
    b2 = (2 * units - a2).clamp_min_(0)
    return 2 * torch.atan2(a2.sqrt(), b2.sqrt())


# --------------------------------------------------------------------------- public maps


def _chunks(shape: Sequence[int], device: torch.device) -> Iterable[tuple[slice, _Work]]:
    """Batch slices of about ``_CHUNK_ELEMS`` elements, with one shared scratch space."""
    b, rest = shape[0], math.prod(shape[1:])
    step = max(1, _CHUNK_ELEMS.get(device.type, _CHUNK_ELEMS["default"]) // max(rest, 1))
    work = _Work((min(b, step), *shape[1:]), device)
    for s in range(0, b, step):
        yield slice(s, min(b, s + step)), work


def _prep(t: torch.Tensor, clip: bool) -> torch.Tensor:
    """A float32 chunk, clipped to [0, 1] when needed (never modifies the caller's data)."""
    out = t.to(dtype=torch.float32)
    if not clip:
        return out
    return out.clamp(0.0, 1.0) if out.data_ptr() == t.data_ptr() else out.clamp_(0.0, 1.0)


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


def _validated_pair(pred: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
    p, clip_p = _check_image(pred, "pred")
    t, clip_t = _check_image(target, "target", shape=p.shape)
    return p, t.to(p.device), clip_p, clip_t


@_exact
def ssim_map(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray
             ) -> torch.Tensor:
    """Per-band, per-pixel SSIM (B, 13, H, W) float32 with the module's conventions.

    ``compute_metrics(...)["ssim"]`` is the mean of this map over bands and pixels.
    """
    p, t, clip_p, clip_t = _validated_pair(pred, target)
    blur = _Blur(*p.shape[1:], p.device)
    out = torch.empty(p.shape, dtype=torch.float32, device=p.device)
    for s, work in _chunks(p.shape, p.device):
        out[s] = _ssim_map_chunk(_prep(p[s], clip_p), _prep(t[s], clip_t), blur, work)
    return out


@_exact
def sam_map(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray
            ) -> torch.Tensor:
    """Per-pixel spectral angle (B, H, W) in radians, float32 (zero norms: see module doc)."""
    p, t, clip_p, clip_t = _validated_pair(pred, target)
    b, _, h, w = p.shape
    out = torch.empty((b, h, w), dtype=torch.float32, device=p.device)
    for s, work in _chunks(p.shape, p.device):
        out[s] = _sam_chunk(_prep(p[s], clip_p), _prep(t[s], clip_t), work)
    return out


# --------------------------------------------------------------------------- metrics


@_exact
def compute_metrics(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                    masks: torch.Tensor | np.ndarray,
                    convention: MaskConvention | str = MaskConvention.PAPER
                    ) -> dict[str, torch.Tensor]:
    """All per-sample metrics of a batch (conventions in the module docstring).

    Args:
        pred: (B, 13, H, W) prediction in [0, 1].
        target: (B, 13, H, W) cloud-free target in [0, 1]; moved to ``pred``'s device.
        masks: (B, L, H, W) cloud masks of the L inputs, 1 = cloud, values in {0, 1}.
        convention: how the masks define cloudy/clear regions (PAPER or TOOLBOX).

    Returns:
        ``{name: (B,) float64 tensor}`` for every name in :data:`METRIC_NAMES`, on
        ``pred``'s device. Empty regions give NaN; PSNR of a perfect prediction is +inf.

    Raises:
        UsageError: naming the argument, for wrong shapes, band count, values outside [0, 1]
            beyond :data:`VALUE_TOL`, masks not in {0, 1}, L = 0 or an unknown convention.
    """
    p, t, clip_p, clip_t = _validated_pair(pred, target)
    conv = _as_convention(convention)
    b, c, h, w = p.shape
    cloudy, clear = region_masks(_check_masks(masks, b, h, w, p.device), conv)
    dev = p.device
    sq = torch.empty((b, h, w), dtype=torch.float32, device=dev)  # band sum of squared error
    ssim_sum = torch.empty(b, dtype=torch.float64, device=dev)
    sam_sum = torch.empty(b, dtype=torch.float64, device=dev)
    blur = _Blur(c, h, w, dev)
    for s, work in _chunks(p.shape, dev):
        x, y = _prep(p[s], clip_p), _prep(t[s], clip_t)
        d = torch.sub(x, y, out=work.get("u", x.shape[0]))
        torch.sum(d.mul_(d), dim=1, out=sq[s])
        ssim = _ssim_map_chunk(x, y, blur, work)
        ssim_sum[s] = ssim.sum(dim=-1).sum(dim=(1, 2), dtype=torch.float64)
        sam_sum[s] = _sam_chunk(x, y, work).sum(dim=-1).sum(dim=1, dtype=torch.float64)
    sq64 = sq.double()
    rmse = torch.sqrt(sq64.sum(dim=(1, 2)) / (c * h * w))
    return {
        "nrmse_all": rmse,
        "nrmse_cloudy": _masked_rmse(sq64, cloudy, c),
        "nrmse_clear": _masked_rmse(sq64, clear, c),
        "psnr": -20.0 * torch.log10(rmse),
        "ssim": ssim_sum / (c * h * w),
        "sam": sam_sum / (h * w),
    }


def _masked_rmse(sq64: torch.Tensor, region: torch.Tensor, bands: int) -> torch.Tensor:
    """RMSE over the pixels of ``region`` (all bands); NaN where the region is empty."""
    n = region.sum(dim=(1, 2)).to(torch.float64)
    total = (sq64 * region).sum(dim=(1, 2))
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
