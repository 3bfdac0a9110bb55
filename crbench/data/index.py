"""Index of a SEN12MS-CR-TS tree: which patches a split holds and which dates each sample uses.

:func:`scan_tree` lists the patches of a split (file names only, nothing is read);
:func:`build_index` adds each date's cloud coverage from the mask cache (computing only the
masks that are not cached yet) and applies the "fixed" sampler. The index is a
:class:`pandas.DataFrame` with the columns of DESIGN.md (:data:`INDEX_COLUMNS`); it round-trips
through CSV with :func:`write_index` / :func:`read_index`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..constants import ALL_ROIS, MODALITIES, N_DATES, REGIONS, S1_LAUNCH, SPLIT_NAMES, rois_for
from ..errors import DataError, DatasetNotFoundError, UsageError
from .cr import SEN12MSCR, check_cr_L, detect_dataset, scan_cr, select_cr
from .layout import EXPECTED_LAYOUT, FileKey, list_date_dir
from .records import PatchRecord
from .sampler import Protocol, Selection, check_cov_bounds, check_seq_len, select_fixed

if TYPE_CHECKING:
    import pandas as pd

    from .masks import MaskCache

INDEX_COLUMNS: tuple[str, ...] = ("roi", "patch", "input_idx", "target_idx", "coverage_inputs",
                                  "coverage_target", "match")
LIST_SEP = ";"


def lacking_s1(records: Sequence[PatchRecord]) -> PatchRecord | None:
    """The first patch of ``records`` when every one lacks an S1 image for some date (a tree
    or split without S1, where a method that needs S1 would only see zeros); None when some
    patch has S1 at every date, or there is no patch."""
    if records and not any(rec.has_s1 for rec in records):
        return records[0]
    return None


def check_split_region(split: str, region: str) -> tuple[str, ...]:
    """The ROI keys of ``split`` in ``region``.

    Raises:
        UsageError: unknown split or region, naming the allowed values.
    """
    if region not in REGIONS:
        raise UsageError(f"region: unknown value {region!r}; expected one of {', '.join(REGIONS)}")
    if split not in SPLIT_NAMES:
        raise UsageError(f"split: unknown value {split!r}; expected one of "
                         f"{', '.join(SPLIT_NAMES)}")
    return rois_for(split, region)


def rois_present(root: Path) -> list[str]:
    """Official ROI keys ("ROIsXXXX/<id>") that exist as directories under ``root``."""
    return [roi for roi in ALL_ROIS if (Path(root) / roi).is_dir()]


def check_root(root: Path, flag: str | None = None) -> Path:
    """``root`` as an absolute Path if it is a directory.

    Args:
        root: the data root.
        flag: the command-line flag that gave it (e.g. ``"--data"``), named in the message.

    Raises:
        DatasetNotFoundError: missing or not a directory; the message shows the layout.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        prefix = f"{flag}: " if flag else ""
        raise DatasetNotFoundError(
            f"{prefix}data root {str(root)!r} {what}; expected the SEN12MS-CR-TS layout "
            f"{EXPECTED_LAYOUT}. For a try-out, write a small synthetic dataset with "
            f"`crbench synth {root}`")
    return root


def _list_dir(directory: Path, mod: str, roi: str, t: int) -> dict[int, tuple[Path, FileKey]]:
    """Files of one date directory by patch number; foreign files are ignored.

    Raises:
        DataError: the directory is not a listable directory, or holds an image name with an
            impossible date or patch number, an image that is not a file (a directory, a
            broken link) or two names for one patch; the message names the file(s).
    """
    listing = list_date_dir(directory, mod, roi, t)
    hint = "run `crbench data verify ROOT` for a full report"
    if listing.misnamed:
        path, why = listing.misnamed[0]
        raise DataError(f"{path}: {why}; fix the file name ({hint})")
    if listing.broken:
        path, why = listing.broken[0]
        raise DataError(f"{path} {why}; expected a GeoTIFF image ({hint})")
    if listing.duplicates:
        patch, first, second = listing.duplicates[0]
        raise DataError(f"{first} and {second.name} are the same {mod.upper()} image (date "
                        f"t={t}, patch {patch}) under two names; remove one ({hint})")
    return listing.files


