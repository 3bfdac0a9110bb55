"""SSIM engine of :mod:`crbench.metrics` (private; conventions in that module's docstring).

SSIM needs four Gaussian-filtered maps per band: the means of x and y, the mean of
x^2 + y^2 and the mean of x y (only the sum of both variances enters the denominator). The
images are centred by a per-image, per-band level c (local moments are shift invariant;
centring keeps the float32 cancellation in E[x^2] - mu^2 small) and written into a buffer
with a 5-pixel halo that holds the centred value of the zero padding, -c. Filtering
without further padding therefore reproduces zero padding of the original images exactly,
with no border correction. The constants C2 (and C2 / 2 for the covariance) are added to
the product maps before filtering, halo included, which adds them to the filtered maps.

Three back ends (:class:`FilterBackend`, chosen by :func:`filter_backend`) compute the
same thing:

- CPU, fastest: crbench's own C kernel (:mod:`crbench.metrics.native`), which streams each
  plane once: the four moments of a row are blurred horizontally into a ring of 11 rows
  that stays in the L1 cache, and each output row is the vertical blur of the ring
  followed by the SSIM formula. Used whenever the kernel was built at install time.
- CPU without the kernel: OpenCV's separable float32 filter (``cv2.sepFilter2D``; OpenCV comes with
  s2cloudless), a few bands at a time so that the working set stays in cache; the four
  maps of those bands are stacked into one tall image (each plane's halo rows keep the
  planes apart). It is faster than torch's depthwise convolutions on CPU and needs no
  channels-last copies.
- Any device (used on GPUs, or on CPU if OpenCV is missing): depthwise ``conv2d`` in torch.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import native

try:  # a dependency of s2cloudless, so normally present
    import cv2
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
C1 = (SSIM_K1 * 1.0) ** 2  # data range 1
C2 = (SSIM_K2 * 1.0) ** 2
HALO = SSIM_WINDOW // 2


class FilterBackend(enum.Enum):
    """How SSIM's Gaussian filters (and, for NATIVE, the per-pixel band sums) are computed."""

    NATIVE = "native"  # crbench's C kernel, CPU
    OPENCV = "opencv"  # cv2.sepFilter2D, CPU
    TORCH = "torch"  # depthwise conv2d, any device


