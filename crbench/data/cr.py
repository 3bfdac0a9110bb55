"""SEN12MS-CR (Ebel et al. 2020), the mono-temporal sibling of SEN12MS-CR-TS: layout, splits,
layout detection and the patch scan.

Layout: ``ROOT/ROIsXXXX_<season>_{s1,s2,s2_cloudy}/<mod>_<scene>/
ROIsXXXX_<season>_<mod>_<scene>_p<n>.tif`` with one S1 image (``s1``), one cloud-free S2
image (``s2``) and one cloudy S2 image (``s2_cloudy``) per patch.

crbench reads a patch as a :class:`~crbench.data.records.PatchRecord` of two "dates": t = 0 is
the cloudy image (the input, L = 1), t = 1 the cloud-free one (the target); both carry the
patch's single S1 image and day 0 (the names carry no date). Index rows (``crbench data
index``) therefore read ``roi = "ROIsXXXX_<season>/<scene>"`` (e.g. ``ROIs1868_summer/19``),
``patch = n`` (the ``_p<n>`` of the names), ``input_idx = "0"``, ``target_idx = 1``.

Splits: the scene lists of UnCRtainTS ``data/dataLoader.py`` class ``SEN12MSCR`` ("define
splits conform with SEN12MS-CR-TS"; the SEN12MS-CR-TS toolbox's own ``SEN12MSCR`` class has
no splits). Its only region is ``all``. UnCRtainTS selects a patch when any listed entry is a
*substring* of its path, so its train entry ``ROIs1970_fall_s1/s1_1`` also takes scene 139 of
the test list (and 8 more val/test scenes: 1158_spring 17, 106, 123, 140; 1868_summer 73,
119; 1970_fall 65; 2017_winter 84), plus unlisted scenes such as 1970_fall 10..18. crbench
matches scenes exactly: every listed scene is in exactly one split and unlisted scenes are in
none.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import DataError, DatasetNotFoundError, UsageError
from .layout import EXPECTED_LAYOUT as TS_LAYOUT
from .records import PatchRecord
from .sampler import Selection

SEN12MSCR = "sen12mscr"
SEN12MSCRTS = "sen12mscrts"
DATASETS: tuple[str, ...] = (SEN12MSCR, SEN12MSCRTS)

MODS: tuple[str, ...] = ("s1", "s2", "s2_cloudy")
"""The three modality folders of a season: S1, cloud-free S2, cloudy S2."""
SEASONS: tuple[str, ...] = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall",
                            "ROIs2017_winter")
REGIONS: tuple[str, ...] = ("all",)

CR_LAYOUT = ("ROOT/ROIsXXXX_<season>_{s1,s2,s2_cloudy}/<mod>_<scene>/"
             "ROIsXXXX_<season>_<mod>_<scene>_p<n>.tif (e.g. ROOT/ROIs1868_summer_s2_cloudy/"
             "s2_cloudy_19/ROIs1868_summer_s2_cloudy_19_p30.tif)")

SEASON_DIR_RE = re.compile(r"^(?P<season>ROIs\d{4}_(?:spring|summer|fall|winter))_"
                           r"(?P<mod>s1|s2|s2_cloudy)$")
FILE_RE = re.compile(r"^(?P<season>ROIs\d{4}_(?:spring|summer|fall|winter))_"
                     r"(?P<mod>s1|s2_cloudy|s2)_(?P<scene>\d+)_p(?P<patch>\d+)\.tif$")
_TS_ROIS_RE = re.compile(r"^ROIs\d{4}$")

# UnCRtainTS data/dataLoader.py, class SEN12MSCR, self.splits (scene numbers per season)
SPLITS: dict[str, dict[str, tuple[int, ...]]] = {
    "train": {
        "ROIs1970_fall": (3, 22, 148, 107, 1, 114, 135, 40, 42, 31, 149, 64, 28, 144, 57, 35,
                          133, 30, 134, 141, 112, 116, 37, 26, 77, 100, 83, 71, 93, 119, 104,
                          136, 6, 41, 125, 91, 131, 120, 110, 19, 14, 81, 39, 109, 33, 88, 11,
                          128, 142, 122, 4, 27, 147, 85, 82, 105),
        "ROIs1158_spring": (9, 1, 124, 40, 101, 21, 134, 145, 141, 66, 8, 26, 77, 113, 100, 117,
                            119, 6, 58, 120, 110, 126, 115, 121, 39, 109, 63, 75, 132, 128, 142,
                            15, 45, 97, 147),
        "ROIs1868_summer": (90, 87, 25, 124, 114, 135, 40, 101, 42, 31, 36, 139, 56, 133, 55,
                            43, 113, 76, 123, 143, 93, 125, 89, 120, 126, 72, 115, 121, 146,
                            140, 95, 102, 7, 11, 132, 15, 137, 4, 27, 147, 86, 47, 100),
        "ROIs2017_winter": (68, 25, 62, 135, 42, 64, 21, 55, 112, 116, 8, 59, 49, 104, 81, 146,
                            75, 94, 102, 61, 47),
    },
    "val": {"ROIs2017_winter": (22, 107, 130, 84), "ROIs1868_summer": (19, 80, 127, 17),
            "ROIs1970_fall": (65,), "ROIs1158_spring": (17,)},
    "test": {"ROIs1158_spring": (106, 123, 140, 31, 44), "ROIs1868_summer": (119, 73),
             "ROIs1970_fall": (139,), "ROIs2017_winter": (108, 63)},
}


def scenes_for(split: str, region: str = "all") -> tuple[str, ...]:
    """Scene keys ``"ROIsXXXX_<season>/<scene>"`` of a split ("all": train, test, val).

    Raises:
        UsageError: unknown split, or a region other than ``all``.
    """
    if region not in REGIONS:
        raise UsageError(f"region: {region!r} is not defined for SEN12MS-CR (UnCRtainTS's "
                         "splits have no regions); expected all")
    if split not in ("train", "val", "test", "all"):
        raise UsageError(f"split: unknown value {split!r}; expected one of train, val, test, "
                         "all")
    parts = ("train", "test", "val") if split == "all" else (split,)
    return tuple(f"{season}/{n}" for part in parts for season, ns in SPLITS[part].items()
                 for n in ns)


def file_name(season: str, mod: str, scene: int, patch: int) -> str:
    """``ROIsXXXX_<season>_<mod>_<scene>_p<n>.tif``."""
    return f"{season}_{mod}_{scene}_p{patch}.tif"


def file_path(root: Path, season: str, mod: str, scene: int, patch: int) -> Path:
    """Path of one image: ``ROOT/<season>_<mod>/<mod>_<scene>/<file name>``."""
    return (Path(root) / f"{season}_{mod}" / f"{mod}_{scene}"
            / file_name(season, mod, scene, patch))


def detect_dataset(root: Path) -> str | None:
    """Which data set's layout ``root`` has: ``"sen12mscr"`` (a ``ROIsXXXX_<season>_<mod>``
    folder), ``"sen12mscrts"`` (a ``ROIsXXXX`` folder) or None (neither, or no directory).

    Raises:
        DataError: ``root`` holds folders of both layouts.
    """
    try:
        names = [e.name for e in os.scandir(root) if e.is_dir()]
    except OSError:
        return None
    cr = any(SEASON_DIR_RE.match(n) for n in names)
    ts = any(_TS_ROIS_RE.match(n) for n in names)
    if cr and ts:
        raise DataError(f"{root} holds both SEN12MS-CR (ROIsXXXX_<season>_<mod>) and "
                        "SEN12MS-CR-TS (ROIsXXXX) folders; expected one data set per root")
    return SEN12MSCR if cr else SEN12MSCRTS if ts else None


def resolve_dataset(root: Path, dataset: str | None = None, flag: str = "--data") -> str:
    """The data set of ``root``: detected from its layout, checked against ``dataset``.

    Args:
        root: the data root (must be a directory).
        dataset: ``"sen12mscr"``, ``"sen12mscrts"`` or None to auto-detect.
        flag: how the root was given (``--data`` or ``ROOT``), named in messages.

    Raises:
        UsageError: unknown ``dataset``, or one the layout contradicts.
        DatasetNotFoundError: ``root`` is missing or matches neither layout.
        DataError: ``root`` holds both layouts.
    """
    if dataset is not None and dataset not in DATASETS:
        raise UsageError(f"--dataset: unknown value {dataset!r}; expected one of "
                         f"{', '.join(DATASETS)}")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DatasetNotFoundError(f"{flag}: data root {str(root)!r} {what}; expected "
                                   f"SEN12MS-CR-TS {TS_LAYOUT} or SEN12MS-CR {CR_LAYOUT}")
    found = detect_dataset(root)
    if found is None:
        raise DatasetNotFoundError(
            f"{flag}: {str(root)!r} matches neither data set's layout; expected SEN12MS-CR-TS "
            f"{TS_LAYOUT} or SEN12MS-CR {CR_LAYOUT}")
    if dataset is not None and dataset != found:
        raise UsageError(f"--dataset: {dataset} given but {flag} {str(root)!r} has the "
                         f"{_NAMES[found]} layout; pass --dataset {found} or leave it out")
    return found


_NAMES = {SEN12MSCR: "SEN12MS-CR", SEN12MSCRTS: "SEN12MS-CR-TS"}


def list_scene(root: Path, season: str, mod: str, scene: int) -> dict[int, Path]:
    """patch number -> file of one scene folder (``ROOT/<season>_<mod>/<mod>_<scene>``);
    names of other forms, seasons, modalities or scenes are left out; a missing folder is
    empty."""
    directory = Path(root) / f"{season}_{mod}" / f"{mod}_{scene}"
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise DataError(f"{directory}: scene folder cannot be listed ({exc.strerror}); expected "
                        "a directory of GeoTIFFs") from None
    out = {}
    for entry in entries:
        m = FILE_RE.match(entry.name)
        if m and m["season"] == season and m["mod"] == mod and int(m["scene"]) == scene:
            out[int(m["patch"])] = Path(entry.path)
    return out


def scan_scene(root: Path, key: str) -> list[PatchRecord]:
    """Records of the patches of one scene that have all three images (as UnCRtainTS,
    patches lacking one are left out; ``crbench data verify`` names them)."""
    season, scene = key.split("/")
    files = {mod: list_scene(root, season, mod, int(scene)) for mod in MODS}
    records = []
    for patch in sorted(set.intersection(*(set(f) for f in files.values()))):
        s1 = files["s1"][patch]
        records.append(PatchRecord(key, patch, [s1, s1],
                                   [files["s2_cloudy"][patch], files["s2"][patch]], [0, 0],
                                   [0, 1]))
    return records


def scan_cr(root: Path, split: str = "test", region: str = "all") -> list[PatchRecord]:
    """List the complete patches of one SEN12MS-CR split from the file names.

    Scenes come in the order of UnCRtainTS's lists, patches by number.

    Raises:
        UsageError: unknown split, or a region other than ``all``.
        DatasetNotFoundError: no patch of the split is present.
    """
    scenes = scenes_for(split, region)
    records = [rec for key in scenes for rec in scan_scene(root, key)]
    if not records:
        raise DatasetNotFoundError(
            f"split {split!r} of SEN12MS-CR is empty under {str(root)!r}: no patch of its "
            f"scenes ({', '.join(scenes[:6])}, ... {len(scenes)} in all) has its s1, s2 and "
            f"s2_cloudy images; expected layout: {CR_LAYOUT}")
    return records


def check_cr_L(L: int) -> int:
    """L for SEN12MS-CR, which has one cloudy image per patch.

    Raises:
        UsageError: ``L`` is not 1.
    """
    if L != 1:
        raise UsageError(f"L: bad value {L!r} for SEN12MS-CR, which has one cloudy image per "
                         "patch; expected 1")
    return 1


def select_cr(coverage: list[float], min_cov: float = 0.0, max_cov: float = 1.0) -> Selection:
    """The one sample of a SEN12MS-CR patch: input t = 0 (cloudy), target t = 1 (clear).

    It matches when the cloudy image's coverage lies in [min_cov, max_cov]. The target is the
    data set's cloud-free image whatever s2cloudless says of it (its coverage is recorded in
    the index, ``coverage_target``): SEN12MS-CR's protocol evaluates every test patch, and
    s2cloudless flags bright clear surfaces too, so crbench does not apply SEN12MS-CR-TS's
    ``target coverage <= 1e-3`` rule here.
    """
    return Selection([0], 1, bool(min_cov <= coverage[0] <= max_cov))
