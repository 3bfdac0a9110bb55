"""`crbench data verify`: check a SEN12MS-CR-TS tree and name everything missing or broken.

The tree is walked once: every ROI directory, both modalities, all 30 date directories and
every file in them. Every image is opened and read with rasterio (which also catches
truncated files and NaN/inf pixels); S2 images are checked for being blank, and every image
for value ranges implausible for L1C digital numbers or S1 dB (warnings, with the range seen).
Date directories are listed by :func:`crbench.data.layout.list_date_dir`, the rule the index
uses too: two names of one image (``_patch_0`` and ``_patch_00``) are an error naming both,
and neither is used. A patch is *complete* when all 30 dates of S1 and S2 are present and
readable with the right band count and size. Missing dates, files and modalities are
warnings: a patch of a partial tree is used with the dates it has S2 images of (at least
L + 1 for the fixed sampler, S1 only for the methods that need it); the tree is *usable* when
some patch is complete or has at least two such dates, and the summary counts the patches
usable at L = 3, 4, 5.
"""

from __future__ import annotations

import enum
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crbench.constants import ALL_ROIS, BLANK_EPS, MODALITIES, N_DATES, N_S1_BANDS, N_S2_BANDS
from crbench.data.cr import CR_LAYOUT
from crbench.data.io import BandCountError, odd_values, read_raster, scale_s2
from crbench.data.layout import EXPECTED_LAYOUT, list_date_dir, parse_name
from crbench.errors import DataError, DatasetNotFoundError

if TYPE_CHECKING:
    from crbench.data.index import PatchRecord

_ROIS_DIR = re.compile(r"^ROIs\d{4}$")
_BANDS = {"S1": N_S1_BANDS, "S2": N_S2_BANDS}


class Severity(enum.Enum):
    """ERROR: data is missing or unusable; WARNING: usable, but worth knowing."""

    ERROR = "error"
    WARNING = "warning"


class ProblemKind(enum.Enum):
    """What is wrong with one path of the tree."""

    ROOT_MISSING = "root_missing"
    ROOT_EMPTY = "root_empty"
    UNKNOWN_ROI = "unknown_roi"
    UNEXPECTED_ENTRY = "unexpected_entry"
    BAD_NAME = "bad_name"
    MISSING_MODALITY = "missing_modality"
    MISSING_DATE = "missing_date"
    MISSING_FILE = "missing_file"
    PATCH_MISMATCH = "patch_mismatch"
    UNREADABLE = "unreadable"
    WRONG_BANDS = "wrong_bands"
    SHAPE_MISMATCH = "shape_mismatch"
    NONFINITE = "nonfinite"
    BLANK = "blank"
    CONSTANT = "constant"
    DUPLICATE = "duplicate"
    ODD_VALUES = "odd_values"

    @property
    def severity(self) -> Severity:
        """Errors make data unusable; the rest are warnings."""
        return Severity.WARNING if self in _WARNINGS else Severity.ERROR


_WARNINGS = frozenset({ProblemKind.UNKNOWN_ROI, ProblemKind.UNEXPECTED_ENTRY,
                       ProblemKind.BAD_NAME, ProblemKind.NONFINITE, ProblemKind.BLANK,
                       ProblemKind.CONSTANT, ProblemKind.ODD_VALUES, ProblemKind.MISSING_DATE,
                       ProblemKind.MISSING_FILE, ProblemKind.MISSING_MODALITY,
                       ProblemKind.PATCH_MISMATCH})
"""Missing dates, files and modalities are warnings: a partial tree's patches are used with
the dates they have (:attr:`VerifyReport.usable_at`)."""

REPORTED_L = (3, 4, 5)
"""The L values whose usable-patch counts the summary gives."""


@dataclass(frozen=True)
class Problem:
    """One finding: its kind, the path (relative to the root where possible) and details."""

    kind: ProblemKind
    path: str
    detail: str

    @property
    def severity(self) -> Severity:
        return self.kind.severity

    def __str__(self) -> str:
        return f"{self.severity.value.upper():7} {self.kind.value:17} {self.path}: {self.detail}"


def problem_lines(ordered: Sequence[Problem], limit: int | None) -> list[str]:
    """One line per problem (the first ``limit``), then the rest counted by kind."""
    shown = ordered if limit is None else ordered[:limit]
    rest = Counter(p.kind.value for p in ordered[len(shown):])
    more = ["  ... and " + ", ".join(f"{n} more {k}" for k, n in rest.items())] if rest else []
    return [str(p) for p in shown] + more


