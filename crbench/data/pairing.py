"""Import the SEN12MS-CR-TS toolbox's published pairing files into crbench's index format.

The toolbox publishes, per L, split and region, a file
``generic_<L>_<split>_<region>_s2cloudless_mask.npy`` written by ``np.save`` of a Python dict
(so it is a *pickle*)::

    {pdx: {"input": [t, ...], "target": t,
           "paths": {"input": {"S1": [...], "S2": [...]},
                     "output": {"S1": path, "S2": path}}}}

``pdx`` counts patches in the toolbox's path order; the relative paths
(``ROIs1868/119/S2/5/s2_ROIs1868_119_ImgNo_5_2018-..._patch_12.tif``) say which ROI and patch
each entry is, so the conversion does not depend on that order. Importing these files gives
exact parity with published numbers (DESIGN.md: the toolbox's tie-breaking is build-dependent).

Unpickling can execute arbitrary code, so :func:`load_pairing_file` refuses unless the caller
passes ``allow_pickle=True`` for a file it trusts.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from ..errors import DataError, DatasetNotFoundError, UsageError
from .index import index_row, make_frame
from .layout import BadNameError, FileKey, parse_name
from .sampler import Selection

if TYPE_CHECKING:
    import pandas as pd

    from .masks import MaskCache

PAIRING_NAME_RE = re.compile(
    r"^generic_(?P<L>\d+)_(?P<split>[A-Za-z]+)_(?P<region>[A-Za-z]+)_s2cloudless_mask\.npy$")


def parse_pairing_name(path: Path) -> dict[str, Any] | None:
    """L, split and region from a toolbox pairing file name; None if it is named otherwise."""
    m = PAIRING_NAME_RE.match(Path(path).name)
    if m is None:
        return None
    return {"L": int(m["L"]), "split": m["split"], "region": m["region"]}


def load_pairing_file(path: Path, allow_pickle: bool = False) -> dict[int, dict]:
    """Load a toolbox pairing file.

    Args:
        path: the ``.npy`` file.
        allow_pickle: must be True: the file is a pickle, and unpickling an untrusted file
            can execute arbitrary code.

    Returns:
        The toolbox's dict ``pdx -> entry``.

    Raises:
        UsageError: ``allow_pickle`` is not True.
        DatasetNotFoundError: the file does not exist.
        DataError: the file is not a pickled dict.
    """
    import numpy as np

    path = Path(path)
    if allow_pickle is not True:
        raise UsageError(
            f"allow_pickle: {str(path)!r} is a pickled Python object and loading a pickle can "
            "execute arbitrary code; pass allow_pickle=True (CLI: --allow-pickle) only for a "
            "file from a source you trust")
    if not path.is_file():
        raise DatasetNotFoundError(f"pairing file {str(path)!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=True)
        pairs = loaded.item() if isinstance(loaded, np.ndarray) and loaded.shape == () \
            else loaded
    except Exception as exc:  # numpy raises many types for corrupt input
        raise DataError(f"pairing file {str(path)!r} is unreadable: {exc}") from None
    if not isinstance(pairs, dict):
        what = f"array of shape {pairs.shape}" if isinstance(pairs, np.ndarray) else \
            type(pairs).__name__
        raise DataError(f"pairing file {str(path)!r} holds a {what}, expected "
                        "the toolbox's dict pdx -> {'input', 'target', 'paths'}")
    return pairs


def _key_of(rel: str, where: str) -> FileKey:
    """Parse a toolbox relative path (POSIX or Windows separators)."""
    name = PureWindowsPath(rel).name if "\\" in rel else PurePosixPath(rel).name
    try:
        key = parse_name(name)
    except BadNameError as exc:
        raise DataError(f"{where}: path {rel!r}: {exc}") from None
    if key is None:
        raise DataError(f"{where}: path {rel!r} does not follow the SEN12MS-CR-TS file naming")
    return key


def _entry_selection(pdx: object, entry: dict, source: str) -> tuple[Selection, str, int, str]:
    """Selection, roi, patch and the target's relative S2 path of one toolbox entry."""
    where = f"pairing file {source!r} entry {pdx}"
    try:
        inputs = [int(t) for t in entry["input"]]
        target = int(entry["target"])
        out_s2 = str(entry["paths"]["output"]["S2"])
        in_s2 = [str(p) for p in entry["paths"]["input"]["S2"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: malformed entry ({exc!r}); expected keys 'input', 'target', "
                        "'paths'") from None
    key = _key_of(out_s2, where)
    in_keys = [_key_of(p, where) for p in in_s2]
    if key.t != target or [k.t for k in in_keys] != inputs or \
            any((k.roi, k.patch) != (key.roi, key.patch) for k in in_keys):
        raise DataError(f"{where}: indices input={inputs} target={target} disagree with its "
                        "paths")
    return Selection(inputs, target, True), key.roi, key.patch, out_s2


def _coverage_vector(root: Path | None, cache: MaskCache | None, rel_paths: dict[int, str],
                     blank_clear: bool = False) -> dict[int, float]:
    """Coverage per date index where the mask is cached; NaN otherwise."""
    cov = {t: float("nan") for t in rel_paths}
    if root is None or cache is None:
        return cov
    for t, rel in rel_paths.items():
        path = Path(root) / Path(rel.replace("\\", "/"))
        if path.is_file() and cache.is_cached(path):
            cov[t] = float(cache.coverage(path, blank_clear=blank_clear))
    return cov


def import_pairs(path: Path, *, allow_pickle: bool = False, root: Path | None = None,
                 cache: MaskCache | None = None, L: int | None = None,
                 blank_clear: bool = False) -> pd.DataFrame:
    """Convert a toolbox pairing file into crbench's index (DESIGN.md columns).

    Rows follow the toolbox's pdx order. ``match`` is True for every row, as the toolbox
    treats every imported pairing as valid. Coverage comes from the mask cache where the
    mask is cached (nothing is computed), NaN otherwise.

    Args:
        path: ``generic_<L>_<split>_<region>_s2cloudless_mask.npy``.
        allow_pickle: must be True (see :func:`load_pairing_file`).
        root: dataset root; when given, every referenced S2 file must exist under it.
        cache: mask cache for coverage values (needs ``root``).
        L: expected number of inputs; checked against every entry when given.
        blank_clear: the toolbox's blank rule for the coverage values (``--protocol parity``).

    Raises:
        UsageError: ``allow_pickle`` not set, or entries with another L than ``L``.
        DataError: malformed entries; files missing under ``root``.
    """
    pairs = load_pairing_file(path, allow_pickle=allow_pickle)
    source = str(path)
    rows, missing = [], []
    try:
        order = sorted(pairs, key=int)
    except (TypeError, ValueError):
        raise DataError(f"pairing file {source!r}: keys must be patch numbers pdx, got "
                        f"{next(iter(pairs))!r}") from None
    for pdx in order:
        entry = pairs[pdx]
        sel, roi, patch, out_s2 = _entry_selection(pdx, entry, source)
        if L is not None and len(sel.input_idx) != L:
            raise UsageError(f"L: {L} requested but pairing file {source!r} entry {pdx} has "
                             f"{len(sel.input_idx)} inputs")
        rel = dict(zip(sel.input_idx, (str(p) for p in entry["paths"]["input"]["S2"]),
                       strict=True))
        rel[sel.target_idx] = out_s2
        if root is not None:
            missing += [r for r in rel.values()
                        if not (Path(root) / r.replace("\\", "/")).is_file()]
        cov = _coverage_vector(root, cache, rel, blank_clear)
        full = [cov.get(t, float("nan")) for t in range(max(rel) + 1)]
        rows.append(index_row(roi, patch, sel, full))
    if missing:
        raise DataError(f"pairing file {source!r}: {len(missing)} referenced image(s) missing "
                        f"under {str(root)!r}, e.g. {missing[0]}")
    return make_frame(rows)
