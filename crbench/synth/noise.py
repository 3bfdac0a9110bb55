"""Deterministic noise fields for the synthetic generator (:mod:`crbench.synth`).

Two kinds of field:

* coordinate-based value noise (:func:`value_noise`, :func:`fbm`): a pure function of a key
  and absolute pixel coordinates, so adjacent patches of one ROI join seamlessly and a patch
  looks the same whatever else is generated;
* spectral (1/f) noise (:func:`fractal_noise`) drawn from a ``numpy.random.Generator``, used
  for clouds, which only need to be coherent inside one patch.

Everything is vectorised numpy; no per-pixel Python loops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def key_hash(parts: Sequence[int]) -> int:
    """Fold a sequence of non-negative integers into one 64-bit key."""
    h = np.uint64(0x243F6A8885A308D3)
    with np.errstate(over="ignore"):
        for p in parts:
            h = _mix(np.asarray(h ^ (np.uint64(p & 0xFFFFFFFFFFFFFFFF) + _GOLD)))[()]
    return int(h)


def hash_uniform(key: int, *coords: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) as a pure function of ``key`` and integer coordinate arrays."""
    with np.errstate(over="ignore"):
        h = np.full(np.broadcast(*coords).shape, np.uint64(key), dtype=np.uint64)
        for c in coords:
            h = _mix(h ^ (np.asarray(c).astype(np.int64).astype(np.uint64) + _GOLD))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def value_noise(key: int, y0: int, x0: int, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise in [-1, 1] on the pixel grid ``[y0, y0+h) x [x0, x0+w)``.

    Lattice values are hashed from ``key`` and the lattice coordinates and interpolated with
    a smoothstep, so the field is continuous across patch borders.
    """
    ys = (np.arange(y0, y0 + h) + 0.5) / cell
    xs = (np.arange(x0, x0 + w) + 0.5) / cell
    iy0, ix0 = int(np.floor(ys[0])), int(np.floor(xs[0]))
    ly = np.arange(iy0, int(np.floor(ys[-1])) + 2)
    lx = np.arange(ix0, int(np.floor(xs[-1])) + 2)
    lattice = hash_uniform(key, ly[:, None], lx[None, :]) * 2.0 - 1.0
    fy, fx = ys - np.floor(ys), xs - np.floor(xs)
    iy = np.floor(ys).astype(int) - iy0
    ix = np.floor(xs).astype(int) - ix0
    sy = (fy * fy * (3 - 2 * fy))[:, None]
    sx = (fx * fx * (3 - 2 * fx))[None, :]
    a = lattice[iy][:, ix]
    b = lattice[iy][:, ix + 1]
    c = lattice[iy + 1][:, ix]
    d = lattice[iy + 1][:, ix + 1]
    return (a * (1 - sx) + b * sx) * (1 - sy) + (c * (1 - sx) + d * sx) * sy


def fbm(key: int, y0: int, x0: int, h: int, w: int, cell: float, octaves: int = 4,
        gain: float = 0.5) -> np.ndarray:
    """Fractal sum of :func:`value_noise` octaves, rescaled to roughly unit standard deviation."""
    total = np.zeros((h, w))
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += amp * value_noise(key_hash((key, o)), y0, x0, h, w, cell / 2**o)
        norm += amp * amp
        amp *= gain
    # One octave of smoothstep value noise with uniform [-1, 1] lattice has std ~0.4.
    return total / (0.4 * np.sqrt(norm))


def fractal_noise(rng: np.random.Generator, h: int, w: int, beta: float = 1.8,
                  aniso: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """Zero-mean, unit-std 1/f^beta noise (amplitude spectrum) via FFT.

    ``aniso`` > 1 stretches the structures along ``angle`` (radians), which gives streaky
    cirrus-like fields.
    """
    white = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    ca, sa = np.cos(angle), np.sin(angle)
    u = fx * ca + fy * sa
    v = -fx * sa + fy * ca
    f = np.sqrt((u * aniso) ** 2 + v**2)
    f[0, 0] = np.inf
    spec = np.fft.rfft2(white) / np.maximum(f, 1.0 / max(h, w)) ** beta
    spec[0, 0] = 0.0
    field = np.fft.irfft2(spec, s=(h, w))
    std = field.std()
    return field / std if std > 0 else field
