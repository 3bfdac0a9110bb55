"""Cloud-free surface of the synthetic generator: land cover, 13-band reflectance, SAR.

Reflectances are top-of-atmosphere-like (Sentinel-2 L1C, as in SEN12MS-CR-TS), in
reflectance units (DN / 10000). Class spectra follow typical published Sentinel-2 values:
green vegetation has a red edge (B04 low, B08/B8A high), water is dark in NIR and SWIR, bare
soil rises steadily towards SWIR; B01 and B09 carry the atmospheric path signal and B10
(cirrus band, 1375 nm) stays near zero over clear land.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from .noise import fbm, hash_uniform, key_hash


class LandCover(enum.IntEnum):
    """Land-cover classes of the synthetic scenes (values stored in the truth files)."""

    WATER = 0
    FOREST = 1
    CROPLAND = 2
    GRASSLAND = 3
    URBAN = 4
    BARE = 5


# Reflectance x 10000 (DN of Sentinel-2 L1C):
#                  B01   B02   B03   B04   B05   B06   B07   B08   B8A   B09  B10   B11   B12
_SPECTRA = {
    "water":          (1000,  750,  550,  320,  260,  210,  190,  160,  140,   60,  10,   60,   40),
    "forest_green":   (1050,  750,  680,  360,  850, 2150, 2680, 2900, 3000, 1050,  30, 1500,  680),
    "forest_dormant": (1050,  750,  660,  500,  800, 1600, 1900, 2050, 2120,  800,  30, 1500,  800),
    "crop_green":     (1050,  750,  880,  450, 1200, 2950, 3750, 4050, 4200, 1300,  35, 2150, 1050),
    "soil":           (1250, 1050, 1250, 1550, 1800, 2000, 2150, 2280, 2380,  850,  35, 3000, 2450),
    "grass_green":    (1050,  780,  900,  600, 1200, 2350, 2800, 3000, 3100, 1050,  35, 2350, 1350),
    "grass_dry":      (1150,  950, 1100, 1250, 1600, 1900, 2050, 2150, 2220,  800,  35, 2900, 2200),
    "urban":          (1350, 1150, 1150, 1200, 1400, 1600, 1700, 1800, 1880,  680,  40, 2050, 1750),
    "bare":           (1400, 1250, 1600, 2150, 2450, 2650, 2800, 2920, 3000, 1100,  45, 3800, 3300),
}
SPECTRA: dict[str, np.ndarray] = {
    k: np.asarray(v, dtype=np.float32) / 10000 for k, v in _SPECTRA.items()}

# SAR backscatter in dB: (VV, VH) for bare/dormant state and the change at full greenness.
_SAR_BASE = {
    LandCover.WATER: (-22.0, -28.0), LandCover.FOREST: (-8.0, -14.0),
    LandCover.CROPLAND: (-14.0, -22.0), LandCover.GRASSLAND: (-13.0, -20.0),
    LandCover.URBAN: (-4.0, -11.0), LandCover.BARE: (-16.0, -25.0),
}
_SAR_GREEN = {
    LandCover.WATER: (0.0, 0.0), LandCover.FOREST: (0.8, 1.0), LandCover.CROPLAND: (3.5, 5.5),
    LandCover.GRASSLAND: (1.5, 2.5), LandCover.URBAN: (0.0, 0.0), LandCover.BARE: (0.0, 0.0),
}
ENL = 4.4  # equivalent number of looks of Sentinel-1 IW GRD


@dataclass(frozen=True)
class Climate:
    """Per-ROI climate: hemisphere and latitude drive phenology and land-cover mix."""

    lat: float
    water: float = 0.12
    bias: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # forest, crop, grass, bare
    urban: float = 0.06

    @property
    def peak_doy(self) -> float:
        return 200.0 if self.lat >= 0 else 17.0

    @property
    def seasonality(self) -> float:
        return float(np.clip(abs(self.lat) / 35.0, 0.25, 1.0))


def climate_for(lat: float, key: int) -> Climate:
    """Land-cover mix for a latitude (arid subtropics get bare soil, tropics forest)."""
    u = hash_uniform(key, np.arange(5))
    if 15 <= abs(lat) <= 35 and u[0] < 0.5:
        bias = (-0.8, 0.0, 0.2, 0.9)
    elif abs(lat) < 15:
        bias = (0.7, 0.1, 0.0, -0.8)
    else:
        bias = (0.2 * u[1], 0.3 * u[2], 0.0, -0.9)
    return Climate(lat=lat, water=0.05 + 0.12 * float(u[3]), bias=bias,
                   urban=0.03 + 0.07 * float(u[4]))


@dataclass
class Surface:
    """Static description of one patch: classes and per-pixel / per-parcel attributes."""

    cover: np.ndarray  # (H, W) uint8 LandCover
    texture: np.ndarray  # (H, W) multiplicative brightness texture ~1
    vigor: np.ndarray  # (H, W) greenness amplitude in [0.7, 1]
    phase: np.ndarray  # (H, W) phenology shift in days (crop parcels)
    crop_kind: np.ndarray  # (H, W) 0 summer crop, 1 winter crop
    sar_tex: np.ndarray  # (H, W) static SAR texture in dB
    climate: Climate


def _parcels(key: int, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rectangular field parcels in brick layout: returns (row id, column id) per pixel."""
    ph = 14
    row = np.floor(ys / ph).astype(np.int64)
    width = 14 + np.floor(18 * hash_uniform(key_hash((key, 1)), row)).astype(np.int64)
    offset = np.floor(40 * hash_uniform(key_hash((key, 2)), row)).astype(np.int64)
    col = np.floor((xs + offset) / width).astype(np.int64)
    return np.broadcast_to(row, col.shape), col


