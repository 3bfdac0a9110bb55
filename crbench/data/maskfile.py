"""The on-disk format of the cloud-mask cache (see :mod:`crbench.data.masks`): one compressed
``.npz`` file per patch with its images' keys, coverage, blank flags and bit-packed masks,
read tolerantly and written atomically under a lock."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crbench.constants import BLANK_EPS, S2CLOUDLESS_KWARGS

FORMAT_V1 = json.dumps({"format": 1, "s2cloudless": S2CLOUDLESS_KWARGS,
                        "blank_eps": BLANK_EPS}, sort_keys=True)
FORMAT = json.dumps({"format": 2, "s2cloudless": S2CLOUDLESS_KWARGS, "blank_eps": BLANK_EPS},
                     sort_keys=True)
BLANK_UNKNOWN = -1  # blank flag of an entry stored without one (format 1, MaskCache.store)
_BAD_CACHE = (OSError, ValueError, KeyError, EOFError, IndexError, zipfile.BadZipFile)


@dataclass
class Entry:
    """One freshly computed mask, ready to be stored."""

    size: int
    mtime: int
    coverage: float
    shape: tuple[int, int]
    packed: np.ndarray
    blank: int = BLANK_UNKNOWN  # 1 blank, 0 not, BLANK_UNKNOWN not recorded


@dataclass
class Group:
    """The contents of one cache file (one patch): keys, coverage and optionally the bits."""

    stamp: tuple[int, int] | None
    index: dict[str, int]
    sizes: np.ndarray
    mtimes: np.ndarray
    coverage: np.ndarray
    shapes: np.ndarray
    offsets: np.ndarray
    bits: np.ndarray | None = None
    blank: np.ndarray | None = None  # int8 per entry: 1, 0 or BLANK_UNKNOWN

    def __post_init__(self) -> None:
        if self.blank is None:  # format 1: only a fully cloudy image can be blank
            self.blank = np.where(np.asarray(self.coverage) >= 1.0, BLANK_UNKNOWN,
                                  0).astype(np.int8)

    @classmethod
    def empty(cls) -> Group:
        z = np.zeros(0, dtype=np.int64)
        return cls(None, {}, z, z, np.zeros(0), np.zeros((0, 2), np.int64), np.zeros(1, np.int64),
                   np.zeros(0, np.uint8), np.zeros(0, np.int8))

    def fresh(self, rel: str, st: os.stat_result) -> int | None:
        """Index of ``rel`` if stored with the same size and mtime as ``st``, else None."""
        i = self.index.get(rel)
        if i is None or self.sizes[i] != st.st_size or self.mtimes[i] != st.st_mtime_ns:
            return None
        return i

    def unpack(self, i: int) -> np.ndarray:
        """The boolean mask of entry ``i`` (bits must be loaded)."""
        if self.bits is None:
            raise RuntimeError("internal: mask bits not loaded")
        h, w = (int(v) for v in self.shapes[i])
        packed = self.bits[self.offsets[i]:self.offsets[i + 1]]
        return np.unpackbits(packed, count=h * w).reshape(h, w).astype(bool)

    def entries(self) -> dict[str, Entry]:
        """All stored entries as :class:`Entry` (bits must be loaded)."""
        if self.bits is None:
            raise RuntimeError("internal: mask bits not loaded")
        return {rel: Entry(int(self.sizes[i]), int(self.mtimes[i]), float(self.coverage[i]),
                            (int(self.shapes[i][0]), int(self.shapes[i][1])),
                            self.bits[self.offsets[i]:self.offsets[i + 1]], int(self.blank[i]))
                for rel, i in self.index.items()}


def read_group(path: Path, with_bits: bool) -> Group:
    """Load a cache file; a missing, corrupt or outdated file reads as an empty group."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            with np.load(fh, allow_pickle=False) as z:
                if str(z["format"]) not in (FORMAT, FORMAT_V1):
                    return Group.empty()
                paths = [str(p) for p in z["paths"]]
                group = Group((st.st_size, st.st_mtime_ns), {p: i for i, p in enumerate(paths)},
                               z["sizes"], z["mtimes"], z["coverage"], z["shapes"], z["offsets"],
                               z["bits"] if with_bits else None,
                               z["blank"] if "blank" in z.files else None)
    except FileNotFoundError:
        return Group.empty()
    except _BAD_CACHE:
        return Group.empty()
    n = len(group.index)
    if not (len(group.sizes) == len(group.mtimes) == len(group.coverage) == len(group.shapes)
            == len(group.blank) == n and len(group.offsets) == n + 1):
        return Group.empty()
    if with_bits and (group.bits is None or len(group.bits) != int(group.offsets[-1])):
        return Group.empty()
    return group


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` + '.lock' (POSIX); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(f"{path}.lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write_group(path: Path, updates: dict[str, Entry]) -> None:
    """Merge ``updates`` into the cache file at ``path`` atomically (lock, temp file, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        merged = read_group(path, with_bits=True).entries()
        merged.update(updates)
        rels = sorted(merged)
        sizes = [len(merged[r].packed) for r in rels]
        arrays = {
            "format": np.array(FORMAT),
            "paths": np.array(rels, dtype=str),
            "sizes": np.array([merged[r].size for r in rels], dtype=np.int64),
            "mtimes": np.array([merged[r].mtime for r in rels], dtype=np.int64),
            "coverage": np.array([merged[r].coverage for r in rels], dtype=np.float64),
            "shapes": np.array([merged[r].shape for r in rels], dtype=np.int64).reshape(-1, 2),
            "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "blank": np.array([merged[r].blank for r in rels], dtype=np.int8),
            "bits": (np.concatenate([merged[r].packed for r in rels]).astype(np.uint8)
                     if rels else np.zeros(0, np.uint8)),
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
