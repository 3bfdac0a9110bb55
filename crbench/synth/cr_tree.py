"""Synthetic SEN12MS-CR: a small tree in the real mono-temporal layout (``crbench synth ROOT
--dataset sen12mscr``).

``synthesize_cr(root)`` writes, per patch, ``ROOT/<season>_s1/s1_<scene>/..._s1_<scene>_p<n>.tif``
(S1 float32 VV/VH dB), ``<season>_s2/...`` (cloud-free S2, uint16 13 bands) and
``<season>_s2_cloudy/...`` (the same place a few days later under clouds), with scene numbers
from the official splits (:mod:`crbench.data.cr`), taken in the order test, train, val, train,
test, ... The scene, SAR and cloud generators are those of the SEN12MS-CR-TS generator
(:mod:`.scene`, :mod:`.clouds`); the cloudy image always carries 15..85 % of cloud. Ground
truth of the cloudy image (``classes`` (H, W) uint8 :class:`~.clouds.TruthClass`) goes to
``ROOT/_truth/<season>_<scene>_patch_<n>.npz``; the manifest to ``ROOT/_truth/synth.json``.
Same arguments, byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..constants import S1_BANDS, S2_BANDS, S2_MAX
from ..data import cr
from ..errors import UsageError
from .clouds import TruthClass, apply_clouds, plan_dates
from .noise import key_hash
from .scene import backscatter, climate_for, make_surface, reflectance, sensor
from .tree import (
    MANIFEST,
    MIN_SIZE,
    PATCHES_PER_ROW,
    TRUTH_DIR,
    SynthSummary,
    _check_args,
    _patch_transform,
    _prepare_root,
    _save_npz,
    _write_tif,
    roi_georef,
)

_SEASON_DOY = {"spring": 105, "summer": 195, "fall": 285, "winter": 15}
_CLOUDY_AFTER = 9  # days between the clear and the cloudy acquisition


def interleaved_scenes() -> tuple[str, ...]:
    """All SEN12MS-CR scene keys in the order test[0], train[0], val[0], train[1], test[1], ..."""
    lists = {s: list(cr.scenes_for(s)) for s in ("test", "train", "val")}
    pos = dict.fromkeys(lists, 0)
    out: list[str] = []
    while len(out) < sum(len(v) for v in lists.values()):
        for s in ("test", "train", "val", "train"):
            if pos[s] < len(lists[s]):
                out.append(lists[s][pos[s]])
                pos[s] += 1
    return tuple(out)


def _resolve(scenes: int) -> tuple[str, ...]:
    order = interleaved_scenes()
    if isinstance(scenes, bool) or not isinstance(scenes, (int, np.integer)) or \
            not 1 <= scenes <= len(order):
        raise UsageError(f"rois: got {scenes!r}; expected a number of SEN12MS-CR scenes from 1 "
                         f"to {len(order)}")
    return order[: int(scenes)]


def generate_cr_patch(scene: str, patch: int, size: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arrays of one patch: clear S2 and cloudy S2 (13, H, W) uint16, S1 (2, H, W) float32 dB,
    the cloudy image's truth (H, W) uint8. Pure function of its arguments."""
    season, number = scene.split("/")
    rois, season_name = season.split("_")
    a, b = int(rois[4:]), int(number)
    geo = roi_georef(f"{rois}/{number}")
    key = key_hash((seed, a, b, 0xC5E7E))
    row, col = divmod(patch, PATCHES_PER_ROW)
    surface = make_surface(key, row * size, col * size, size, climate_for(geo.lat, key))
    rng = np.random.default_rng([seed, a, b, patch, 0xC1C2])
    doy = _SEASON_DOY[season_name]
    plans = plan_dates(rng, size, False, geo.lat, [doy, doy + _CLOUDY_AFTER])
    cloudy_plan = dataclasses.replace(plans[1], coverage=float(rng.uniform(0.15, 0.85)))
    out = []
    for day, plan in ((doy, dataclasses.replace(plans[0], coverage=0.0, haze=0.0, cirrus=0.0)),
                      (doy + _CLOUDY_AFTER, cloudy_plan)):
        img, truth = apply_clouds(reflectance(surface, day, rng), plan, rng)
        img = sensor(img, rng, row * size, col * size)
        out.append(np.clip(np.round(img * S2_MAX), 1, 65535).astype(np.uint16))
    s1 = backscatter(surface, doy, np.random.default_rng([seed, a, b, patch, 0x5A13]))
    return out[0], out[1], s1.astype(np.float32), truth