def make_surface(key: int, y0: int, x0: int, size: int, climate: Climate) -> Surface:
    """Land cover and static attributes on the absolute pixel window at (y0, x0)."""
    f = [fbm(key_hash((key, k)), y0, x0, size, size, 56.0, 4) for k in range(7)]
    scores = np.stack([f[k] + climate.bias[k] for k in range(4)])
    base = np.array([LandCover.FOREST, LandCover.CROPLAND, LandCover.GRASSLAND,
                     LandCover.BARE], dtype=np.uint8)
    cover = base[np.argmax(scores, axis=0)]
    # Water: low "elevation"; urban: clustered blocks where the urban field peaks.
    q_w = _gauss_quantile(climate.water)
    cover[f[4] < q_w] = LandCover.WATER
    blocks = fbm(key_hash((key, 9)), y0, x0, size, size, 6.0, 1) * 0.5
    urban = (f[5] + blocks) > -_gauss_quantile(climate.urban) * 1.1
    cover[urban & (cover != LandCover.WATER)] = LandCover.URBAN
    ys = np.arange(y0, y0 + size)[:, None].astype(float)
    xs = np.arange(x0, x0 + size)[None, :].astype(float)
    prow, pcol = _parcels(key_hash((key, 3)), ys, xs)
    pu = hash_uniform(key_hash((key, 4)), prow, pcol)
    pv = hash_uniform(key_hash((key, 5)), prow, pcol)
    fine = fbm(key_hash((key, 6)), y0, x0, size, size, 8.0, 3)
    texture = 1.0 + 0.05 * fine + 0.06 * (pv - 0.5) * (cover == LandCover.CROPLAND)
    vigor = np.clip(0.88 + 0.06 * fine + 0.1 * (pu - 0.5), 0.7, 1.0)
    phase = np.where(cover == LandCover.CROPLAND, 50.0 * (pv - 0.5), 10.0 * f[6])
    crop_kind = (pu < 0.35).astype(np.uint8)
    sar_tex = 1.2 * fbm(key_hash((key, 7)), y0, x0, size, size, 4.0, 2)
    sar_tex = sar_tex + np.where(cover == LandCover.URBAN, 4.0 * np.maximum(fine, 0), 0.0)
    return Surface(cover=cover, texture=texture.astype(np.float32),
                   vigor=vigor.astype(np.float32), phase=phase.astype(np.float32),
                   crop_kind=crop_kind, sar_tex=sar_tex.astype(np.float32), climate=climate)


def _gauss_quantile(p: float) -> float:
    """Standard normal quantile (fbm fields are roughly Gaussian with unit std)."""
    from scipy.special import ndtri

    return float(ndtri(p))


def _bump(doy: float | np.ndarray, peak: float | np.ndarray, width: float) -> np.ndarray:
    """Circular Gaussian bump over the year, 1 at ``peak``."""
    d = (np.asarray(doy) - peak + 182.5) % 365.0 - 182.5
    return np.exp(-0.5 * (d / width) ** 2)


def greenness(s: Surface, doy: int) -> np.ndarray:
    """Per-pixel greenness in [0, 1] on day-of-year ``doy`` (phenology by class)."""
    c = s.climate
    amp = c.seasonality
    summer = _bump(doy, c.peak_doy + s.phase, 45.0)
    winter = _bump(doy, c.peak_doy - 80.0 + s.phase, 40.0)
    crop = np.where(s.crop_kind == 1, winter, summer)
    crop = 1.0 - amp + amp * crop if amp < 0.5 else crop
    grass = 1.0 - amp * (1.0 - _bump(doy, c.peak_doy + s.phase, 75.0))
    forest = 1.0 - amp * (1.0 - _bump(doy, c.peak_doy, 80.0))
    g = np.zeros(s.cover.shape, dtype=np.float32)
    g = np.where(s.cover == LandCover.CROPLAND, crop, g)
    g = np.where(s.cover == LandCover.GRASSLAND, grass, g)
    g = np.where(s.cover == LandCover.FOREST, forest, g)
    return (g * s.vigor).astype(np.float32)


