"""Clouds of the synthetic generator: coherent fields, cloud radiometry, shadows, truth.

One date of one patch gets a :class:`CloudPlan` (target coverage, brightness, sun shift, haze
and cirrus flags) and :func:`apply_clouds` turns a clear reflectance image into the cloudy
observation plus a ground-truth class map (:class:`TruthClass`).

Radiometry (top-of-atmosphere reflectance) follows typical Sentinel-2 observations: thick
water clouds are bright and spectrally flat in B01-B8A (0.4-0.6), lower in B09 and in the
SWIR bands B11/B12 (water/ice absorption) and, when their tops are high, clearly above the
clear-sky level in the cirrus band B10 (0.02-0.2). Thin haze is a partial blend of a bluish
path-radiance spectrum; cirrus adds 0.01-0.05 in B10 and a faint veil elsewhere. Shadows
darken the ground where the cloud field projects away from the sun: the shift follows the
solar azimuth and zenith of the date at the ROI's latitude at the ~10:30 overpass (longer
shadows in winter), with cloud heights scaled to the patch size.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .noise import fractal_noise


class TruthClass(enum.IntEnum):
    """Per-pixel ground-truth classes of the cloud maps in ROOT/_truth."""

    CLEAR = 0
    THICK = 1
    THIN = 2
    CIRRUS = 3
    SHADOW = 4


#                   B01   B02   B03   B04   B05   B06   B07   B08   B8A   B09   B10   B11   B12
_THICK = np.array([0.50, 0.48, 0.47, 0.46, 0.47, 0.48, 0.48, 0.49, 0.48, 0.27, 0.10, 0.33, 0.21],
                  dtype=np.float32)
_HAZE = np.array([0.40, 0.37, 0.34, 0.31, 0.30, 0.29, 0.28, 0.28, 0.27, 0.12, 0.01, 0.16, 0.09],
                 dtype=np.float32)
_CIRRUS = np.array([0.30, 0.29, 0.28, 0.28, 0.28, 0.28, 0.28, 0.28, 0.28, 0.10, 0.0, 0.22, 0.14],
                   dtype=np.float32)
# Fraction of direct light lost in a shadow, per band (diffuse sky light is bluish).
_SHADOW_LOSS = np.array([0.45, 0.5, 0.55, 0.6, 0.62, 0.65, 0.66, 0.67, 0.67, 0.67, 0.0, 0.7, 0.7],
                        dtype=np.float32)
B10 = 10

THICK_ALPHA = 0.5  # opacity above which a cloud pixel is "thick"


@dataclass(frozen=True)
class CloudPlan:
    """Random choices for one date of one patch."""

    coverage: float  # target fraction of the main cloud layer (0 = clear, 1 = overcast)
    brightness: float  # scale of the thick-cloud spectrum
    b10: float  # cirrus-band reflectance of thick cloud tops
    edge: float  # width of the thin cloud rim (in field std units)
    shift: tuple[int, int]  # shadow offset (dy, dx) in pixels
    haze: float  # opacity of a thin haze layer (0 = none)
    cirrus: float  # B10 signal of a cirrus layer (0 = none)


def sun_position(lat: float, doy: int, hour: float = 10.5) -> tuple[float, float]:
    """Solar zenith and azimuth (radians; azimuth clockwise from north) at local solar
    ``hour`` (Sentinel-2 crosses the equator at about 10:30)."""
    phi = np.radians(lat)
    decl = np.radians(23.44) * np.sin(2 * np.pi * (284 + doy) / 365.0)
    h = np.radians(15.0 * (hour - 12.0))
    cos_z = np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(h)
    zen = float(np.arccos(np.clip(cos_z, -1.0, 1.0)))
    az = float(np.arctan2(-np.sin(h) * np.cos(decl),
                          (np.sin(decl) - cos_z * np.sin(phi)) / max(np.cos(phi), 1e-6)))
    return zen, az % (2 * np.pi)


def _shadow_shift(rng: np.random.Generator, size: int, lat: float, doy: int
                  ) -> tuple[int, int]:
    """(dy, dx) in pixels from a cloud to its shadow: away from the sun, longer when the sun
    is low. Cloud heights are scaled to the patch so that shadows stay visible in it."""
    zen, az = sun_position(lat, doy)
    height = rng.uniform(0.03, 0.08) * size
    dist = min(height * np.tan(min(zen, np.radians(80))), 0.3 * size)
    away = az + np.pi
    return round(-dist * np.cos(away)), round(dist * np.sin(away))


def plan_dates(rng: np.random.Generator, size: int, persistent: bool, lat: float,
               doys: Sequence[int]) -> list[CloudPlan]:
    """Cloud plans for the dates (days of year ``doys``) of one patch at latitude ``lat``.

    Coverage: clear with p=0.22, overcast with p=0.14, else Beta(0.85, 0.85); a patch gets at
    least one clear date unless ``persistent`` (persistently cloudy), in which case every date
    carries at least 12 % of cloud with thick cores.
    """
    n = len(doys)
    kind = rng.choice(3, size=n, p=(0.22, 0.14, 0.64))
    cov = np.where(kind == 0, 0.0, np.where(kind == 1, 1.0, rng.beta(0.85, 0.85, size=n)))
    if persistent:
        cov = np.maximum(cov, rng.uniform(0.12, 0.35, size=n))
    elif not (cov == 0).any():
        cov[rng.integers(n)] = 0.0
    plans = []
    for t in range(n):
        clear = cov[t] == 0.0
        plans.append(CloudPlan(
            coverage=float(cov[t]),
            brightness=float(rng.uniform(0.8, 1.25)),
            b10=float(rng.uniform(0.03, 0.18)),
            edge=float(rng.uniform(0.06, 0.15)),
            shift=_shadow_shift(rng, size, lat, int(doys[t])),
            haze=0.0 if clear or rng.random() > 0.25 else float(rng.uniform(0.05, 0.25)),
            cirrus=0.0 if clear or rng.random() > 0.2 else float(rng.uniform(0.006, 0.03)),
        ))
    return plans


def _opacity(field: np.ndarray, inner: np.ndarray, coverage: float, edge: float) -> np.ndarray:
    """Opacity in [0, 1] from a field, thresholded so ``coverage`` of ``inner`` is cloud."""
    if coverage <= 0.0:
        return np.zeros_like(field)
    theta = field.min() - 1e-6 if coverage >= 1.0 else np.quantile(inner, 1.0 - coverage)
    return np.where(field > theta, 1.0 - np.exp(-(field - theta) / edge), 0.0)


def apply_clouds(clear: np.ndarray, plan: CloudPlan, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Cloudy observation (13, H, W) float32 and truth map (H, W) uint8 for one date."""
    size = clear.shape[-1]
    if plan.coverage == 0.0:
        return clear, np.zeros(clear.shape[1:], dtype=np.uint8)
    m = max(abs(plan.shift[0]), abs(plan.shift[1]))
    n = size + 2 * m
    field = fractal_noise(rng, n, n, beta=rng.uniform(1.8, 2.4))
    inner = field[m:m + size, m:m + size]
    alpha_full = _opacity(field, inner, plan.coverage, plan.edge)
    alpha = alpha_full[m:m + size, m:m + size]
    dy, dx = plan.shift
    shadow = alpha_full[m - dy:m - dy + size, m - dx:m - dx + size]
    out = clear * (1.0 - _SHADOW_LOSS[:, None, None] * np.clip(shadow, 0, 1)[None])
    tops = plan.brightness * (1.0 + 0.1 * np.clip(inner - inner.mean(), -2, 2))
    cloud = _THICK[:, None, None] * tops[None]
    cloud[B10] = plan.b10 * tops
    out = out * (1.0 - alpha[None]) + cloud * alpha[None]
    truth = np.zeros((size, size), dtype=np.uint8)
    truth[shadow > 0.3] = TruthClass.SHADOW
    if plan.cirrus > 0:
        out, cmask = _cirrus(out, plan.cirrus, rng)
        truth[cmask] = TruthClass.CIRRUS
    if plan.haze > 0:
        out, hmask = _haze(out, plan.haze, rng)
        truth[hmask] = TruthClass.THIN
    truth[alpha > 0] = TruthClass.THIN
    truth[alpha > THICK_ALPHA] = TruthClass.THICK
    return out.astype(np.float32), truth


def _haze(img: np.ndarray, strength: float, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """Blend a thin haze veil over part of the image."""
    size = img.shape[-1]
    f = fractal_noise(rng, size, size, beta=2.2)
    a = strength * np.clip(f - np.quantile(f, rng.uniform(0.3, 0.7)), 0, 1)
    out = img * (1 - a[None]) + _HAZE[:, None, None] * a[None]
    return out, a > 0.04


def _cirrus(img: np.ndarray, b10: float, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """Add streaky cirrus: strong in B10, a faint veil in the other bands."""
    size = img.shape[-1]
    f = fractal_noise(rng, size, size, beta=1.9, aniso=4.0, angle=rng.uniform(0, np.pi))
    d = np.clip((f - np.quantile(f, rng.uniform(0.3, 0.6))) / 1.2, 0, 1)
    # Thin ice cloud: its B10 signal b10 comes with a veil of about 0.6 * b10 in B01-B8A.
    out = img + 2.0 * b10 * d[None] * _CIRRUS[:, None, None]
    out[B10] += b10 * d
    return out, d * b10 > 0.006