@dataclass
class VerifyReport:
    """Result of :func:`verify_tree`.

    Attributes:
        root: The tree checked.
        problems: Every finding, in walk order.
        n_rois: ROI directories found.
        n_patches: Distinct (ROI, patch) pairs with at least one image.
        n_complete: Patches with all 30 dates of S1 and S2 present and readable.
        n_files: Images opened.
        patch_dates: (ROI, patch) -> (dates with a readable S2 image, whether every one of
            them has its S1 image) for each patch without an error-severity problem.
        roi_dates: ROI -> {modality: number of date directories present}.
    """

    root: Path
    problems: list[Problem] = field(default_factory=list)
    n_rois: int = 0
    n_patches: int = 0
    n_complete: int = 0
    n_files: int = 0
    patch_dates: dict[tuple[str, int], tuple[int, bool]] = field(default_factory=dict)
    roi_dates: dict[str, dict[str, int]] = field(default_factory=dict)

    def usable_at(self, L: int, s1: bool = False) -> int:
        """Patches the fixed sampler can use at ``L`` (at least L + 1 dates); with ``s1``
        only those that have S1 at every date (for methods that need S1)."""
        return sum(1 for n, has_s1 in self.patch_dates.values()
                   if n >= L + 1 and (has_s1 or not s1))

    @property
    def usable(self) -> bool:
        """True when at least one patch is complete or usable with its dates at L = 1."""
        return self.n_complete > 0 or self.usable_at(1) > 0

    def _partial_lines(self) -> list[str]:
        """Per-ROI date counts and usable patches at each L, for a partial tree."""
        lines = [f"  {roi}: dates present: " + ", ".join(f"{m} {n} of {N_DATES}"
                                                           for m, n in mods.items())
                 for roi, mods in self.roi_dates.items()
                 if any(n < N_DATES for n in mods.values())]
        counts = ", ".join(f"L={L}: {self.usable_at(L)} ({self.usable_at(L, s1=True)} with S1)"
                           for L in REPORTED_L)
        return [*lines, f"  patches usable with the dates present: {counts}"]

    @property
    def errors(self) -> list[Problem]:
        """Error-severity problems, sorted by path."""
        return sorted((p for p in self.problems if p.severity is Severity.ERROR),
                      key=lambda p: p.path)

    @property
    def warnings(self) -> list[Problem]:
        """Warning-severity problems, sorted by path."""
        return sorted((p for p in self.problems if p.severity is Severity.WARNING),
                      key=lambda p: p.path)

    def by_kind(self, kind: ProblemKind) -> list[Problem]:
        """The problems of one kind."""
        return [p for p in self.problems if p.kind is kind]

    def summary(self, limit: int | None = None) -> str:
        """Multi-line report: counts, one line per problem (errors first), the verdict.

        Args:
            limit: Show at most this many problem lines (the rest are counted by kind).
        """
        unknown = len(self.by_kind(ProblemKind.UNKNOWN_ROI))
        lines = [f"SEN12MS-CR-TS tree at {self.root}",
                 f"  ROIs: {self.n_rois} ({unknown} not in the official lists), patches: "
                 f"{self.n_patches} ({self.n_complete} complete), images read: {self.n_files}",
                 f"  errors: {len(self.errors)}, warnings: {len(self.warnings)}"]
        lines += problem_lines(self.errors + self.warnings, limit)
        if self.n_complete < self.n_patches and self.patch_dates:
            lines += self._partial_lines()
        if self.n_complete > 0:
            lines.append(f"usable: yes ({self.n_complete} of {self.n_patches} patches complete)")
        elif self.usable:
            best = max(n for n, _ in self.patch_dates.values())
            s1 = "" if self.usable_at(1, s1=True) else "; no patch has S1 at every date: " \
                "S1-free methods only (e.g. least_cloudy, mosaicing)"
            lines.append(f"usable: yes, partial tree (0 of {self.n_patches} patches complete; "
                         f"up to {best} dates, so L <= {best - 1}{s1})")
        elif self.by_kind(ProblemKind.ROOT_MISSING) or self.by_kind(ProblemKind.ROOT_EMPTY):
            lines.append("usable: no - there is no data under the root (see above)")
        else:
            lines.append("usable: no - no patch has all 30 dates of S1 and S2 present and "
                         f"readable; expected layout: {EXPECTED_LAYOUT}")
        return "\n".join(lines)


@dataclass
class _Roi:
    """What one ROI directory holds: files[mod][t][patch] and the date dirs present."""

    key: str
    files: dict[str, dict[int, dict[int, Path]]] = field(default_factory=dict)
    dates: dict[str, set[int]] = field(default_factory=dict)