def _scan_roi(root: Path, roi: str) -> list[PatchRecord]:
    """Records of one ROI: each patch with the dates it has an S2 image of (S1 optional)."""
    per_date = {mod: [_list_dir(root / roi / mod / str(t), mod.lower(), roi, t)
                      for t in range(N_DATES)] for mod in MODALITIES}
    patches = sorted({p for mod in MODALITIES for files in per_date[mod] for p in files})
    if not patches:
        raise DataError(f"{root / roi}: ROI directory holds no images named as in the layout "
                        f"{EXPECTED_LAYOUT}; run `crbench data verify {root}` for a full report")
    records = []
    for patch in patches:
        ts = [t for t in range(N_DATES) if patch in per_date["S2"][t]]
        if not ts:  # S1 images only: nothing to reconstruct
            continue
        s1 = [per_date["S1"][t][patch][0] if patch in per_date["S1"][t] else None for t in ts]
        s2 = [per_date["S2"][t][patch][0] for t in ts]
        days = [(per_date["S2"][t][patch][1].day - S1_LAUNCH).days for t in ts]
        records.append(PatchRecord(roi, patch, s1, s2, days, ts))
    return records


def scan_tree(root: Path, split: str = "test", region: str = "all") -> list[PatchRecord]:
    """List the patches of one split from the file names (no image is opened).

    A SEN12MS-CR root (:func:`crbench.data.cr.detect_dataset`) is listed by
    :func:`crbench.data.cr.scan_cr` instead: one record of two dates (cloudy, clear) per patch.

    ROIs come in the toolbox's order (ROIs1158, ROIs1868, ROIs1970, ROIs2017, ids as listed),
    patches by number. ROIs of the split that are absent are left out, like the toolbox does.

    Args:
        root: dataset root, laid out as in DESIGN.md.
        split: "train", "val", "test" or "all".
        region: "all", "africa", "america", "asiaEast", "asiaWest" or "europa".

    Returns:
        One record per patch.

    Raises:
        UsageError: unknown split or region.
        DatasetNotFoundError: ``root`` is missing, or none of the split's ROIs is present.
        DataError: a patch lacks a date of one modality.
    """
    root = check_root(root)
    if detect_dataset(root) == SEN12MSCR:
        return scan_cr(root, split, region)
    wanted = set(check_split_region(split, region))
    present = rois_present(root)
    rois = [roi for roi in present if roi in wanted]
    records = [rec for roi in rois for rec in _scan_roi(root, roi)]
    if not records:
        found = _short_list(present) if present else "none"
        raise DatasetNotFoundError(
            f"split {split!r} of region {region!r} is empty under {str(root)!r}: it expects the "
            f"ROIs {_short_list(sorted(wanted))}; ROIs found: {found}. "
            f"Expected layout: {EXPECTED_LAYOUT}{'' if present else _CR_HINT}")
    return records


_CR_HINT = (" (SEN12MS-CR-TS), or ROOT/ROIsXXXX_<season>_{s1,s2,s2_cloudy}/<mod>_<scene>/"
            "ROIsXXXX_<season>_<mod>_<scene>_p<n>.tif (SEN12MS-CR)")


def _short_list(items: Sequence[str], limit: int = 15) -> str:
    """Comma-separated, cut after ``limit`` items with the total count."""
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])}, ... ({len(items)} in all)"


def _format_list(values: Iterable[object]) -> str:
    return LIST_SEP.join(str(v) for v in values)


def _format_cov(c: float) -> str:
    return "nan" if math.isnan(c) else repr(float(c))


