"""Files of a run directory: per-sample rows (append-safe CSV) and the manifest.

Layout of a run directory (see :mod:`crbench.runner.execute` for the whole picture)::

    RUN/manifest.json                               config, versions, per method x L status
    RUN/rows/<method>__L<L>__shard<k>of<n>.csv      one row per sample, DESIGN.md columns
    RUN/rows/<same stem>.spread.csv                 with --samples K > 1: per-sample std of
                                                    each metric over the K draws
    RUN/rows/<same stem>.uncertainty.csv            when a variance exists (K > 1 draws or a
                                                    method's variance head): per-sample UCE,
                                                    AUCE, Spearman, most-certain NRMSE, bins
    RUN/predictions/<method>/L<L>/<ROIsXXXX>_<id>_patch<n>.tif   with --save-predictions
    RUN/skipped/<same stem>.csv                     method, L, roi, patch of the non-matching
                                                    samples the shard skipped (counted once
                                                    however shards overlap)
    RUN/.lock-shard<k>of<n>                         held (flock) by the process writing that
                                                    shard; holds its pid

Rows files start with a header line of exactly :data:`ROW_COLUMNS`; every row ends with a
newline and is flushed and fsync'ed batch by batch. A process killed mid-write can leave at
most one partial last line (no newline); readers ignore it and the runner cuts it off before
appending again.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError, UsageError

if TYPE_CHECKING:
    import pandas as pd

ROW_COLUMNS: tuple[str, ...] = (
    "method", "L", "split", "roi", "patch", "input_idx", "target_idx", "coverage",
    "nrmse_all", "nrmse_cloudy", "nrmse_clear", "psnr", "ssim", "sam", "seconds")
"""Per-sample result columns, in order (DESIGN.md "Per-sample results")."""

INT_COLUMNS = ("L", "patch", "target_idx")
STR_COLUMNS = ("method", "split", "roi", "input_idx")
FLOAT_COLUMNS = tuple(c for c in ROW_COLUMNS if c not in INT_COLUMNS + STR_COLUMNS)
METRIC_COLUMNS = tuple(c for c in FLOAT_COLUMNS if c not in ("coverage", "seconds"))
"""The metric columns (crbench.metrics.METRIC_NAMES, without importing torch here)."""
SPREAD_COLUMNS: tuple[str, ...] = (
    "method", "L", "roi", "patch", "samples", *(f"{m}_std" for m in METRIC_COLUMNS))
"""Columns of a spread sidecar file: the standard deviation (ddof 0) of each metric over the
``samples`` draws of one input (``crbench run --samples K``)."""
SPREAD_SUFFIX = ".spread.csv"
UNCERTAINTY_COLUMNS: tuple[str, ...] = (
    "method", "L", "roi", "patch", "source", "mean_std", "nrmse_mean", "uce", "auce",
    "spearman", "nrmse_certain90", "nrmse_certain50", "bins")
"""Columns of an uncertainty sidecar (:mod:`crbench.metrics.uncertainty` defines the values):
``source`` is ``draws`` (the spread of K samples) or ``head`` (the method's own variance);
``bins`` holds the calibration bins as ``count;sum_var;sum_se`` per bin, ``|``-separated."""
UNCERTAINTY_SUFFIX = ".uncertainty.csv"
SIDECARS: dict[str, tuple[str, tuple[str, ...]]] = {
    "spread": (SPREAD_SUFFIX, SPREAD_COLUMNS), "uncertainty": (UNCERTAINTY_SUFFIX,
                                                               UNCERTAINTY_COLUMNS)}
"""Sidecar kind -> (file suffix, columns) of the per-sample files beside a rows file."""
MANIFEST = "manifest.json"
ROWS_DIR = "rows"
PREDICTIONS_DIR = "predictions"
SKIPPED_DIR = "skipped"
SKIPPED_COLUMNS: tuple[str, ...] = ("method", "L", "roi", "patch")
LOCK_PREFIX = ".lock-shard"
MANIFEST_FORMAT = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def rows_stem(method: str, seq_len: int, shard: tuple[int, int]) -> str:
    """``<method>__L<L>__shard<k>of<n>`` (method characters unsafe in file names -> ``_``)."""
    return f"{_UNSAFE.sub('_', method)}__L{seq_len}__shard{shard[0]}of{shard[1]}"


def rows_path(run_dir: Path, method: str, seq_len: int, shard: tuple[int, int]) -> Path:
    """``RUN/rows/<method>__L<L>__shard<k>of<n>.csv``."""
    return Path(run_dir) / ROWS_DIR / f"{rows_stem(method, seq_len, shard)}.csv"


def spread_path(run_dir: Path, method: str, seq_len: int, shard: tuple[int, int]) -> Path:
    """``RUN/rows/<method>__L<L>__shard<k>of<n>.spread.csv`` (sidecar of the rows file)."""
    return Path(run_dir) / ROWS_DIR / f"{rows_stem(method, seq_len, shard)}{SPREAD_SUFFIX}"


def uncertainty_path(run_dir: Path, method: str, seq_len: int, shard: tuple[int, int]
                     ) -> Path:
    """``RUN/rows/<method>__L<L>__shard<k>of<n>.uncertainty.csv`` (sidecar of the rows file)."""
    return Path(run_dir) / ROWS_DIR / f"{rows_stem(method, seq_len, shard)}{UNCERTAINTY_SUFFIX}"


def skipped_path(run_dir: Path, method: str, seq_len: int, shard: tuple[int, int]) -> Path:
    """``RUN/skipped/<method>__L<L>__shard<k>of<n>.csv``: the shard's non-matching samples."""
    return Path(run_dir) / SKIPPED_DIR / f"{rows_stem(method, seq_len, shard)}.csv"


def sidecar_kind(path: Path) -> str | None:
    """The :data:`SIDECARS` kind of a file beside the rows files, None for a rows file."""
    name = Path(path).name
    return next((k for k, (suffix, _) in SIDECARS.items() if name.endswith(suffix)), None)


def is_spread_file(path: Path) -> bool:
    """True for a spread sidecar."""
    return sidecar_kind(path) == "spread"


def prediction_path(run_dir: Path, method: str, seq_len: int, roi: str, patch: int) -> Path:
    """``RUN/predictions/<method>/L<L>/<roi with / as _>_patch<n>.tif``."""
    name = f"{roi.replace('/', '_')}_patch{int(patch)}.tif"
    return Path(run_dir) / PREDICTIONS_DIR / _UNSAFE.sub("_", method) / f"L{seq_len}" / name


def format_value(value: Any) -> str:
    """CSV text of one cell; floats at full precision (``repr``), NaN as ``nan``."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def _complete_text(path: Path) -> str:
    """File text without a partial (newline-less) last line."""
    text = Path(path).read_text(encoding="utf-8")
    return text[:text.rfind("\n") + 1]


def _header(columns: Sequence[str]) -> str:
    return ",".join(columns) + "\n"


def _check_header(path: Path, text: str, columns: Sequence[str] = ROW_COLUMNS) -> None:
    if text and not text.startswith(_header(columns)):
        first = text.splitlines()[0] if text else ""
        raise UsageError(f"rows file {str(path)!r} has header {first!r}; expected "
                         f"{','.join(columns)} (a file of another tool or version; move it)")


def read_row_dicts(path: Path, columns: Sequence[str] = ROW_COLUMNS) -> list[dict[str, str]]:
    """Complete rows of one rows (or spread) file as string dicts (a partial last line is
    ignored).

    Raises:
        UsageError: the header is not ``columns`` (default :data:`ROW_COLUMNS`).
        DataError: a complete line has the wrong number of fields.
    """
    text = _complete_text(path)
    _check_header(path, text, columns)
    out = []
    body = io.StringIO(text[len(_header(columns)):])
    for lineno, fields in enumerate(csv.reader(body), start=2):
        if len(fields) != len(columns):
            raise DataError(f"rows file {str(path)!r} line {lineno}: {len(fields)} fields, "
                            f"expected {len(columns)}")
        out.append(dict(zip(columns, fields, strict=True)))
    return out


def done_keys(run_dir: Path, method: str, seq_len: int) -> set[tuple[str, int]]:
    """(roi, patch) of every sample of ``method`` at L already in any shard's rows file."""
    pattern = f"{rows_stem(method, seq_len, (0, 0)).rsplit('__', 1)[0]}__shard*of*.csv"
    keys: set[tuple[str, int]] = set()
    for f in sorted((Path(run_dir) / ROWS_DIR).glob(pattern)):
        if sidecar_kind(f) is None:
            keys.update((r["roi"], int(r["patch"])) for r in read_row_dicts(f))
    return keys


class RowsWriter:
    """Appends rows to one rows (or spread) file; every :meth:`append` is flushed and fsync'ed.

    Opening repairs what a killed process may have left: a partial last line is cut off, a
    missing or partial header is (re)written. ``columns``: :data:`ROW_COLUMNS` (default) or
    :data:`SPREAD_COLUMNS`.
    """

    def __init__(self, path: Path, columns: Sequence[str] = ROW_COLUMNS) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self._head = _header(self.columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._fh = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._fh, lineterminator="\n")

    def _repair(self) -> None:
        if not self.path.exists():
            self._write_atomic(self._head)
            return
        raw = self.path.read_bytes()
        keep = raw[:raw.rfind(b"\n") + 1]
        text = keep.decode("utf-8")
        if len(text) < len(self._head) and self._head.startswith(raw.decode("utf-8", "replace")):
            self._write_atomic(self._head)  # killed while writing the header
            return
        _check_header(self.path, text, self.columns)
        if len(keep) != len(raw):
            with open(self.path, "r+b") as fh:
                fh.truncate(len(keep))
                fh.flush()
                os.fsync(fh.fileno())

    def _write_atomic(self, text: str) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write ``rows`` (dicts with the writer's columns) and make them durable."""
        for row in rows:
            self._csv.writerow([format_value(row[c]) for c in self.columns])
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def __enter__(self) -> RowsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _row_files(path: Path, sidecar: str | None = None) -> list[Path]:
    """Rows files below ``path`` (``sidecar``: their sidecars of that kind instead)."""
    return sorted(p for p in Path(path).rglob("*.csv")
                  if p.parent.name == ROWS_DIR and sidecar_kind(p) == sidecar)


def read_rows(results: Path | Sequence[Path]) -> pd.DataFrame:
    """Per-sample rows of one or several run directories (or folders holding run dirs).

    Every ``rows/*.csv`` below is read (shards merge this way); a partial last line left by a
    killed run is ignored; a row repeated with identical values (except ``seconds``) counts once.

    Returns:
        DataFrame with exactly :data:`ROW_COLUMNS` (int columns int64, metrics float64).

    Raises:
        UsageError: a rows file has a foreign header.
        DataError: a malformed line.
    """
    import pandas as pd

    dirs = [Path(results)] if isinstance(results, (str, Path)) else [Path(r) for r in results]
    records = [r for d in dirs for f in _row_files(d) for r in read_row_dicts(f)]
    frame = pd.DataFrame(records, columns=list(ROW_COLUMNS))
    # an empty cell (as pandas' to_csv writes NaN) is a missing value, not an error
    frame[list(FLOAT_COLUMNS)] = frame[list(FLOAT_COLUMNS)].replace("", "nan")
    try:
        frame = frame.astype({**dict.fromkeys(INT_COLUMNS, "int64"),
                              **dict.fromkeys(FLOAT_COLUMNS, "float64"),
                              **dict.fromkeys(STR_COLUMNS, str)})
    except ValueError as exc:
        raise DataError(f"rows under {', '.join(map(str, dirs))}: a value is not a number "
                        f"({exc}); expected the columns {', '.join(ROW_COLUMNS)}") from exc
    value_cols = [c for c in ROW_COLUMNS if c != "seconds"]
    return frame.drop_duplicates(subset=value_cols).reset_index(drop=True)


def read_spread(results: Path | Sequence[Path]) -> pd.DataFrame:
    """Spread sidecars (``rows/*.spread.csv``) of one or several run directories.

    A sample written twice (a run killed between its spread line and its row, then resumed)
    keeps its last line.

    Returns:
        DataFrame with exactly :data:`SPREAD_COLUMNS` (empty when there are no spread files).

    Raises:
        UsageError: a spread file has a foreign header.
        DataError: a malformed line or a value that is not a number.
    """
    import pandas as pd

    dirs = [Path(results)] if isinstance(results, (str, Path)) else [Path(r) for r in results]
    records = [r for d in dirs for f in _row_files(d, "spread")
               for r in read_row_dicts(f, SPREAD_COLUMNS)]
    frame = pd.DataFrame(records, columns=list(SPREAD_COLUMNS))
    stds = [c for c in SPREAD_COLUMNS if c.endswith("_std")]
    try:
        frame = frame.astype({"method": str, "L": "int64", "roi": str, "patch": "int64",
                              "samples": "int64", **dict.fromkeys(stds, "float64")})
    except ValueError as exc:
        raise DataError(f"spread files under {', '.join(map(str, dirs))}: a value is not a "
                        f"number ({exc}); expected the columns {', '.join(SPREAD_COLUMNS)}") \
            from exc
    key = ["method", "L", "roi", "patch"]
    return frame.drop_duplicates(subset=key, keep="last").reset_index(drop=True)


def format_bins(bins: Sequence[Sequence[float]]) -> str:
    """The ``bins`` cell: ``count;sum_var;sum_se`` per bin, bins separated by ``|``."""
    return "|".join(";".join(repr(float(v)) for v in col) for col in zip(*bins, strict=True))


def parse_bins(text: str) -> list[list[float]]:
    """Inverse of :func:`format_bins`: [counts, sums of var, sums of se]."""
    cols = [[float(v) for v in part.split(";")] for part in text.split("|")]
    if not cols or any(len(c) != 3 for c in cols):
        raise ValueError(f"bins cell {text[:40]!r}...: expected count;sum_var;sum_se per bin")
    return [list(r) for r in zip(*cols, strict=True)]


def read_uncertainty(results: Path | Sequence[Path]) -> pd.DataFrame:
    """Uncertainty sidecars (``rows/*.uncertainty.csv``) of one or several run directories.

    A sample written twice (killed between its sidecar line and its row, then resumed) keeps
    its last line. ``bins`` stays text (:func:`parse_bins` reads it).

    Returns:
        DataFrame with exactly :data:`UNCERTAINTY_COLUMNS` (empty when there are none).

    Raises:
        DataError: a malformed line or a value that is not a number.
    """
    import pandas as pd

    dirs = [Path(results)] if isinstance(results, (str, Path)) else [Path(r) for r in results]
    records = [r for d in dirs for f in _row_files(d, "uncertainty")
               for r in read_row_dicts(f, UNCERTAINTY_COLUMNS)]
    frame = pd.DataFrame(records, columns=list(UNCERTAINTY_COLUMNS))
    floats = UNCERTAINTY_COLUMNS[5:-1]
    try:
        frame = frame.astype({"method": str, "L": "int64", "roi": str, "patch": "int64",
                              "source": str, **dict.fromkeys(floats, "float64")})
        frame["bins"].map(parse_bins)
    except ValueError as exc:
        raise DataError(f"uncertainty files under {', '.join(map(str, dirs))}: {exc}; "
                        f"expected the columns {', '.join(UNCERTAINTY_COLUMNS)}") from exc
    key = ["method", "L", "roi", "patch"]
    return frame.drop_duplicates(subset=key, keep="last").reset_index(drop=True)


# ----------------------------------------------------------------------------- manifest


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The run directory's manifest, or None if it has none.

    Raises:
        DataError: the manifest exists but is not valid JSON.
    """
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); restore it or use another --out") \
            from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    if not isinstance(data.get("config", {}), dict):
        raise DataError(f"{path}: \"config\" is {json.dumps(data['config'])}, expected a JSON "
                        "object; the manifest was edited or damaged: restore it or use another "
                        "--out")
    return data


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Exclusive lock on ``RUN/.manifest.lock`` (shards sharing a run dir); no-op without
    fcntl."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(Path(run_dir) / ".manifest.lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def update_manifest(run_dir: Path, change: Callable[[dict[str, Any] | None], dict[str, Any]]
                    ) -> dict[str, Any]:
    """Read-modify-write the manifest under a lock; written to a temp file then renamed."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir):
        data = change(read_manifest(run_dir))
        tmp = run_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        tmp.replace(run_dir / MANIFEST)
    return data


def check_run_dir(run_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse a run directory that holds another run or foreign files.

    Raises:
        UsageError: the manifest's config differs from ``identity`` (names the differences),
            or the directory is non-empty without a manifest.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out: {str(run_dir)!r} is a file; expected a run directory")
    manifest = read_manifest(run_dir)
    if manifest is None:
        if run_dir.is_dir() and any(p.name != ".manifest.lock"
                                    and not p.name.startswith(LOCK_PREFIX)
                                    for p in run_dir.iterdir()):
            raise UsageError(f"--out: {str(run_dir)!r} exists, is not empty and holds no "
                             f"{MANIFEST}, so it is not a crbench run directory; pass a new or "
                             "empty directory")
        return
    stored = manifest.get("config", {})
    keys = [*identity, *(k for k in stored if k not in identity)]  # options only when set
    diff = [f"{k}={stored.get(k)!r} (now {identity.get(k)!r})" for k in keys
            if stored.get(k) != identity.get(k)]
    if diff:
        raise UsageError(f"--out: {str(run_dir)!r} holds a run made with other settings: "
                         f"{'; '.join(diff)}. Resume it with the same settings or pass another "
                         "--out")


def has_rows(run_dir: Path) -> bool:
    """True when some rows file of the run directory holds at least one complete row."""
    for f in _row_files(run_dir):
        text = _complete_text(f)
        if text.count("\n") > 1 or (text and not text.startswith(_header(ROW_COLUMNS))):
            return True
    return False


# ----------------------------------------------------------------------------- checkpoints


def check_checkpoints(run_dir: Path, hashes: dict[tuple[str, int], str]) -> None:
    """Refuse to resume a run whose rows came from other weights than ``hashes``
    ((method, L) -> sha256 of the checkpoint now found), as the manifest's ``runs`` record.

    Raises:
        UsageError: names the method, L and both hashes.
    """
    manifest = read_manifest(run_dir) or {}
    runs = manifest.get("runs")
    for entry in (runs.values() if isinstance(runs, dict) else ()):
        if not isinstance(entry, dict):
            continue
        key = (str(entry.get("method")), int(entry.get("L") or 0))
        was = entry.get("checkpoint_sha256")
        if key in hashes and was and was != hashes[key]:
            raise UsageError(
                f"--checkpoints: method {key[0]!r} at L={key[1]}: the run in {str(run_dir)!r} "
                f"was computed with checkpoint sha256 {was}, the checkpoint now found has "
                f"{hashes[key]} (retrained?); pass another --out, or restore those weights")


# ----------------------------------------------------------------------------- skipped


def write_skipped(path: Path, method: str, seq_len: int, keys: Sequence[tuple[str, int]]
                  ) -> None:
    """Record the non-matching samples a shard skipped, merged with what is already there
    (an earlier session with another ``--limit``); written atomically."""
    path = Path(path)
    old = {(r["roi"], int(r["patch"])) for r in read_row_dicts(path, SKIPPED_COLUMNS)} \
        if path.is_file() else set()
    merged = sorted(old | {(str(r), int(p)) for r, p in keys})
    body = io.StringIO()
    writer = csv.writer(body, lineterminator="\n")
    writer.writerow(SKIPPED_COLUMNS)
    writer.writerows((method, seq_len, r, p) for r, p in merged)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(body.getvalue(), encoding="utf-8")
    tmp.replace(path)


def read_skipped(run_dir: Path, files: Sequence[str] | None = None
                 ) -> dict[tuple[str, int], set[tuple[str, int]]]:
    """(method, L) -> the (roi, patch) keys of skipped samples, merged over shards.

    ``files``: paths relative to the run dir (default every ``RUN/skipped/*.csv``)."""
    run_dir = Path(run_dir)
    paths = sorted((run_dir / SKIPPED_DIR).glob("*.csv")) if files is None \
        else [run_dir / f for f in files]
    out: dict[tuple[str, int], set[tuple[str, int]]] = {}
    for f in paths:
        if f.is_file():
            for r in read_row_dicts(f, SKIPPED_COLUMNS):
                out.setdefault((r["method"], int(r["L"])), set()).add((r["roi"], int(r["patch"])))
    return out


# ----------------------------------------------------------------------------- run lock


def shards_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True when shard layouts ``a`` and ``b`` share an index row (row i is in (k, n) iff
    i % n == k - 1; both hold rows iff k_a - k_b is a multiple of gcd(n_a, n_b))."""
    return (a[0] - b[0]) % math.gcd(int(a[1]), int(b[1])) == 0


def _holder(path: Path, fcntl: Any) -> str | None:
    """The pid written in lock file ``path`` when another process holds it, else None."""
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            return fh.read().strip() or "unknown"
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return None


def _check_no_overlapping_writer(run_dir: Path, shard: tuple[int, int], fcntl: Any) -> None:
    for path in sorted(run_dir.glob(f"{LOCK_PREFIX}*of*")):
        k, _, n = path.name[len(LOCK_PREFIX):].partition("of")
        if not (k.isdigit() and n.isdigit()) or not shards_overlap(shard, (int(k), int(n))):
            continue
        pid = _holder(path, fcntl)
        if pid is not None:
            raise UsageError(
                f"--out: {str(run_dir)!r} is being written by another crbench run (pid {pid}, "
                f"shard {k}/{n}) that computes some of the same samples; wait for it to finish "
                "or pass another --out")


@contextlib.contextmanager
def run_lock(run_dir: Path, shard: tuple[int, int]) -> Iterator[None]:
    """Hold ``RUN/.lock-shard<k>of<n>`` (an exclusive, non-blocking flock holding this pid)
    while a shard's rows are computed; shards of other layouts that share samples with it
    are refused too. A no-op without fcntl.

    Raises:
        UsageError: another process holds an overlapping shard (names its pid).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir):  # the scan and the acquisition are one step for every process
        _check_no_overlapping_writer(run_dir, shard, fcntl)
        path = run_dir / f"{LOCK_PREFIX}{shard[0]}of{shard[1]}"
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by a process that took it without the scan (older crbench)
            fh.close()
            raise UsageError(f"--out: {str(run_dir)!r} is being written by another process "
                             f"(it holds {path.name}); wait for it to finish or pass another "
                             "--out") from None
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
    try:
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()
