"""Synthetic SEN12MS-CR-TS: a small, physically plausible tree in the real layout.

``synthesize(root)`` writes ``ROOT/<ROIsXXXX>/<id>/{S1,S2}/<t>/<mod>_..._patch_<n>.tif`` for
30 dates of 2018 (GeoTIFF, UTM 10 m; S2 uint16 13 bands, S1 float32 VV/VH in dB) using real
ROI names from the official split lists, plus per-patch ground-truth cloud maps in
``ROOT/_truth`` (outside every ROI directory) and a manifest ``ROOT/_truth/synth.json``.

Scenes: coordinate-based land cover (water, forest, cropland parcels, grassland, urban, bare
soil) continuous across the adjacent patches of one ROI, class spectra with phenology over
the year, SAR backscatter by class with gamma speckle, and clouds as coherent fractal fields
(thick clouds, thin haze, cirrus in B10, cloud shadows). Each patch draws from its own random
stream seeded by (seed, ROI, patch), so the output of one patch does not depend on how many
ROIs or patches are generated, and reruns give byte-identical files.

Ground truth, one compressed ``.npz`` per patch (:func:`truth_path`, :func:`load_truth`):
``classes`` (30, H, W) uint8 :class:`TruthClass` per date (clear, thick, thin, cirrus, shadow;
a pixel takes the first that applies in the order thick, thin, cirrus, shadow), ``landcover``
(H, W) uint8 :class:`LandCover`, ``s1_dates`` / ``s2_dates`` (ISO strings), ``class_names``,
``landcover_names``. A date's truth coverage is the fraction of thick, thin or cirrus pixels.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from ..constants import ALL_ROIS, N_DATES, S1_BANDS, S2_BANDS, S2_MAX, SPLITS
from ..data.cr import MODS as CR_MODS
from ..data.layout import file_path
from ..errors import UsageError
from .clouds import TruthClass, apply_clouds, plan_dates
from .noise import hash_uniform, key_hash
from .scene import (
    LandCover,
    backscatter,
    climate_for,
    make_surface,
    reflectance,
    sensor,
)

__all__ = [
    "LandCover", "PatchTruth", "SynthSummary", "TruthClass", "interleaved_rois", "load_truth",
    "roi_dates", "roi_georef", "synthesize", "truth_path",
]

TRUTH_DIR = "_truth"
MANIFEST = "synth.json"
MIN_SIZE = 32
PATCHES_PER_ROW = 16  # patch n of a ROI sits at grid cell (n // 16, n % 16)
YEAR = 2018
PIXEL_M = 10.0
_PERSISTENT_EVERY = 8  # about one patch in 8 has no clear date


# --------------------------------------------------------------------------- ROI choice
def interleaved_rois() -> tuple[str, ...]:
    """All official ROIs in the order test[0], train[0], val[0], train[1], test[1], ..."""
    lists = {s: list(SPLITS["all"][s]) for s in ("test", "train", "val")}
    pos = dict.fromkeys(lists, 0)
    cycle = ("test", "train", "val", "train")
    out: list[str] = []
    while len(out) < sum(len(v) for v in lists.values()):
        for s in cycle:
            if pos[s] < len(lists[s]):
                out.append(lists[s][pos[s]])
                pos[s] += 1
    return tuple(out)


def _resolve_rois(rois: int | Sequence[str]) -> tuple[str, ...]:
    order = interleaved_rois()
    if isinstance(rois, (int, np.integer)) and not isinstance(rois, bool):
        if not 1 <= rois <= len(order):
            raise UsageError(f"rois: got {rois}; expected a number of ROIs from 1 to "
                             f"{len(order)} (the official ROI count)")
        return order[: int(rois)]
    keys = (rois,) if isinstance(rois, str) else tuple(rois) if isinstance(
        rois, (list, tuple)) else None
    if keys is None or not keys or len(set(keys)) != len(keys) or any(
            k not in ALL_ROIS for k in keys):
        raise UsageError(f"rois: got {rois!r}; expected a count from 1 to {len(order)} or "
                         f"distinct official ROI keys such as {order[0]!r} "
                         "(see crbench.constants.ALL_ROIS)")
    return keys


# --------------------------------------------------------------------------- geography, dates
_REGION_BOX = {  # region -> (lat min, lat max, UTM zone min, zone max)
    "europa": (38.0, 60.0, 29, 37), "africa": (-30.0, 30.0, 28, 38),
    "america": (-38.0, 50.0, 10, 23), "asiaEast": (20.0, 45.0, 47, 54),
    "asiaWest": (25.0, 45.0, 37, 44),
}


def _roi_ints(roi: str) -> tuple[int, int]:
    rois, roi_id = roi.split("/")
    return int(rois[4:]), int(roi_id)


def _roi_region(roi: str) -> str | None:
    for region, parts in SPLITS.items():
        if region != "all" and any(roi in v for v in parts.values()):
            return region
    return None


@dataclass(frozen=True)
class Georef:
    """Where a ROI lies: latitude, EPSG code of its UTM zone and top-left corner (metres)."""

    lat: float
    epsg: int
    x0: float
    y0: float


def roi_georef(roi: str) -> Georef:
    """A plausible UTM location for a ROI (from its region; a pure function of the name)."""
    u = hash_uniform(key_hash((0x6E0, *_roi_ints(roi))), np.arange(4))
    lat_lo, lat_hi, z_lo, z_hi = _REGION_BOX.get(_roi_region(roi) or "", (-45, 60, 1, 60))
    lat = float(lat_lo + (lat_hi - lat_lo) * u[0])
    zone = int(z_lo + np.floor((z_hi - z_lo + 1) * u[1]))
    epsg = (32600 if lat >= 0 else 32700) + zone
    northing = lat * 110_574.0 + (0.0 if lat >= 0 else 10_000_000.0)
    easting = 250_000.0 + 400_000.0 * float(u[2])
    return Georef(lat=lat, epsg=epsg, x0=round(easting / 10) * 10.0,
                  y0=round(northing / 10) * 10.0)


def roi_dates(roi: str, seed: int) -> tuple[list[date], list[date]]:
    """S1 and S2 acquisition dates of a ROI: 30 increasing dates over 2018, |S1 - S2| <= 5."""
    rng = np.random.default_rng([seed, *_roi_ints(roi), 0xDA7E])
    t = np.arange(N_DATES)
    s2 = np.round(t * 365.0 / N_DATES).astype(int) + rng.integers(0, 3, size=N_DATES)
    s1 = np.clip(s2 + rng.integers(-4, 6, size=N_DATES), 0, 364)
    start = date(YEAR, 1, 1)
    return ([start + timedelta(days=int(d)) for d in s1],
            [start + timedelta(days=int(d)) for d in s2])


# --------------------------------------------------------------------------- truth files
def truth_path(root: Path, roi: str, patch: int) -> Path:
    """Ground-truth file of one patch: ``ROOT/_truth/<ROIsXXXX>_<id>_patch_<n>.npz``."""
    return Path(root) / TRUTH_DIR / f"{roi.replace('/', '_')}_patch_{patch}.npz"


@dataclass(frozen=True)
class PatchTruth:
    """Ground truth of one patch.

    Attributes:
        classes: (30, H, W) uint8 :class:`TruthClass` per date.
        landcover: (H, W) uint8 :class:`LandCover`.
        s1_dates, s2_dates: acquisition dates per index t.
        blank: (30,) bool, the dates whose S2 image was written blank (all zeros) by
            ``blank_dates``; their ``classes`` are those of the scene before blanking.
    """

    classes: np.ndarray
    landcover: np.ndarray
    s1_dates: list[date]
    s2_dates: list[date]
    blank: np.ndarray = field(default_factory=lambda: np.zeros(N_DATES, dtype=bool))

    def cloud(self, t: int | None = None) -> np.ndarray:
        """Cloud mask (thick, thin or cirrus) for one date or all dates."""
        c = self.classes if t is None else self.classes[t]
        return (c == TruthClass.THICK) | (c == TruthClass.THIN) | (c == TruthClass.CIRRUS)

    @property
    def coverage(self) -> np.ndarray:
        """(30,) fraction of cloudy pixels (thick, thin or cirrus) per date."""
        return self.cloud().mean(axis=(1, 2))


def load_truth(root: Path, roi: str, patch: int) -> PatchTruth:
    """Read the ground truth written by :func:`synthesize` for one patch."""
    path = truth_path(root, roi, patch)
    if not path.is_file():
        from ..errors import DatasetNotFoundError

        raise DatasetNotFoundError(f"no ground truth for {roi} patch {patch}: {path} is "
                                   "missing (only trees made by `crbench synth` have one)")
    with np.load(path) as z:
        return PatchTruth(
            classes=z["classes"], landcover=z["landcover"],
            s1_dates=[date.fromisoformat(s) for s in z["s1_dates"]],
            s2_dates=[date.fromisoformat(s) for s in z["s2_dates"]],
            blank=z["blank"] if "blank" in z.files else np.zeros(N_DATES, dtype=bool))


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Compressed .npz with fixed zip timestamps, so reruns are byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


# --------------------------------------------------------------------------- generation
@dataclass
class SynthSummary:
    """What :func:`synthesize` wrote."""

    root: Path
    rois: tuple[str, ...]
    patches: int
    size: int | tuple[int, int]
    seed: int
    n_files: int
    truth_dir: Path
    coverage: list[float] = field(default_factory=list)  # truth coverage, every patch-date
    no_clear: list[tuple[str, int]] = field(default_factory=list)  # patches without clear date

    @property
    def mean_coverage(self) -> float:
        return float(np.mean(self.coverage)) if self.coverage else float("nan")

    def line(self) -> str:
        """One-line summary for the CLI."""
        n = len(self.rois) * self.patches
        return (f"wrote {self.n_files} GeoTIFFs to {self.root}: {len(self.rois)} ROIs x "
                f"{self.patches} patches x {N_DATES} dates, {_size_text(self.size)} px, seed "
                f"{self.seed}; mean cloud coverage {self.mean_coverage:.2f}, "
                f"{n - len(self.no_clear)}/{n} patches with a clear date; "
                f"ground truth in {self.truth_dir}")


def _size_text(size: int | tuple[int, int]) -> str:
    """``64x64`` for 64, ``101x100`` for (101, 100) (height x width)."""
    h, w = (size, size) if isinstance(size, int) else size
    return f"{h}x{w}"


def _persistent(roi: str, patch: int, seed: int) -> bool:
    """Whether a patch is persistently cloudy (no clear date): about one patch in 8.

    The first 4 ROIs x 2 patches of the interleaved order form a balanced block with exactly
    one such patch for every seed (so the default tree always has one); other patches draw
    it with probability 1/8 from (seed, ROI, patch).
    """
    k = interleaved_rois().index(roi)
    if k < 4 and patch < 2:
        return (2 * k + patch + seed) % _PERSISTENT_EVERY == _PERSISTENT_EVERY - 1
    u = hash_uniform(key_hash((seed, *_roi_ints(roi), patch, 0xC1)), np.zeros(1))[0]
    return bool(u < 1.0 / _PERSISTENT_EVERY)


def _patch_transform(geo: Georef, patch: int, size: int):
    from rasterio.transform import Affine

    row, col = divmod(patch, PATCHES_PER_ROW)
    return Affine(PIXEL_M, 0.0, geo.x0 + col * size * PIXEL_M,
                  0.0, -PIXEL_M, geo.y0 - row * size * PIXEL_M)


def blank_dates_of(roi: str, patch: int, seed: int, n: int) -> np.ndarray:
    """(30,) bool: the ``n`` dates of a patch whose S2 image is written blank (all zeros, as
    real SEN12MS-CR-TS has some), drawn from their own seeded stream."""
    a, b = _roi_ints(roi)
    out = np.zeros(N_DATES, dtype=bool)
    if n:
        out[np.random.default_rng([seed, a, b, patch, 0xB1A4]).choice(N_DATES, n, False)] = True
    return out


def generate_patch(roi: str, patch: int, size: int, seed: int,
                   dates: tuple[list[date], list[date]], blank_dates: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arrays of one patch: S2 (30,13,H,W) uint16, S1 (30,2,H,W) float32 dB, truth (30,H,W)
    uint8, land cover (H,W) uint8. Pure function of its arguments; ``blank_dates`` S2 images
    (:func:`blank_dates_of`) are all zeros, everything else is unchanged by it."""
    a, b = _roi_ints(roi)
    geo = roi_georef(roi)
    key = key_hash((seed, a, b, 0x5CE7E))
    row, col = divmod(patch, PATCHES_PER_ROW)
    surface = make_surface(key, row * size, col * size, size, climate_for(geo.lat, key))
    rng = np.random.default_rng([seed, a, b, patch, 0xC10D])
    rng_s1 = np.random.default_rng([seed, a, b, patch, 0x5A12])
    s1_dates, s2_dates = dates
    plans = plan_dates(rng, size, _persistent(roi, patch, seed), geo.lat,
                       [d.timetuple().tm_yday for d in s2_dates])
    s2 = np.empty((N_DATES, len(S2_BANDS), size, size), dtype=np.uint16)
    s1 = np.empty((N_DATES, len(S1_BANDS), size, size), dtype=np.float32)
    truth = np.empty((N_DATES, size, size), dtype=np.uint8)
    for t in range(N_DATES):
        clear = reflectance(surface, s2_dates[t].timetuple().tm_yday, rng)
        img, truth[t] = apply_clouds(clear, plans[t], rng)
        img = sensor(img, rng, row * size, col * size)
        s2[t] = np.clip(np.round(img * S2_MAX), 1, 65535).astype(np.uint16)
        s1[t] = backscatter(surface, s1_dates[t].timetuple().tm_yday, rng_s1)
    s2[blank_dates_of(roi, patch, seed, blank_dates)] = 0
    return s2, s1, truth, surface.cover