def index_row(rec_roi: str, patch: int, sel: Selection, coverage: Sequence[float]) -> dict:
    """One index row (DESIGN.md columns) for a selection over a coverage vector."""
    return {"roi": rec_roi, "patch": int(patch), "input_idx": _format_list(sel.input_idx),
            "target_idx": int(sel.target_idx),
            "coverage_inputs": _format_list(_format_cov(coverage[i]) for i in sel.input_idx),
            "coverage_target": float(coverage[sel.target_idx]), "match": bool(sel.match)}


def make_frame(rows: list[dict]) -> pd.DataFrame:
    """A DataFrame with exactly :data:`INDEX_COLUMNS` and their dtypes."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    return frame.astype({"roi": str, "patch": "int64", "input_idx": str, "target_idx": "int64",
                         "coverage_inputs": str, "coverage_target": "float64", "match": bool})


def patch_coverage(records: Sequence[PatchRecord], cache: MaskCache, workers: int = 1,
                   progress: bool = False, blank_clear: bool = False) -> list[list[float]]:
    """Cloud coverage of every date of every record, computing only uncached masks.

    ``blank_clear``: the toolbox's blank rule (a blank image has coverage 0.0, not 1.0; see
    :attr:`crbench.data.sampler.Protocol.blank_is_clear`).

    Raises:
        DataError: an image could not be read (named in the message).
    """
    paths = [p for rec in records for p in rec.s2]
    flat = [float(c) for c in cache.coverages(paths, workers=workers, progress=progress,
                                              blank_clear=blank_clear)]
    out, start = [], 0
    for rec in records:
        out.append(flat[start:start + len(rec.s2)])
        start += len(rec.s2)
    return out


def build_index(root: Path, split: str, L: int, region: str = "all",
                min_cov: float = 0.0, max_cov: float = 1.0,
                protocol: Protocol | str = Protocol.TOOLBOX, cache: MaskCache | None = None,
                progress: bool = False, workers: int = 1,
                min_dates: int | None = None,
                records: Sequence[PatchRecord] | None = None) -> pd.DataFrame:
    """Index one split with the "fixed" sampler (DESIGN.md).

    A patch of a partial tree is indexed with the dates it has (t values kept as in the file
    names) when it has at least ``max(L + 1, min_dates)`` of them; patches with fewer are
    left out (:func:`usable_records`).

    On a SEN12MS-CR root (L must be 1) every patch gives the row input_idx "0" (the cloudy
    image), target_idx 1 (the cloud-free one), matching when the cloudy image's coverage lies
    in [min_cov, max_cov] (:func:`crbench.data.cr.select_cr`); ``protocol`` and
    ``min_dates`` do not apply.

    Coverage comes from the mask cache; masks not cached yet are computed once (in
    ``workers`` processes, with a progress bar if ``progress``) and stored.

    Args:
        root: dataset root.
        split: "train", "val", "test" or "all".
        L: number of inputs, 1..29.
        region: region name.
        min_cov: lower coverage bound of an input (inclusive).
        max_cov: upper coverage bound of an input (inclusive).
        protocol: "toolbox" (the target may be an input), "strict" (never) or "parity"
            (toolbox, and a blank image is clear: coverage 0.0).
        cache: mask cache; default ``MaskCache(root)``.
        progress: show a progress bar (stderr) while computing masks.
        workers: processes for computing missing masks.
        min_dates: the fewest dates a patch must have to be indexed; default L + 1.
        records: the split's :func:`scan_tree` records, when the caller has them already
            (default: scanned here).

    Returns:
        One row per usable patch with the columns :data:`INDEX_COLUMNS`.

    Raises:
        UsageError: bad L, bounds, protocol, split or region.
        DatasetNotFoundError: missing root or empty split.
        DataError: incomplete patch or unreadable image.
    """
    L = check_seq_len(L)
    min_cov, max_cov = check_cov_bounds(min_cov, max_cov)
    protocol = Protocol.parse(protocol)
    cr = detect_dataset(check_root(root)) == SEN12MSCR
    if cr:
        check_cr_L(L)
    records = list(records) if records is not None else scan_tree(root, split, region)
    records = records if cr else usable_records(records, L, min_dates)
    if cache is None:
        from .masks import MaskCache

        cache = MaskCache(Path(root))
    coverages = patch_coverage(records, cache, workers=workers, progress=progress,
                               blank_clear=protocol.blank_is_clear)
    rows = []
    for rec, cov in zip(records, coverages, strict=True):
        sel = select_cr(cov, min_cov, max_cov) if cr else \
            select_fixed(cov, L, min_cov, max_cov, protocol)
        by_t = [math.nan] * N_DATES
        for t, c in zip(rec.ts, cov, strict=True):
            by_t[t] = c
        sel_t = Selection([rec.ts[i] for i in sel.input_idx], rec.ts[sel.target_idx], sel.match)
        rows.append(index_row(rec.roi, rec.patch, sel_t, by_t))
    return make_frame(rows)


def check_min_dates(min_dates: int | None, L: int) -> int:
    """The fewest dates a patch needs at L: ``max(L + 1, min_dates)``.

    Raises:
        UsageError: ``min_dates`` is not an integer in [2, 30].
    """
    if min_dates is None:
        return L + 1
    if isinstance(min_dates, bool) or not isinstance(min_dates, int) or \
            not 2 <= min_dates <= N_DATES:
        raise UsageError(f"--min-dates: bad value {min_dates!r}; expected an integer from 2 "
                         f"to {N_DATES}")
    return max(L + 1, min_dates)


def usable_records(records: Sequence[PatchRecord], L: int, min_dates: int | None = None
                   ) -> list[PatchRecord]:
    """The records with at least ``max(L + 1, min_dates)`` dates (all of a complete tree).

    Raises:
        UsageError: bad ``min_dates``.
    """
    need = check_min_dates(min_dates, L)
    return [rec for rec in records if len(rec.ts) >= need]


def write_index(frame: pd.DataFrame, path: Path) -> Path:
    """Write an index as CSV (columns :data:`INDEX_COLUMNS`, floats at full precision)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    frame.loc[:, list(INDEX_COLUMNS)].to_csv(path, index=False)
    return path