class _Walker:
    """Collects problems while walking the tree; paths are reported relative to the root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []
        self.bad: dict[str, set[int]] = {}  # ROI -> patches the index would refuse (-1: all)

    def rel(self, path: Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def add(self, kind: ProblemKind, path: Path | str, detail: str) -> None:
        where = self.rel(path) if isinstance(path, Path) else path
        self.problems.append(Problem(kind, where, detail))

    def roi_dirs(self) -> list[tuple[str, Path]]:
        """(ROI key, directory) of every ``ROIsXXXX/<id>`` directory, sorted."""
        found = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.name.startswith((".", "_")):
                continue  # caches (.crbench) and sidecars (_truth)
            if not (_is_dir(entry) and _ROIS_DIR.match(entry.name)):
                self.add(ProblemKind.UNEXPECTED_ENTRY, Path(entry.path),
                         "not a ROIsXXXX directory; ignored")
                continue
            for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
                if _is_dir(sub) and sub.name.isdigit():
                    found.append((f"{entry.name}/{sub.name}", Path(sub.path)))
                else:
                    self.add(ProblemKind.UNEXPECTED_ENTRY, Path(sub.path),
                             "not a numbered ROI directory; ignored")
        return found

    def scan_roi(self, key: str, path: Path) -> _Roi:
        """Walk ``{S1,S2}/<t>/`` of one ROI, naming missing modalities and dates."""
        roi = _Roi(key)
        if key not in ALL_ROIS:
            self.add(ProblemKind.UNKNOWN_ROI, path, "not in the official ROI lists; it belongs "
                     "to no split and is never indexed")
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.name not in MODALITIES and not entry.name.startswith("."):
                self.add(ProblemKind.UNEXPECTED_ENTRY, Path(entry.path),
                         f"not one of {', '.join(MODALITIES)}; ignored")
        for mod in MODALITIES:
            mdir = path / mod
            if not mdir.is_dir():
                self.add(ProblemKind.MISSING_MODALITY, mdir, f"{mod} directory missing; expected "
                         f"{mod}/0 .. {mod}/{N_DATES - 1}")
                continue
            roi.files[mod], roi.dates[mod] = {}, set()
            for entry in sorted(os.scandir(mdir), key=lambda e: e.name):
                t = int(entry.name) if entry.name.isdigit() else -1
                if not 0 <= t < N_DATES:
                    self.add(ProblemKind.UNEXPECTED_ENTRY, Path(entry.path),
                             f"not a date directory 0..{N_DATES - 1}; ignored")
                    continue
                if not _is_dir(entry):
                    what = "not a directory" if os.path.exists(entry.path) else \
                        "a broken or looping symbolic link"
                    self.add(ProblemKind.UNEXPECTED_ENTRY, Path(entry.path),
                             f"date t={t} is {what}; ignored")
                    continue
                roi.dates[mod].add(t)
                roi.files[mod][t] = self.scan_date(key, mod, t, Path(entry.path))
            if not roi.dates[mod]:
                self.add(ProblemKind.MISSING_DATE, mdir, f"no date directories at all; "
                         f"expected {mod}/0 .. {mod}/{N_DATES - 1}")
                continue
            for t in sorted(set(range(N_DATES)) - roi.dates[mod]):
                self.add(ProblemKind.MISSING_DATE, mdir / str(t),
                         f"date directory missing (no {mod} images of date t={t}); expected "
                         f"t = 0..{N_DATES - 1}")
        return roi

    def scan_date(self, roi: str, mod: str, t: int, tdir: Path) -> dict[int, Path]:
        """Files of one date directory by patch number (the rule of
        :func:`crbench.data.layout.list_date_dir`, shared with the index); misnamed, broken
        and duplicate files are reported."""
        try:
            listing = list_date_dir(tdir, mod.lower(), roi, t)
        except DataError as exc:
            self.add(ProblemKind.UNREADABLE, tdir, str(exc).removeprefix(f"{tdir}: "))
            self.bad.setdefault(roi, set()).add(-1)
            return {}
        rois, roi_id = roi.split("/")
        expected = f"expected {mod.lower()}_{rois}_{roi_id}_ImgNo_{t}_<YYYY-MM-DD>_patch_<n>.tif"
        for path in listing.ignored:
            self.add(ProblemKind.BAD_NAME, path, f"does not follow the layout; {expected}; "
                     "ignored")
        for path, why in listing.misnamed:
            self.add(ProblemKind.BAD_NAME, path, f"{why}; {expected}; ignored")
        for path, why in listing.broken:
            self.add(ProblemKind.UNREADABLE, path, f"{why}; expected a GeoTIFF image")
            key = parse_name(path.name)
            self.bad.setdefault(roi, set()).add(key.patch if key else -1)
        for patch, first, second in listing.duplicates:
            self.bad.setdefault(roi, set()).add(patch)
            self.add(ProblemKind.DUPLICATE, second, f"same {mod} image (date t={t}) as "
                     f"{first.name} under another name; remove one (neither is used)")
        return {patch: path for patch, (path, _) in listing.files.items()}

    def match_patches(self, roi: _Roi) -> set[int]:
        """Name missing files and S1/S2 patch mismatches; return patches with all files."""
        present = {mod: set().union(*roi.files[mod].values()) if roi.files[mod] else set()
                   for mod in roi.files}
        patches = set().union(*present.values()) if present else set()
        full = set()
        for patch in sorted(patches):
            ok = len(present) == len(MODALITIES)
            for mod, have in present.items():
                other = next((m for m in present if m != mod), None)
                if patch not in have:
                    self.add(ProblemKind.PATCH_MISMATCH, self.root / roi.key / mod,
                             f"patch {patch} has {other} images but no {mod} image at any date")
                    ok = False
                    continue
                for t in sorted(roi.dates[mod]):
                    if patch not in roi.files[mod][t]:
                        self.add(ProblemKind.MISSING_FILE, self.root / roi.key / mod / str(t),
                                 f"no {mod} image of patch {patch} at date t={t}")
                        ok = False
            ok = ok and all(len(roi.dates[m]) == N_DATES for m in present)
            if ok:
                full.add(patch)
        return full


def _is_dir(entry: os.DirEntry) -> bool:
    """``entry.is_dir()``, False for a symbolic-link loop or an unreadable entry."""
    try:
        return entry.is_dir()
    except OSError:
        return False


@dataclass
class _FileCheck:
    path: Path
    mod: str
    problems: list[tuple[ProblemKind, str]]
    shape: tuple[int, int] | None


def _check_file(path: Path, mod: str) -> _FileCheck:
    """Read one image fully: readability, band count, NaN/inf, blank or constant content."""
    try:
        read = read_raster(path, _BANDS[mod])
    except BandCountError as err:
        return _FileCheck(path, mod, [(ProblemKind.WRONG_BANDS, f"found {err.found} bands, "
                                       f"expected {err.expected} for {mod}")], None)
    except (DataError, DatasetNotFoundError) as err:
        detail = str(err).removeprefix(f"{path}: ")
        return _FileCheck(path, mod, [(ProblemKind.UNREADABLE, detail)], None)
    found: list[tuple[ProblemKind, str]] = []
    arr = read.array
    if read.nonfinite:
        found.append((ProblemKind.NONFINITE, f"{read.nonfinite} NaN/inf values (replaced by 0 "
                      "when read)"))
    odd = odd_values(read, mod)
    if odd is not None:
        found.append((ProblemKind.ODD_VALUES, odd))
    if mod == "S2":
        img = scale_s2(arr)
        if img.mean() < BLANK_EPS and img.std() < BLANK_EPS:
            found.append((ProblemKind.BLANK, "blank image (all pixels 0); counts as fully "
                          "cloudy"))
            return _FileCheck(path, mod, found, arr.shape[1:])
    flat = arr.reshape(arr.shape[0], -1)
    if flat.shape[1] > 1 and bool(np.all(flat.max(axis=1) == flat.min(axis=1))):
        found.append((ProblemKind.CONSTANT, "constant image (every band has a single value)"))
    return _FileCheck(path, mod, found, arr.shape[1:])


def _check_files(items: list[tuple[Path, str]], progress: bool, workers: int
                 ) -> Iterable[_FileCheck]:
    """Check files in a thread pool (rasterio releases the GIL while reading)."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda it: _check_file(*it), items, chunksize=1)
        yield from tqdm(results, total=len(items), desc="verify", unit="img",
                        disable=not progress)


