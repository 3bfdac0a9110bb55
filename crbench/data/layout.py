"""Paths and file names of the SEN12MS-CR-TS tree (DESIGN.md, "Data conventions").

``ROOT/<ROIsXXXX>/<id>/{S1,S2}/<t>/<mod>_<ROIsXXXX>_<id>_ImgNo_<t>_<YYYY-MM-DD>_patch_<n>.tif``
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from crbench.errors import DataError

FILE_RE = re.compile(
    r"^(?P<mod>s1|s2)_(?P<rois>ROIs\d{4})_(?P<roi_id>\d+)_ImgNo_(?P<t>\d+)_"
    r"(?P<date>\d{4}-\d{2}-\d{2})_patch_(?P<patch>\d+)\.tif$"
)

EXPECTED_LAYOUT = (
    "ROOT/<ROIsXXXX>/<id>/{S1,S2}/<t>/<mod>_<ROIsXXXX>_<id>_ImgNo_<t>_<YYYY-MM-DD>_patch_<n>.tif "
    "with t = 0..29 (e.g. ROOT/ROIs1868/119/S2/0/s2_ROIs1868_119_ImgNo_0_2018-01-03_patch_1.tif)"
)


MAX_PATCH = 2**31 - 1
"""Largest patch number a file name may carry (the real dataset's are below 10 000)."""


class BadNameError(DataError):
    """A file name has the layout's form but an impossible date or patch number."""


@dataclass(frozen=True)
class FileKey:
    """What a file name says: modality, ROI ("ROIs1868/119"), date index, date and patch."""

    mod: str
    roi: str
    t: int
    day: date
    patch: int


def parse_name(name: str) -> FileKey | None:
    """Parse a file name (not a path); None if it does not follow the layout.

    Raises:
        BadNameError: the name has the layout's form but its date is not a calendar date
            (2018-02-30) or its patch number exceeds :data:`MAX_PATCH`; the message names
            the file.
    """
    m = FILE_RE.match(name)
    if m is None:
        return None
    try:
        day = date.fromisoformat(m["date"])
    except ValueError:
        raise BadNameError(f"{name}: date {m['date']} is not a calendar date") from None
    patch = int(m["patch"])
    if patch > MAX_PATCH:
        raise BadNameError(f"{name}: patch number {m['patch']} is too large (at most "
                           f"{MAX_PATCH})")
    return FileKey(mod=m["mod"], roi=f"{m['rois']}/{m['roi_id']}", t=int(m["t"]), day=day,
                   patch=patch)


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


def not_a_file(path: Path) -> str | None:
    """Why an image path cannot be read as a file (a directory, a broken link), or None."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return f"is a broken symbolic link (its target {os.readlink(path)} does not exist)"
    if path.is_dir():
        return "is a directory, not a GeoTIFF file"
    if path.exists() and not path.is_file():
        return "is not a regular file"
    return None


@dataclass
class DateListing:
    """The images of one date directory, by the one rule verify and the index share.

    Attributes:
        files: patch number -> (path, parsed name) of each well-named regular file.
        ignored: paths of entries that are not images of this directory (``.aux.xml``
            sidecars, another ROI's or date's files).
        misnamed: (path, why) of names of the layout's form with an impossible date or
            patch number.
        broken: (path, why) of well-named entries that are not readable files (a directory,
            a broken symbolic link).
        duplicates: (patch, first, second) for names that map to the same patch
            (``_patch_0`` and ``_patch_00``); that patch has no usable image at this date.
    """

    files: dict[int, tuple[Path, FileKey]] = field(default_factory=dict)
    ignored: list[Path] = field(default_factory=list)
    misnamed: list[tuple[Path, str]] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)
    duplicates: list[tuple[int, Path, Path]] = field(default_factory=list)


def list_date_dir(directory: Path, mod: str, roi: str, t: int) -> DateListing:
    """Classify the entries of ``ROOT/<roi>/<MOD>/<t>`` (``mod`` 's1' or 's2').

    Raises:
        DataError: the directory is a file, a symbolic-link loop or cannot be listed; the
            message names it. (A missing directory gives an empty listing.)
    """
    listing = DateListing()
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return listing
    except OSError as exc:
        what = "is not a directory" if isinstance(exc, NotADirectoryError) else \
            f"cannot be listed ({exc.strerror})"
        raise DataError(f"{directory}: date directory {what}; expected a directory of "
                        "GeoTIFFs") from None
    for entry in entries:
        path = Path(entry.path)
        try:
            key = parse_name(entry.name)
        except BadNameError as exc:
            listing.misnamed.append((path, str(exc).removeprefix(f"{entry.name}: ")))
            continue
        if key is None or key.mod != mod or key.roi != roi or key.t != t:
            listing.ignored.append(path)
            continue
        # is_file() reads the type scandir already has: no stat for a regular file (a tree
        # holds hundreds of thousands); only the rest is looked at closely
        why = None if entry.is_file() else not_a_file(path)
        if why is not None:
            listing.broken.append((path, why))
        elif key.patch in listing.files:
            listing.duplicates.append((key.patch, listing.files[key.patch][0], path))
        else:
            listing.files[key.patch] = (path, key)
    for patch, _, _ in listing.duplicates:
        listing.files.pop(patch, None)
    return listing
