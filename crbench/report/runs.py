"""Reading the run directories a report is built from: rows, manifests, the latest run.

Rows come from :func:`crbench.runner.store.read_rows` (every ``rows/*.csv`` below the given
directories: run directories, shards, a folder of runs); a sample present twice with
identical values (e.g. a resumed run) counts once. Also the display order of methods
(:func:`method_sort_key`) and :func:`manifest_value`, shared by the tables, the figures and
``crbench check``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UsageError
from ..runner.store import has_rows
from ..runner.store import read_rows as read_run_rows

METHOD_ORDER: tuple[str, ...] = (
    "least_cloudy", "mosaicing", "stgan", "seq2point", "seqdm", "seqdm_no_tts")
"""Display order of the built-in methods; other methods follow alphabetically."""

SAMPLE_KEY: tuple[str, ...] = ("method", "L", "split", "roi", "patch", "input_idx", "target_idx")
POOLING_KEYS: tuple[str, ...] = ("split", "mask_convention", "protocol")
"""Run settings whose results cannot share one mean (a report over runs that differ in one of
them is refused)."""
DEFAULT_RESULTS_ROOT = Path("results")
REPORT_DIR = "report"
MANIFEST = "manifest.json"


def latest_run(results_root: Path = DEFAULT_RESULTS_ROOT) -> Path:
    """The most recently written run directory with rows under ``results_root``
    (:func:`pick_latest_run`)."""
    return pick_latest_run(results_root)[0]


def pick_latest_run(results_root: Path = DEFAULT_RESULTS_ROOT) -> tuple[Path, list[Path]]:
    """The most recently written run directory under ``results_root`` (``baseline/``
    excluded) that holds rows, and the newer run directories passed over for holding none.

    A run directory is one holding ``manifest.json``; "most recent" is the newest
    modification time of its manifest or row files.

    Raises:
        UsageError: no run directory with rows exists under ``results_root``.
    """
    root = Path(results_root)
    runs = [m.parent for m in root.rglob(MANIFEST)
            if "baseline" not in m.relative_to(root).parts and REPORT_DIR not in m.parent.parts]

    def stamp(run: Path) -> int:
        files = [run / MANIFEST, *(run / "rows").glob("*.csv")]
        return max(f.stat().st_mtime_ns for f in files if f.exists())

    passed = []
    for run in sorted(runs, key=lambda r: (stamp(r), str(r)), reverse=True):
        if has_rows(run):
            return run, passed
        passed.append(run)
    empty = f" ({len(passed)} without rows)" if passed else ""
    raise UsageError(f"--results: no run directory (with {MANIFEST} and rows) under "
                     f"{root}{empty}; run `crbench run --data ROOT --methods ... --out DIR` "
                     "first or pass --results DIR")


def as_dirs(results: Path | str | Sequence[Path]) -> list[Path]:
    """One directory or several as a list of paths."""
    return [Path(results)] if isinstance(results, (str, Path)) else [Path(r) for r in results]


def read_rows(results: Path | Sequence[Path]) -> pd.DataFrame:
    """All per-sample rows under one or several result directories, merged.

    Every ``rows/*.csv`` below each directory (run directories, shards, a folder of runs) is
    read with :func:`crbench.runner.store.read_rows` (rows repeated with the same values, as a
    resumed run may leave them, count once).

    Raises:
        UsageError: no rows found, a foreign rows file, or one sample appearing with
            different values (two different runs mixed; pass one run directory).
    """
    dirs = as_dirs(results)
    rows = read_run_rows(dirs)
    if rows.empty:
        raise UsageError(f"--results: no result rows (rows/*.csv) under "
                         f"{', '.join(map(str, dirs))}; expected a run directory of "
                         "`crbench run`")
    return _dedupe(rows)


def _dedupe(rows: pd.DataFrame) -> pd.DataFrame:
    dup = rows.duplicated(subset=list(SAMPLE_KEY), keep=False)
    if dup.any():
        first = rows[dup].iloc[0]
        raise UsageError(
            f"--results: sample {first['roi']} patch {first['patch']} of method "
            f"{first['method']} at L={first['L']} appears with different values in "
            f"{int(dup.sum())} rows, so two different runs are mixed; pass a single run "
            "directory with --results")
    return rows


def read_manifests(results: Path | Sequence[Path]) -> list[dict[str, Any]]:
    """The parsed ``manifest.json`` files below the result directories, each once (unreadable
    ones are skipped: notes derived from them are then omitted); ``_path`` holds its file."""
    out, seen = [], set()
    for d in as_dirs(results):
        for m in sorted(d.rglob(MANIFEST)):
            if m.resolve() in seen:  # the same run given twice (or inside a given folder)
                continue
            seen.add(m.resolve())
            try:
                data = json.loads(m.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict):
                out.append({**data, "_path": str(m)})
    return out


def method_sort_key(name: str) -> tuple[int, str]:
    """Built-in methods in :data:`METHOD_ORDER`, then the rest alphabetically."""
    return (METHOD_ORDER.index(name), "") if name in METHOD_ORDER else (len(METHOD_ORDER), name)


def manifest_value(manifest: dict[str, Any], key: str) -> Any:
    """``manifest[key]``, else ``manifest["config"][key]``, else None."""
    if key in manifest:
        return manifest[key]
    config = manifest.get("config")
    return config.get(key) if isinstance(config, dict) else None


def check_poolable(manifests: Sequence[dict[str, Any]]) -> None:
    """Refuse runs whose :data:`POOLING_KEYS` settings differ: their rows cannot share a mean.

    Raises:
        UsageError: naming the setting, the values and a run of each.
    """
    for key in POOLING_KEYS:
        seen: dict[str, str] = {}
        for m in manifests:
            value = manifest_value(m, key)
            if value is not None:
                seen.setdefault(str(value), str(Path(m.get("_path", "?")).parent))
        if len(seen) > 1:
            which = ", ".join(f"{v} ({run})" for v, run in seen.items())
            raise UsageError(f"--results: the runs were made with different {key}: {which}; "
                             "their results cannot be pooled, report each setting separately")