def filter_backend(device: torch.device) -> FilterBackend:
    """The back end used for tensors on ``device``: the C kernel on CPU when it was built,
    else OpenCV on CPU when installed, else torch."""
    if device.type == "cpu":
        if native.available():
            return FilterBackend.NATIVE
        if cv2 is not None:
            return FilterBackend.OPENCV
    return FilterBackend.TORCH


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1-D Gaussian window (float64, sums to 1) whose outer product is SSIM's window."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def centring_levels(t: torch.Tensor) -> torch.Tensor:
    """Per-image, per-band level (b, C, 1, 1) of a (b, C, H, W) batch: the mean of a
    subsample (any level is exact; one near the image's values limits rounding)."""
    step = max(1, min(t.shape[-2:]) // 32)
    return t[..., ::step, ::step].mean(dim=(2, 3), keepdim=True)


@contextlib.contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """Let OpenCV use ``n`` threads, restoring its setting afterwards (no-op without it)."""
    if cv2 is None:
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class SsimEngine:
    """Per-sample SSIM sums (and optionally maps) of float32 chunks of one shape.

    Args:
        shape: (b, C, H, W), the largest chunk passed to :meth:`sums`.
        device: where the chunks live.
        group: bands filtered per OpenCV call (a few keep the working set in cache).
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device, group: int = 2) -> None:
        b, c, h, w = shape
        self.backend = filter_backend(device)
        self.g = gaussian_window().astype(np.float32)
        if self.backend is FilterBackend.NATIVE:
            return
        f32 = {"dtype": torch.float32, "device": device}
        self.c1 = torch.tensor(C1, **f32)
        self.c1x2 = torch.tensor(2 * C1, **f32)
        self.c2 = torch.tensor(C2, **f32)
        self.c2_half = torch.tensor(C2 / 2, **f32)
        opencv = self.backend is FilterBackend.OPENCV
        self.group = max(1, min(group, b * c)) if opencv else b * c
        # band-major: plane p's four maps (dx, dy, dx^2 + dy^2 + C2, dx dy + C2 / 2)
        self.d = torch.empty((self.group, 4, h + 2 * HALO, w + 2 * HALO), **f32)
        self.t = torch.empty((self.group, h, w), **f32)
        self.u = torch.empty((self.group, h, w), **f32)
        if opencv:
            self.e = torch.empty_like(self.d)
        else:
            k = torch.as_tensor(self.g, **f32)
            self.kw = k.view(1, 1, 1, -1).expand(4 * b * c, 1, 1, SSIM_WINDOW).contiguous()
            self.kh = k.view(1, 1, -1, 1).expand(4 * b * c, 1, SSIM_WINDOW, 1).contiguous()

    def sums(self, x: torch.Tensor, y: torch.Tensor, out_map: torch.Tensor | None = None
             ) -> torch.Tensor:
        """SSIM summed over bands and pixels, (b,) float64, for float32 chunks x, y of shape
        (b, C, H, W); the map is written into ``out_map`` (b, C, H, W) when given."""
        b, c = x.shape[:2]
        n = b * c
        if self.backend is FilterBackend.NATIVE:
            planes = native.ssim_sums(
                x.reshape(n, *x.shape[2:]).contiguous(), y.reshape(n, *y.shape[2:]).contiguous(),
                self.g, None if out_map is None else out_map.view(n, *out_map.shape[2:]))
            return planes.view(b, c).sum(dim=1)
        levels = torch.cat((centring_levels(x), centring_levels(y)), dim=2).view(n, 2, 1, 1)
        x, y = x.flatten(0, 1), y.flatten(0, 1)
        sums = torch.empty(n, dtype=torch.float64, device=x.device)
        maps = None if out_map is None else out_map.view(n, *out_map.shape[2:])
        for k in range(0, n, self.group):
            s = slice(k, min(n, k + self.group))
            self._fill(x[s], y[s], levels[s])
            ratio = self._tail(self._blur(s.stop - s.start), levels[s])
            # float32 row sums (W terms), float64 from there on
            torch.sum(ratio.sum(dim=2), dim=1, dtype=torch.float64, out=sums[s])
            if maps is not None:
                maps[s].copy_(ratio)
        return sums.view(b, c).sum(dim=1)

    def _fill(self, x: torch.Tensor, y: torch.Tensor, levels: torch.Tensor) -> None:
        """Centred images with their halo, and the two product maps, into ``self.d``.

        x, y: (P, H, W) planes; levels: (P, 2, 1, 1) centring levels of x and y.
        """
        d, r = self.d[:x.shape[0]], HALO
        neg = levels.neg()  # the centred value of the zero padding
        pair = d[:, :2]
        for rows, cols in ((slice(0, r), slice(None)), (slice(-r, None), slice(None)),
                           (slice(r, -r), slice(0, r)), (slice(r, -r), slice(-r, None))):
            strip = pair[:, :, rows, cols]
            strip.copy_(neg.expand(strip.shape))
        inner = (slice(None), slice(r, -r), slice(r, -r))
        torch.sub(x, levels[:, 0], out=d[:, 0][inner])
        torch.sub(y, levels[:, 1], out=d[:, 1][inner])
        torch.addcmul(self.c2, d[:, 0], d[:, 0], out=d[:, 2]).addcmul_(d[:, 1], d[:, 1])
        torch.addcmul(self.c2_half, d[:, 0], d[:, 1], out=d[:, 3])

    def _blur(self, n: int) -> torch.Tensor:
        """Filtered maps of the first n planes of ``self.d``, (n, 4, H, W) (scratch)."""
        src, r = self.d[:n], HALO
        if self.backend is FilterBackend.OPENCV:
            dst = self.e[:src.shape[0]]
            wp = src.shape[-1]
            cv2.sepFilter2D(src.reshape(-1, wp).numpy(), cv2.CV_32F, self.g, self.g,
                            dst=dst.view(-1, wp).numpy(), borderType=cv2.BORDER_CONSTANT)
            return dst[..., r:-r, r:-r]
        n = 4 * src.shape[0]
        z = F.conv2d(src.reshape(1, n, *src.shape[-2:]), self.kw[:n], groups=n)
        z = F.conv2d(z, self.kh[:n], groups=n)
        return z.view(-1, 4, *z.shape[-2:])

    def _tail(self, m: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """SSIM map (P, H, W) from filtered maps m (P, 4, H, W) = (mu_dx, mu_dy,
        E[dx^2 + dy^2] + C2, E[dx dy] + C2 / 2) of the centred images and their levels
        (P, 2, 1, 1); overwrites m; returns a scratch view."""
        a, b, s, p = m.unbind(1)
        p.addcmul_(a, b, value=-1)  # cov_xy + C2 / 2
        s.addcmul_(a, a, value=-1).addcmul_(b, b, value=-1)  # var_x + var_y + C2
        m[:, :2].add_(levels)  # mu_x, mu_y
        n = a.shape[0]
        num = torch.addcmul(self.c1x2, a, b, value=4, out=self.t[:n]).mul_(p)  # 2A1 A2/2
        den = torch.addcmul(self.c1, a, a, out=self.u[:n]).addcmul_(b, b).mul_(s)
        return num.div_(den)
