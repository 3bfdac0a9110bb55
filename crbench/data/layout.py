"""Paths and file names of the SEN12MS-CR-TS tree (DESIGN.md, "Data conventions").

``ROOT/<ROIsXXXX>/<id>/{S1,S2}/<t>/<mod>_<ROIsXXXX>_<id>_ImgNo_<t>_<YYYY-MM-DD>_patch_<n>.tif``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

FILE_RE = re.compile(
    r"^(?P<mod>s1|s2)_(?P<rois>ROIs\d{4})_(?P<roi_id>\d+)_ImgNo_(?P<t>\d+)_"
    r"(?P<date>\d{4}-\d{2}-\d{2})_patch_(?P<patch>\d+)\.tif$"
)

EXPECTED_LAYOUT = (
    "ROOT/<ROIsXXXX>/<id>/{S1,S2}/<t>/<mod>_<ROIsXXXX>_<id>_ImgNo_<t>_<YYYY-MM-DD>_patch_<n>.tif "
    "with t = 0..29 (e.g. ROOT/ROIs1868/119/S2/0/s2_ROIs1868_119_ImgNo_0_2018-01-03_patch_1.tif)"
)


@dataclass(frozen=True)
class FileKey:
    """What a file name says: modality, ROI ("ROIs1868/119"), date index, date and patch."""

    mod: str
    roi: str
    t: int
    day: date
    patch: int


def parse_name(name: str) -> FileKey | None:
    """Parse a file name (not a path); None if it does not follow the layout."""
    m = FILE_RE.match(name)
    if m is None:
        return None
    return FileKey(mod=m["mod"], roi=f"{m['rois']}/{m['roi_id']}", t=int(m["t"]),
                   day=date.fromisoformat(m["date"]), patch=int(m["patch"]))


def file_name(mod: str, roi: str, t: int, day: date, patch: int) -> str:
    """File name for modality ``mod`` ('s1' or 's2') of ROI key ``roi`` ('ROIs1868/119')."""
    rois, roi_id = roi.split("/")
    return f"{mod}_{rois}_{roi_id}_ImgNo_{t}_{day.isoformat()}_patch_{patch}.tif"


def file_path(root: Path, mod: str, roi: str, t: int, day: date, patch: int) -> Path:
    """Full path of one image in the tree."""
    return Path(root) / roi / mod.upper() / str(t) / file_name(mod, roi, t, day, patch)


def date_dir(root: Path, roi: str, mod: str, t: int) -> Path:
    """Directory ``ROOT/<roi>/<MOD>/<t>`` holding all patches of one date."""
    return Path(root) / roi / mod.upper() / str(t)