def _write_cr_patch(root: Path, scene: str, patch: int, size: int, seed: int) -> float:
    """Write one patch's three images and its truth; returns the cloudy image's coverage."""
    from rasterio.crs import CRS

    clear, cloudy, s1, truth = generate_cr_patch(scene, patch, size, seed)
    season, number = scene.split("/")
    geo = roi_georef(f"{season.split('_')[0]}/{number}")
    crs, transform = CRS.from_epsg(geo.epsg), _patch_transform(geo, patch, size)
    tags = {"SYNTHETIC": "crbench.synth"}
    for mod, arr, names in (("s1", s1, S1_BANDS), ("s2", clear, S2_BANDS),
                            ("s2_cloudy", cloudy, S2_BANDS)):
        _write_tif(cr.file_path(root, season, mod, int(number), patch), arr, names, crs,
                   transform, tags)
    _save_npz(root / TRUTH_DIR / f"{season}_{number}_patch_{patch}.npz",
              {"classes": truth, "class_names": np.array([c.name.lower() for c in TruthClass])})
    cloud = np.isin(truth, (TruthClass.THICK, TruthClass.THIN, TruthClass.CIRRUS))
    return float(cloud.mean())


def synthesize_cr(root: Path, scenes: int = 3, patches: int = 2, size: int = 128,
                  seed: int = 0, force: bool = False) -> SynthSummary:
    """Write a synthetic SEN12MS-CR tree under ``root``.

    Args:
        root: output directory (new, empty or a previous synth output, unless ``force``).
        scenes: number of official scenes, in interleaved split order.
        patches: patches per scene (numbered 0..patches-1).
        size: patch side in pixels (multiple of 8, at least 32).
        seed: random seed.
        force: write into a non-empty directory that is not a previous synth output.

    Returns:
        A :class:`~.tree.SynthSummary` (``rois`` holds the scene keys, ``coverage`` the
        cloudy images' truth coverage).

    Raises:
        UsageError: a bad argument (named in the message) or a foreign non-empty ``root``.
    """
    keys = _resolve(scenes)
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE or size % 8:
        raise UsageError(f"size: got {size!r}; expected one side in pixels, a multiple of 8 "
                         f"and at least {MIN_SIZE}")
    _check_args(patches, seed, 1)
    root = Path(root)
    _prepare_root(root, force)  # clears a previous synth output of either data set
    summary = SynthSummary(root=root, rois=keys, patches=int(patches), size=int(size),
                           seed=int(seed), n_files=0, truth_dir=root / TRUTH_DIR)
    for scene in keys:
        for p in range(patches):
            summary.coverage.append(_write_cr_patch(root, scene, p, int(size), int(seed)))
            summary.n_files += len(cr.MODS)
    manifest = {"generator": "crbench.synth", "dataset": cr.SEN12MSCR, "rois": [],
                "scenes": list(keys), "patches": int(patches), "size": int(size),
                "seed": int(seed)}
    (root / TRUTH_DIR / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return summary


def cr_line(summary: SynthSummary) -> str:
    """One-line summary of :func:`synthesize_cr` for the CLI."""
    return (f"wrote {summary.n_files} GeoTIFFs to {summary.root}: SEN12MS-CR, "
            f"{len(summary.rois)} scenes x {summary.patches} patches (s1, s2, s2_cloudy), "
            f"{summary.size}x{summary.size} px, seed {summary.seed}; mean cloud coverage of "
            f"the cloudy images {summary.mean_coverage:.2f}; ground truth in "
            f"{summary.truth_dir}")
