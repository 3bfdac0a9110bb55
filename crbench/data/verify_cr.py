"""`crbench data verify` for a SEN12MS-CR tree (:mod:`crbench.data.cr`).

Every ``ROIsXXXX_<season>_<mod>/<mod>_<scene>/`` folder is walked and every image read as
:func:`crbench.data.verify.verify_tree` reads SEN12MS-CR-TS images (band count, NaN/inf,
blank, constant, odd value ranges). A patch is *complete* when its S1, cloud-free S2
(``s2``, the target) and cloudy S2 (``s2_cloudy``, the input) are present, readable and of one
size; only complete patches are indexed and run (as UnCRtainTS, which skips unpaired
patches). A patch lacking one of them is named (a warning: the rest of the tree is usable);
the tree is usable when at least one patch is complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import cr
from .verify import Problem, ProblemKind, Severity, VerifyReport, _check_files, problem_lines

_ROLE = {"s1": "S1 image", "s2": "cloud-free S2 image (the target)",
         "s2_cloudy": "cloudy S2 image (the input)"}
_MOD_KIND = {"s1": "S1", "s2": "S2", "s2_cloudy": "S2"}


@dataclass
class CRVerifyReport(VerifyReport):
    """:class:`~crbench.data.verify.VerifyReport` of a SEN12MS-CR tree: ``n_rois`` counts
    scenes, ``n_complete`` the patches with all three images readable, ``patch_dates`` holds
    (scene, patch) -> (2, True) for each of them (usable at L = 1 only)."""

    unknown: list[str] = field(default_factory=list)

    def summary(self, limit: int | None = None) -> str:
        """Multi-line report: counts, one line per problem (errors first), the verdict."""
        lines = [f"SEN12MS-CR tree at {self.root}",
                 f"  scenes: {self.n_rois} ({len(self.unknown)} not in the official split "
                 f"lists), patches: {self.n_patches} ({self.n_complete} complete: s1, s2 and "
                 f"s2_cloudy readable), images read: {self.n_files}",
                 f"  errors: {len(self.errors)}, warnings: {len(self.warnings)}"]
        lines += problem_lines(self.errors + self.warnings, limit)
        if self.n_complete:
            lines.append(f"usable: yes ({self.n_complete} of {self.n_patches} patches complete; "
                         "L = 1)")
        else:
            lines.append("usable: no - no patch has its s1, s2 (cloud-free target) and "
                         f"s2_cloudy images present and readable; expected layout: "
                         f"{cr.CR_LAYOUT}")
        return "\n".join(lines)


def _scene_dirs(root: Path, report: CRVerifyReport) -> list[tuple[str, str, int, Path]]:
    """(season, mod, scene, folder) of every scene folder; other entries are reported."""
    found = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith((".", "_")):
            continue  # caches (.crbench) and sidecars (_truth)
        m = cr.SEASON_DIR_RE.match(entry.name)
        if m is None or not entry.is_dir():
            report.problems.append(Problem(ProblemKind.UNEXPECTED_ENTRY, entry.name,
                                           "not a ROIsXXXX_<season>_<mod> directory; ignored"))
            continue
        mod = m["mod"]
        for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
            number = sub.name.removeprefix(f"{mod}_")
            if not (sub.is_dir() and sub.name.startswith(f"{mod}_") and number.isdigit()):
                report.problems.append(Problem(
                    ProblemKind.UNEXPECTED_ENTRY, f"{entry.name}/{sub.name}",
                    f"not a {mod}_<scene> directory; ignored"))
                continue
            found.append((m["season"], mod, int(number), Path(sub.path)))
    return found


def _patches(root: Path, report: CRVerifyReport) -> dict[tuple[str, int], dict[str, Path]]:
    """(scene key, patch) -> {mod: path}; misnamed files reported."""
    patches: dict[tuple[str, int], dict[str, Path]] = {}
    scenes = set()
    for season, mod, number, folder in _scene_dirs(root, report):
        key = f"{season}/{number}"
        scenes.add(key)
        files = cr.list_scene(root, season, mod, number)
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if Path(entry.path) not in files.values():
                report.problems.append(Problem(
                    ProblemKind.BAD_NAME, _rel(root, Path(entry.path)),
                    f"expected {cr.file_name(season, mod, number, 0).replace('_p0', '_p<n>')}; "
                    "ignored"))
        for patch, path in files.items():
            patches.setdefault((key, patch), {})[mod] = path
    official = set(cr.scenes_for("all"))
    report.unknown = sorted(scenes - official)
    report.problems += [Problem(ProblemKind.UNKNOWN_ROI, key, "scene not in the official "
                                "split lists; it belongs to no split and is never indexed")
                        for key in report.unknown]
    report.n_rois = len(scenes)
    return patches


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def verify_cr(root: Path, progress: bool = False, workers: int = 4) -> CRVerifyReport:
    """Check a SEN12MS-CR tree and report every missing, broken or odd image.

    Returns:
        The report; ``report.usable`` is False when no patch is complete.
    """
    root = Path(root)
    report = CRVerifyReport(root=root)
    patches = _patches(root, report)
    report.n_patches = len(patches)
    items = [(path, _MOD_KIND[mod]) for files in patches.values()
             for mod, path in sorted(files.items())]
    checks = {chk.path: chk for chk in _check_files(items, progress, workers)}
    report.n_files = len(checks)
    for (key, patch), files in sorted(patches.items()):
        ok = True
        for mod in cr.MODS:
            if mod not in files:
                report.problems.append(Problem(
                    ProblemKind.MISSING_FILE, _rel(root, _path(root, key, mod, patch)),
                    f"no {_ROLE[mod]} of patch {patch}; the patch is not used"))
                ok = False
        shapes = set()
        for path in files.values():
            chk = checks[path]
            for kind, detail in chk.problems:
                report.problems.append(Problem(kind, _rel(root, path), detail))
                ok = ok and kind.severity is not Severity.ERROR
            shapes.add(chk.shape)
        if len(shapes) > 1 and None not in shapes:
            report.problems.append(Problem(
                ProblemKind.SHAPE_MISMATCH, f"{key} patch {patch}", "its images differ in size "
                f"({', '.join(f'{h}x{w}' for h, w in sorted(shapes))})"))
            ok = False
        if ok:
            report.n_complete += 1
            report.patch_dates[(key, patch)] = (2, True)
    return report


def _split(key: str) -> tuple[str, int]:
    season, number = key.split("/")
    return season, int(number)


def _path(root: Path, key: str, mod: str, patch: int) -> Path:
    season, number = _split(key)
    return cr.file_path(root, season, mod, number, patch)
