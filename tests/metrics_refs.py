"""Independent float64 references and test images for the metrics tests (imported as
``metrics_refs``; tests/ is on sys.path).

The references are written from the formulas in DESIGN.md ("Per-sample results"), not from
crbench's code: whole-image RMSE/PSNR, masked RMSE under both mask conventions, SAM as the
arccos of the cosine, SSIM with an explicitly zero-padded 11-tap Gaussian.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def ref_window() -> np.ndarray:
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    return g / g.sum()


def ref_blur(img: np.ndarray) -> np.ndarray:
    """(H, W) float64 Gaussian filter with zero padding, same size."""
    g, (h, w) = ref_window(), img.shape
    p = np.pad(img, 5)
    rows = sum(g[k] * p[:, k:k + w] for k in range(11))
    return sum(g[k] * rows[k:k + h, :] for k in range(11))


def ref_ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    c1, c2 = (0.01 * 1) ** 2, (0.03 * 1) ** 2
    mx, my = ref_blur(x), ref_blur(y)
    vx, vy = ref_blur(x * x) - mx**2, ref_blur(y * y) - my**2
    cxy = ref_blur(x * y) - mx * my
    return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def ref_sam_map(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(13, H, W) -> per-pixel angle; zero spectra: 0 if both, pi/2 if one (module doc)."""
    npn, ntn = np.linalg.norm(p, axis=0), np.linalg.norm(t, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (p * t).sum(axis=0) / (npn * ntn)
    ang = np.arccos(np.clip(cos, -1, 1))
    ang[(npn == 0) != (ntn == 0)] = np.pi / 2
    ang[(npn == 0) & (ntn == 0)] = 0.0
    return ang


def ref_metrics(p: np.ndarray, t: np.ndarray, m: np.ndarray, convention: str) -> dict:
    """One sample: p, t (C, H, W) float64 (C = 13, or the scored bands), m (L, H, W) bool."""
    cloudy = m.all(axis=0) if convention == "paper" else m.any(axis=0)
    clear = (~m).any(axis=0) if convention == "paper" else (~m).all(axis=0)
    err2 = (p - t) ** 2

    def masked(region: np.ndarray) -> float:
        return math.sqrt(err2[:, region].mean()) if region.any() else math.nan

    rmse = math.sqrt(err2.mean())
    return {
        "nrmse_all": rmse, "nrmse_cloudy": masked(cloudy), "nrmse_clear": masked(clear),
        "psnr": 20 * math.log10(1 / rmse) if rmse > 0 else math.inf,
        "ssim": float(np.mean([ref_ssim_map(p[c], t[c]).mean() for c in range(p.shape[0])])),
        "sam": float(ref_sam_map(p, t).mean()),
    }


# --------------------------------------------------------------------------- data


def scene(rng: np.random.Generator, b: int = 2, h: int = 48, w: int = 48, lo: float = 0.05,
          hi: float = 0.45, texture: float = 0.03) -> np.ndarray:
    """Reflectance-like float32 images: a smooth per-band field plus texture, in [0, 1]."""
    coarse = torch.from_numpy(rng.random((b, 13, 4, 4)))
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear",
                                             align_corners=True).numpy()
    img = lo + (hi - lo) * smooth + texture * rng.standard_normal((b, 13, h, w))
    return np.clip(img, 0, 1).astype(np.float32)


def perturb(rng: np.random.Generator, x: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(x + sigma * rng.standard_normal(x.shape), 0, 1).astype(np.float32)


def cloud_masks(rng: np.random.Generator, b: int, L: int, h: int, w: int) -> np.ndarray:
    return rng.random((b, L, h, w)) < 0.5


def as_np(d: dict) -> dict:
    return {k: v.cpu().numpy() for k, v in d.items()}