def reflectance(s: Surface, doy: int, rng: np.random.Generator) -> np.ndarray:
    """Clear-sky 13-band reflectance (13, H, W) float32 for one date."""
    g = greenness(s, doy)[None]
    sp = SPECTRA
    pairs = {
        LandCover.WATER: (sp["water"], sp["water"]),
        LandCover.FOREST: (sp["forest_dormant"], sp["forest_green"]),
        LandCover.CROPLAND: (sp["soil"], sp["crop_green"]),
        LandCover.GRASSLAND: (sp["grass_dry"], sp["grass_green"]),
        LandCover.URBAN: (sp["urban"], sp["urban"]),
        LandCover.BARE: (sp["bare"], sp["bare"]),
    }
    out = np.zeros((13, *s.cover.shape), dtype=np.float32)
    for cls, (lo, hi) in pairs.items():
        m = s.cover == cls
        if m.any():
            spec = lo[:, None, None] + (hi - lo)[:, None, None] * g
            out = np.where(m[None], spec, out)
    water = s.cover == LandCover.WATER
    tex = np.where(water, 1.0 + 0.3 * (s.texture - 1.0), s.texture)
    out *= tex[None]
    turbid = rng.uniform(-0.01, 0.02)
    out[:5] += np.where(water, turbid, 0.0)[None].astype(np.float32)
    out = gaussian_filter(out, sigma=(0, 0.6, 0.6), mode="nearest")
    out *= np.float32(rng.uniform(0.97, 1.03))  # illumination / atmosphere per date
    return out.astype(np.float32)


def backscatter(s: Surface, doy: int, rng: np.random.Generator) -> np.ndarray:
    """Sentinel-1 VV/VH backscatter (2, H, W) in dB with gamma speckle for one date."""
    g = greenness(s, doy)
    moisture = rng.uniform(0.0, 1.0)
    wind = rng.uniform(0.0, 1.0)
    out = np.empty((2, *s.cover.shape), dtype=np.float32)
    for pol in range(2):
        db = np.zeros(s.cover.shape, dtype=np.float32)
        for cls in LandCover:
            base, green = _SAR_BASE[cls][pol], _SAR_GREEN[cls][pol]
            db = np.where(s.cover == cls, base + green * g, db)
        soil = np.isin(s.cover, (LandCover.CROPLAND, LandCover.GRASSLAND, LandCover.BARE))
        db += np.where(soil, 3.0 * moisture * (1.0 - 0.5 * g), 0.0)
        db += np.where(s.cover == LandCover.WATER, 6.0 * wind, s.sar_tex)
        lin = 10.0 ** (db / 10.0) * rng.gamma(ENL, 1.0 / ENL, size=db.shape)
        out[pol] = 10.0 * np.log10(np.maximum(lin, 1e-6))
    return out


# Native resolution of the bands (m): B01/B09/B10 60 m, red edge, B8A and SWIR 20 m.
_RES = np.array([60, 10, 10, 10, 20, 20, 20, 10, 20, 60, 60, 20, 20])
_NOISE = np.array([0.0012, 0.0015, 0.0015, 0.0015, 0.0012, 0.0012, 0.0012, 0.002, 0.0015,
                   0.0008, 0.0002, 0.0015, 0.0012], dtype=np.float32)


def _block_mean(img: np.ndarray, f: int, y0: int, x0: int) -> np.ndarray:
    """Average (C, H, W) over f x f blocks of the absolute pixel grid and repeat back to 10 m
    (nearest-neighbour resampling, as the Earth Engine export of SEN12MS-CR-TS)."""
    c, h, w = img.shape
    py, px = y0 % f, x0 % f
    hh, ww = -(-(h + py) // f) * f, -(-(w + px) // f) * f
    pad = np.pad(img, ((0, 0), (py, hh - h - py), (px, ww - w - px)), mode="edge")
    blocks = pad.reshape(c, hh // f, f, ww // f, f).mean(axis=(2, 4))
    full = np.repeat(np.repeat(blocks, f, axis=1), f, axis=2)
    return full[:, py:py + h, px:px + w]


def sensor(img: np.ndarray, rng: np.random.Generator, y0: int = 0, x0: int = 0) -> np.ndarray:
    """Band resolutions (20 m and 60 m bands on their own pixel grid, resampled to 10 m by
    nearest neighbour as in SEN12MS-CR-TS) and radiometric noise. (y0, x0): absolute pixel
    offset of the patch, so the coarse pixels line up across adjacent patches."""
    out = img.copy()
    for res in (20, 60):
        idx = np.flatnonzero(res == _RES)
        out[idx] = _block_mean(img[idx], res // 10, y0, x0)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * _NOISE[:, None, None]
    return out + noise