def _write_tif(path: Path, data: np.ndarray, names: Sequence[str], crs, transform,
               tags: dict[str, str]) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype.name, crs=crs,
                       transform=transform) as dst:
        dst.write(data)
        dst.descriptions = tuple(names)
        dst.update_tags(**tags)


def grid_side(size: int | tuple[int, int]) -> int:
    """Side of the square a patch of ``size`` (a side, or (height, width)) is generated on:
    the longer side rounded up to a multiple of 8. A square size that is a multiple of 8 is
    its own grid side, so such trees are byte-identical to those of square-only versions."""
    h, w = (size, size) if isinstance(size, int) else size
    return -(-max(h, w) // 8) * 8


def _write_patch(root: Path, roi: str, patch: int, size: int | tuple[int, int], seed: int,
                 dates: tuple[list[date], list[date]], blank_dates: int = 0) -> np.ndarray:
    """Write one patch of ``size``: generated on the square of :func:`grid_side` (patches
    stay on one UTM grid of that step) and cropped to its top-left (height, width)."""
    side = grid_side(size)
    h, w = (size, size) if isinstance(size, int) else size
    s2, s1, truth, cover = (np.ascontiguousarray(a[..., :h, :w])
                            for a in generate_patch(roi, patch, side, seed, dates, blank_dates))
    geo = roi_georef(roi)
    from rasterio.crs import CRS

    crs, transform = CRS.from_epsg(geo.epsg), _patch_transform(geo, patch, side)
    for t in range(N_DATES):
        for mod, arr, names, day in (("s2", s2[t], S2_BANDS, dates[1][t]),
                                     ("s1", s1[t], S1_BANDS, dates[0][t])):
            tags = {"SYNTHETIC": "crbench.synth", "ACQUISITION_DATE": day.isoformat()}
            _write_tif(file_path(root, mod, roi, t, day, patch), arr, names, crs, transform,
                       tags)
    extra = {"blank": blank_dates_of(roi, patch, seed, blank_dates)} if blank_dates else {}
    _save_npz(truth_path(root, roi, patch), {
        "classes": truth, "landcover": cover,
        "s1_dates": np.array([d.isoformat() for d in dates[0]]),
        "s2_dates": np.array([d.isoformat() for d in dates[1]]),
        "class_names": np.array([c.name.lower() for c in TruthClass]),
        "landcover_names": np.array([c.name.lower() for c in LandCover]), **extra,
    })
    return truth


def _previous_rois(root: Path) -> list[str] | None:
    """ROIs of a previous synth output in ``root`` (None if ``root`` is not one)."""
    try:
        old = json.loads((root / TRUTH_DIR / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or old.get("generator") != "crbench.synth":
        return None
    return [r for r in old.get("rois", []) if r in ALL_ROIS]


def _clear_scenes(root: Path) -> None:
    """Remove the scene folders a previous SEN12MS-CR synth output lists in its manifest
    (:mod:`.cr_tree`), and the season folders left empty."""
    try:
        scenes = json.loads((root / TRUTH_DIR / MANIFEST).read_text()).get("scenes", [])
    except (OSError, ValueError, AttributeError):
        return
    for scene in scenes if isinstance(scenes, list) else []:
        season, number = str(scene).partition("/")[::2]
        for mod in CR_MODS:
            shutil.rmtree(root / f"{season}_{mod}" / f"{mod}_{number}", ignore_errors=True)
            with contextlib.suppress(OSError):
                (root / f"{season}_{mod}").rmdir()


def _prepare_root(root: Path, force: bool) -> None:
    """Refuse a non-empty foreign directory; clear a previous synth output.

    A previous output (``ROOT/_truth/synth.json`` written by this module or :mod:`.cr_tree`)
    loses its ROI (or SEN12MS-CR scene) folders and ``_truth``; anything else in ROOT (e.g.
    the mask cache ``.crbench``) stays.
    """
    if root.exists() and not root.is_dir():
        raise UsageError(f"root: {root} exists and is not a directory; expected a new or "
                         "empty directory, or a previous `crbench synth` output")
    previous = _previous_rois(root)
    if previous is not None:
        for roi in previous:
            shutil.rmtree(root / roi, ignore_errors=True)
            with contextlib.suppress(OSError):  # the ROIsXXXX folder, once empty
                (root / roi).parent.rmdir()
        _clear_scenes(root)
        shutil.rmtree(root / TRUTH_DIR, ignore_errors=True)
    elif root.is_dir() and any(p.name != ".crbench" for p in root.iterdir()) and not force:
        raise UsageError(f"root: {root} is not empty and is not a previous `crbench synth` "
                         "output; expected a new or empty directory (or pass force=True / "
                         "--force to write into it anyway)")
    (root / TRUTH_DIR).mkdir(parents=True, exist_ok=True)


def _is_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_size(size: object) -> int | tuple[int, int]:
    """``size`` as an int (square) or an (height, width) tuple of ints, each >= MIN_SIZE.

    Raises:
        UsageError: naming ``size``, the value and what is expected.
    """
    sides = (size,) if _is_int(size) else size
    if (not isinstance(sides, (tuple, list)) or len(sides) not in (1, 2)
            or not all(_is_int(v) and v >= MIN_SIZE for v in sides)):
        raise UsageError(f"size: got {size!r}; expected a side in pixels >= {MIN_SIZE} or "
                         f"(height, width) with both >= {MIN_SIZE}")
    if len(sides) == 1 or sides[0] == sides[1]:
        return int(sides[0])
    return int(sides[0]), int(sides[1])


def _check_args(patches: int, seed: int, workers: int, blank_dates: int = 0) -> None:
    if isinstance(patches, bool) or not isinstance(patches, (int, np.integer)) or patches < 1:
        raise UsageError(f"patches: got {patches!r}; expected an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed: got {seed!r}; expected an integer >= 0")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise UsageError(f"workers: got {workers!r}; expected an integer >= 1")
    if isinstance(blank_dates, bool) or not isinstance(blank_dates, (int, np.integer)) or \
            not 0 <= blank_dates <= N_DATES:
        raise UsageError(f"blank_dates: got {blank_dates!r}; expected an integer from 0 to "
                         f"{N_DATES} (blank S2 images per patch)")


def _patch_job(args: tuple) -> np.ndarray:
    """Write one patch (runs in a worker process when ``workers`` > 1); returns its coverage."""
    import rasterio

    root, roi, patch, size, seed, dates, blank_dates = args
    with rasterio.Env():
        truth = _write_patch(root, roi, patch, size, seed, dates, blank_dates)
    cloud = np.isin(truth, (TruthClass.THICK, TruthClass.THIN, TruthClass.CIRRUS))
    return cloud.mean(axis=(1, 2))


def synthesize(root: Path, rois: int | Sequence[str] = 4, patches: int = 2,
               size: int | tuple[int, int] = 128,
               seed: int = 0, progress: bool = False, force: bool = False,
               workers: int = 1, blank_dates: int = 0) -> SynthSummary:
    """Write a synthetic SEN12MS-CR-TS tree under ``root``.

    Args:
        root: output directory; created if missing. Must be empty or a previous synth output
            (whose files are replaced), unless ``force``.
        rois: number of official ROIs, taken in interleaved split order (test, train, val,
            train, test, ...), or explicit ROI keys such as ``["ROIs1868/119"]``.
        patches: patches per ROI (numbered 0..patches-1, adjacent on a UTM grid).
        size: patch side in pixels, or (height, width) for non-square patches (any sides
            >= 32, e.g. (101, 100) or (37, 50)).
        seed: random seed; the same arguments give byte-identical files.
        progress: show a tqdm progress bar on stderr.
        force: write into a non-empty directory that is not a previous synth output.
        workers: processes generating patches in parallel (the output does not depend on it).
        blank_dates: S2 images per patch written blank (all zeros; which dates: seeded, in
            the truth files' ``blank``); crbench counts them fully cloudy, the toolbox clear.

    Returns:
        A :class:`SynthSummary`.

    Raises:
        UsageError: a bad argument (named in the message) or a foreign non-empty ``root``.
    """
    from tqdm import tqdm

    roi_keys = _resolve_rois(rois)
    size = check_size(size)
    _check_args(patches, seed, workers, blank_dates)
    root = Path(root)
    _prepare_root(root, force)
    summary = SynthSummary(root=root, rois=roi_keys, patches=int(patches), size=size,
                           seed=int(seed), n_files=0, truth_dir=root / TRUTH_DIR)
    jobs = [(root, roi, p, size, int(seed), roi_dates(roi, seed), int(blank_dates))
            for roi in roi_keys for p in range(patches)]
    bar = tqdm(total=len(jobs), desc="synth", unit="patch", disable=not progress)
    with bar:
        if workers > 1 and len(jobs) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                covs = []
                for cov in pool.map(_patch_job, jobs):
                    covs.append(cov)
                    bar.update()
        else:
            covs = []
            for job in jobs:
                covs.append(_patch_job(job))
                bar.update()
    for (_, roi, p, *_), cov in zip(jobs, covs, strict=True):
        summary.coverage.extend(float(c) for c in cov)
        if not (cov == 0).any():
            summary.no_clear.append((roi, p))
        summary.n_files += 2 * N_DATES
    manifest = {"generator": "crbench.synth", "rois": list(roi_keys), "patches": int(patches),
                "size": size if isinstance(size, int) else list(size), "seed": int(seed),
                **({"blank_dates": int(blank_dates)} if blank_dates else {})}
    (root / TRUTH_DIR / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return summary