def _parse_bool(value: object) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(value)


def read_index(path: Path) -> pd.DataFrame:
    """Read an index CSV written by :func:`write_index` or ``crbench data index``.

    Raises:
        DatasetNotFoundError: the file does not exist.
        DataError: a column is missing or a value cannot be parsed.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"index file {str(path)!r} does not exist; write one with "
                                   "`crbench data index ROOT --split S --L N --out FILE.csv`")
    frame = pd.read_csv(path, dtype={"roi": str, "input_idx": str, "coverage_inputs": str})
    missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"index file {str(path)!r}: missing column(s) {', '.join(missing)}; "
                        f"expected {', '.join(INDEX_COLUMNS)}")
    try:
        frame["match"] = [_parse_bool(v) for v in frame["match"]]
        rows = frame.to_dict("records")
        for row in rows:
            parse_row(row)
    except (ValueError, TypeError) as exc:
        raise DataError(f"index file {str(path)!r}: unparsable value ({exc})") from None
    return make_frame(rows)


def parse_row(row: dict) -> tuple[Selection, list[float], float]:
    """Selection, input coverages and target coverage of one index row.

    Raises:
        ValueError: malformed list fields or date indices outside 0..29.
    """
    inputs = [int(v) for v in str(row["input_idx"]).split(LIST_SEP)]
    covs = [float(v) for v in str(row["coverage_inputs"]).split(LIST_SEP)]
    target = int(row["target_idx"])
    if len(covs) != len(inputs):
        raise ValueError(f"{len(inputs)} input indices but {len(covs)} coverages")
    if not all(0 <= i < N_DATES for i in [*inputs, target]):
        raise ValueError(f"date index outside 0..{N_DATES - 1} in {inputs} / {target}")
    return Selection(inputs, target, bool(row["match"])), covs, float(row["coverage_target"])