def verify_tree(root: Path, progress: bool = False, workers: int = 4) -> VerifyReport:
    """Check a SEN12MS-CR-TS tree and report every missing, broken or odd file.

    Args:
        root: The data root (``ROOT/<ROIsXXXX>/<id>/{S1,S2}/<t>/...``).
        progress: Show a tqdm progress bar on stderr while reading images.
        workers: Threads reading images.

    Returns:
        The report; ``report.usable`` is False when no patch is complete.
    """
    root = Path(root)
    report = VerifyReport(root=root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        report.problems.append(Problem(ProblemKind.ROOT_MISSING, str(root),
                                       f"data root {what}; expected {EXPECTED_LAYOUT}"))
        return report
    walker = _Walker(root)
    rois = [walker.scan_roi(key, path) for key, path in walker.roi_dirs()]
    report.n_rois = len(rois)
    if not rois:
        walker.add(ProblemKind.ROOT_EMPTY, str(root), "no ROI directories found; expected "
                   f"SEN12MS-CR {CR_LAYOUT} or SEN12MS-CR-TS {EXPECTED_LAYOUT}")
    full = {roi.key: walker.match_patches(roi) for roi in rois}
    items = [(path, mod) for roi in rois for mod, dates in roi.files.items()
             for t in sorted(dates) for path in dates[t].values()]
    checks = list(_check_files(items, progress, workers))
    report.n_files = len(checks)
    broken = _file_problems(walker, checks)
    for roi in rois:
        patches = {p for files in roi.files.values() for d in files.values() for p in d}
        report.n_patches += len(patches)
        report.n_complete += len(full[roi.key] - broken.get(roi.key, set()))
        report.roi_dates[roi.key] = {m: len(roi.dates.get(m, ())) for m in MODALITIES}
        bad = broken.get(roi.key, set()) | walker.bad.get(roi.key, set())
        if -1 not in bad:  # a listing problem the index refuses: no patch of the ROI is used
            report.patch_dates.update(_patch_dates(roi, patches - bad))
    report.problems = walker.problems
    return report


def _patch_dates(roi: _Roi, patches: Iterable[int]) -> dict[tuple[str, int], tuple[int, bool]]:
    """(ROI, patch) -> (dates with an S2 image, S1 present at each of them)."""
    s2, s1 = roi.files.get("S2", {}), roi.files.get("S1", {})
    out = {}
    for patch in patches:
        ts = [t for t, files in s2.items() if patch in files]
        if ts:
            out[(roi.key, patch)] = (len(ts), all(patch in s1.get(t, {}) for t in ts))
    return out


def _file_problems(walker: _Walker, checks: list[_FileCheck]) -> dict[str, set[int]]:
    """Record per-file problems and shape mismatches; return patches with a broken file."""
    broken: dict[str, set[int]] = {}
    shapes: dict[tuple[str, int], Counter] = {}
    keyed = []
    for chk in checks:
        key = parse_name(chk.path.name)
        if key is None:  # cannot happen: only well-named files are checked
            continue
        keyed.append((chk, key))
        for kind, detail in chk.problems:
            walker.add(kind, chk.path, detail)
            if kind.severity is Severity.ERROR:
                broken.setdefault(key.roi, set()).add(key.patch)
        if chk.shape is not None:
            shapes.setdefault((key.roi, key.patch), Counter())[chk.shape] += 1
    for chk, key in keyed:
        counts = shapes.get((key.roi, key.patch))
        if chk.shape is None or counts is None or len(counts) < 2:
            continue
        common = counts.most_common(1)[0][0]
        if chk.shape != common:
            walker.add(ProblemKind.SHAPE_MISMATCH, chk.path, f"size {chk.shape[0]}x"
                       f"{chk.shape[1]} differs from the other images of patch {key.patch} "
                       f"({common[0]}x{common[1]})")
            broken.setdefault(key.roi, set()).add(key.patch)
    return broken


SAMPLED_FILES = 8
"""Images per modality that :func:`sample_odd_values` reads."""


def sample_odd_values(records: Sequence[PatchRecord], n: int = SAMPLED_FILES
                      ) -> list[tuple[Path, str]]:
    """Check the value ranges of a cheap sample of a split's images, not the whole tree.

    Reads ``n`` S2 and ``n`` S1 images (16 by default, whatever the tree's size), spread
    evenly over the patches and their 30 dates, so that a 1 TB tree is not read twice before
    a run. Unreadable images are skipped here (the run names them when it reaches them).

    Args:
        records: the patches of the split (:func:`crbench.data.index.scan_tree`).
        n: images per modality to read.

    Returns:
        (path, why) of each sampled image whose values look like other units
        (:func:`crbench.data.io.odd_values`); empty when all look right.
    """
    if not records:
        return []
    odd = []
    for i in range(n):
        rec = records[(i * len(records)) // n]
        t = (i * 7 + 3) % len(rec.s2)
        for mod, path in (("S2", rec.s2[t]), ("S1", rec.s1[t])):
            if path is None:  # a partial tree: no S1 image at this date
                continue
            try:
                why = odd_values(read_raster(path, _BANDS[mod]), mod)
            except (DataError, DatasetNotFoundError):
                continue
            if why is not None:
                odd.append((path, why))
    return odd
