"""Cloud masks (s2cloudless exactly as in DESIGN.md) and their on-disk cache.

Cache layout: one compressed ``.npz`` file per (ROI, patch) under the cache directory
(``<cache>/<ROIsXXXX>/<id>/patch_<n>.npz``), holding, for every date of that patch that was
computed, the key of its source image (path relative to the data root, file size, mtime_ns),
its coverage, whether the image is blank and its bit-packed mask. The blank flag lets a
caller apply either blank rule without recomputing anything: crbench's (blank = fully
cloudy, what the stored mask and coverage say) or the toolbox's (``blank_clear=True``: blank
= clear, coverage 0.0). Files of format 1 (before the flag) stay valid; there the flag is
unknown for images of coverage 1.0 and is found, when ``blank_clear`` asks for it, by reading
the image (no s2cloudless). Reading coverage loads only the small key/coverage
arrays of one file, never the masks, so indexing thousands of images reads one small file per
patch. Every write re-reads the file under a lock, merges, writes a temporary file and
renames it over the old one, so a crash never leaves a half-written entry and concurrent
workers do not lose each other's entries. An unreadable cache file is treated as empty and
rewritten. Images whose names do not follow the layout get one cache file each under
``<cache>/_other/``. The file format itself lives in :mod:`crbench.data.maskfile`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crbench.constants import BLANK_EPS, N_S2_BANDS, S2CLOUDLESS_KWARGS
from crbench.data.cr import FILE_RE as CR_FILE_RE
from crbench.data.io import read_s2, scale_s2
from crbench.data.layout import EXPECTED_LAYOUT, parse_name
from crbench.data.maskfile import BLANK_UNKNOWN, Entry, Group, read_group, write_group
from crbench.errors import DataError, DatasetNotFoundError, UsageError

CACHE_ENV = "CRBENCH_CACHE_DIR"
_MAX_GROUPS = 128  # patch files kept in memory per MaskCache

_DETECTOR = None


def _detector():
    """The process-wide s2cloudless detector, created on first use."""
    global _DETECTOR
    if _DETECTOR is None:
        from s2cloudless import S2PixelCloudDetector

        _DETECTOR = S2PixelCloudDetector(**S2CLOUDLESS_KWARGS)
    return _DETECTOR


def _scaled(raw_s2: np.ndarray) -> np.ndarray:
    """``raw_s2`` clipped and scaled to [0, 1], after checking its shape."""
    raw = np.asarray(raw_s2)
    if raw.ndim != 3 or raw.shape[0] != N_S2_BANDS:
        raise UsageError(f"raw_s2: shape {raw.shape} is not an S2 image; expected "
                         f"({N_S2_BANDS}, H, W)")
    return scale_s2(raw)


def is_blank(img: np.ndarray) -> bool:
    """Whether a scaled S2 image is blank: mean and std below ``BLANK_EPS`` (1e-5)."""
    return bool(img.mean() < BLANK_EPS and img.std() < BLANK_EPS)


def compute_cloud_mask(raw_s2: np.ndarray, blank_clear: bool = False) -> np.ndarray:
    """Cloud mask of one S2 image, exactly as the SEN12MS-CR-TS toolbox computes it.

    The image is clipped to [0, 10000] and divided by 10000, moved to channels-last with a
    batch axis and given to ``S2PixelCloudDetector(threshold=0.4, all_bands=True,
    average_over=4, dilation_size=2)``. An all-blank image (mean and std of the scaled image
    below 1e-5) counts as fully cloudy (crbench's rule), or as fully clear with
    ``blank_clear`` (the toolbox's: its s2cloudless finds no cloud in zeros).

    Args:
        raw_s2: Raw S2 digital numbers, shape (13, H, W).
        blank_clear: the toolbox's blank rule instead of crbench's.

    Returns:
        Boolean mask (H, W), True = cloud.

    Raises:
        UsageError: ``raw_s2`` does not have shape (13, H, W).
    """
    img = _scaled(raw_s2)
    if is_blank(img):
        return np.full(img.shape[1:], not blank_clear, dtype=bool)
    batch = np.moveaxis(img, 0, -1)[None, ...]
    return _detector().get_cloud_masks(batch)[0].astype(bool)


@dataclass
class PrecomputeStats:
    """Outcome of :meth:`MaskCache.precompute`.

    Attributes:
        computed: Masks computed and stored.
        cached: Masks already in the cache and fresh (not recomputed).
        seconds: Wall-clock time of the whole call.
        failed: (path, message) of every image that could not be read; nothing is dropped
            silently.
    """

    computed: int = 0
    cached: int = 0
    seconds: float = 0.0
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Number of distinct images asked for."""
        return self.computed + self.cached + len(self.failed)


def _compute_entry(path: Path) -> Entry:
    """Read one S2 image and compute its mask; the key is taken before reading."""
    st = path.stat()
    raw = read_s2(path).array
    mask = compute_cloud_mask(raw)
    blank = int(mask.all() and is_blank(_scaled(raw)))
    return Entry(st.st_size, st.st_mtime_ns, float(mask.mean()), mask.shape,
                  np.packbits(mask.ravel()), blank)


def _compute_group(group_path: str, items: Sequence[tuple[str, str]]
                   ) -> tuple[int, list[tuple[str, str]]]:
    """Worker task: compute the masks of one patch and store them (spawn-safe, top level).

    Args:
        group_path: The cache file of the patch.
        items: (absolute image path, path relative to the data root) pairs.

    Returns:
        (number computed, [(path, error message), ...] for images that could not be read).
    """
    from crbench.errors import CrbenchError

    updates: dict[str, Entry] = {}
    failed: list[tuple[str, str]] = []
    for abs_path, rel in items:
        try:
            updates[rel] = _compute_entry(Path(abs_path))
        except CrbenchError as err:
            failed.append((abs_path, str(err)))
    if updates:
        write_group(Path(group_path), updates)
    return len(updates), failed


def _init_worker() -> None:
    """Pool initialiser: one OpenMP thread per worker process (no oversubscription)."""
    os.environ["OMP_NUM_THREADS"] = "1"


def _root_hash(root: Path) -> str:
    return hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:16]


def _marked_read_only(root: Path) -> bool:
    """Whether ``root`` has no write permission bit at all: shared data marked read-only,
    which crbench leaves untouched even where it could write (e.g. as root)."""
    try:
        return not root.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    except OSError:
        return False


def default_cache_dir(data_root: Path) -> Path:
    """Where the mask cache of ``data_root`` lives.

    ``$CRBENCH_CACHE_DIR/<hash of root>`` if that variable is set; else ``ROOT/.crbench/masks``
    if it exists or can be created and ROOT is not marked read-only (no write bit, honoured even
    as root); else ``~/.cache/crbench/<hash of root>``.
    """
    root = Path(data_root)
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / _root_hash(root)
    local = root / ".crbench" / "masks"
    if not local.is_dir() and _marked_read_only(root):
        return Path.home() / ".cache" / "crbench" / _root_hash(root)
    try:
        local.mkdir(parents=True, exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    if local.is_dir():  # read-only but already filled: still worth reading
        return local
    return Path.home() / ".cache" / "crbench" / _root_hash(root)


class MaskCache:
    """Cloud masks of the S2 images under one data root, computed once and kept on disk.

    Args:
        data_root: The SEN12MS-CR-TS root; images are keyed by their path relative to it.
        cache_dir: Where to keep the cache; default :func:`default_cache_dir`.

    Attributes:
        hits: Masks or coverages served from the cache.
        misses: Masks computed (by this object, including :meth:`precompute`).
    """

    def __init__(self, data_root: Path, cache_dir: Path | None = None) -> None:
        self.root = Path(data_root)
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"data_root: {self.root} is not a directory; expected "
                                       f"{EXPECTED_LAYOUT}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(
            self.root)
        self.hits = 0
        self.misses = 0
        self._groups: OrderedDict[Path, Group] = OrderedDict()
        self._warned = False

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_groups"] = OrderedDict()  # workers reload what they need
        return state

    # -- keys ------------------------------------------------------------------------------
    def _locate(self, s2_path: Path) -> tuple[Path, str, os.stat_result]:
        """(absolute path, key relative to the root, stat) of an image under the root."""
        path = Path(s2_path)
        if not path.is_absolute():
            path = self.root / path
        try:
            rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(self.root))
        except ValueError:
            try:
                rel = path.resolve().relative_to(self.root.resolve())
            except ValueError:
                raise UsageError(f"s2_path: {s2_path} is not under the data root {self.root}; "
                                 "expected an image inside the tree") from None
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DatasetNotFoundError(f"{path}: file not found (expected an S2 GeoTIFF)") from None
        return path, rel.as_posix(), st

    def _group_path(self, rel: str) -> Path:
        """The cache file of the patch an image belongs to."""
        name = rel.rsplit("/", 1)[-1]
        key, cr = parse_name(name), CR_FILE_RE.match(name)
        if cr is not None:  # SEN12MS-CR: the cloudy and the clear image of a patch together
            return self.cache_dir / f"{cr['season']}/{cr['scene']}/patch_{int(cr['patch'])}.npz"
        if key is None:
            return self.cache_dir / "_other" / f"{hashlib.sha1(rel.encode()).hexdigest()}.npz"
        return self.cache_dir / key.roi / f"patch_{key.patch}.npz"

    # -- groups ----------------------------------------------------------------------------
    def _group(self, gpath: Path, rel: str, st: os.stat_result, with_bits: bool
               ) -> tuple[Group, int | None]:
        """The group holding ``rel`` and its fresh index, reloading from disk when needed."""
        group = self._groups.get(gpath)
        if group is not None:
            self._groups.move_to_end(gpath)
            i = group.fresh(rel, st)
            if i is not None and (group.bits is not None or not with_bits):
                return group, i
        group = read_group(gpath, with_bits)
        self._groups[gpath] = group
        while len(self._groups) > _MAX_GROUPS:
            self._groups.popitem(last=False)
        return group, group.fresh(rel, st)

    def _store(self, gpath: Path, updates: dict[str, Entry]) -> None:
        """Write entries; a read-only cache only warns (once) and keeps working uncached."""
        try:
            write_group(gpath, updates)
        except OSError as err:
            self._warn_unwritable(err)
        self._groups.pop(gpath, None)

    # -- public ----------------------------------------------------------------------------
    def is_cached(self, s2_path: Path) -> bool:
        """True if a fresh mask of ``s2_path`` is stored (nothing is computed)."""
        _, rel, st = self._locate(s2_path)
        return self._group(self._group_path(rel), rel, st, with_bits=False)[1] is not None

    def coverage(self, s2_path: Path, blank_clear: bool = False) -> float:
        """Cloud coverage (mean of the mask) of one image; read from the cache when fresh.

        Args:
            s2_path: the S2 image.
            blank_clear: the toolbox's blank rule: a blank image has coverage 0.0 (else 1.0).
        """
        path, rel, st = self._locate(s2_path)
        gpath = self._group_path(rel)
        group, i = self._group(gpath, rel, st, with_bits=False)
        if i is None:
            entry = self._compute(path, rel, gpath)
            cov, blank = entry.coverage, entry.blank
        else:
            self.hits += 1
            cov, blank = float(group.coverage[i]), int(group.blank[i])
        return 0.0 if blank_clear and self._blank(path, blank) else cov

    def mask(self, s2_path: Path, blank_clear: bool = False) -> np.ndarray:
        """Boolean cloud mask (H, W) of one image; computed and stored if missing or stale.

        Args:
            s2_path: the S2 image.
            blank_clear: the toolbox's blank rule: a blank image's mask is all clear.
        """
        path, rel, st = self._locate(s2_path)
        gpath = self._group_path(rel)
        group, i = self._group(gpath, rel, st, with_bits=True)
        if i is None:
            entry = self._compute(path, rel, gpath)
            h, w = entry.shape
            mask, blank = np.unpackbits(entry.packed, count=h * w).reshape(h, w).astype(bool), \
                entry.blank
        else:
            self.hits += 1
            mask, blank = group.unpack(i), int(group.blank[i])
        return np.zeros_like(mask) if blank_clear and self._blank(path, blank) else mask

    @staticmethod
    def _blank(path: Path, flag: int) -> bool:
        """Whether the image is blank, from its stored flag; read from the image if unknown."""
        if flag != BLANK_UNKNOWN:
            return bool(flag)
        return is_blank(_scaled(read_s2(path).array))

    def coverages(self, s2_paths: Iterable[Path], workers: int = 1,
                  progress: bool = False, blank_clear: bool = False) -> list[float]:
        """Coverage of many images; missing ones are computed first, one write per patch.

        Args:
            s2_paths: the S2 images.
            workers: processes computing missing masks.
            progress: progress bar (stderr) while computing.
            blank_clear: the toolbox's blank rule (see :meth:`coverage`).

        Raises:
            DataError: an image could not be read (the first such image is named).
            DatasetNotFoundError: an image does not exist.
        """
        paths = list(s2_paths)
        self._ensure(paths, workers, progress)
        return [self.coverage(p, blank_clear) for p in paths]

    def masks(self, s2_paths: Iterable[Path], workers: int = 1,
              progress: bool = False, blank_clear: bool = False) -> list[np.ndarray]:
        """Masks of many images (e.g. the dates of one sample), one cache write per patch.

        Args:
            s2_paths: the S2 images.
            workers: processes computing missing masks.
            progress: progress bar (stderr) while computing.
            blank_clear: the toolbox's blank rule (see :meth:`mask`).

        Raises:
            DataError: an image could not be read (the first such image is named).
            DatasetNotFoundError: an image does not exist.
        """
        paths = list(s2_paths)
        self._ensure(paths, workers, progress)
        return [self.mask(p, blank_clear) for p in paths]

    def store(self, masks: Mapping[Path | str, np.ndarray]) -> int:
        """Store externally computed masks (e.g. a generator's ground truth) as if computed.

        This exists for masks computed outside this class: they are keyed like computed ones
        (path relative to the root, current file size and mtime), so later lookups treat them
        as fresh and run no s2cloudless on those images. The caller vouches that each mask
        belongs to its image; only the shape is checked. Whether the image is blank is not
        recorded (it is read from the image if ``blank_clear`` asks). One cache write per
        patch.

        Args:
            masks: S2 image path under the data root -> mask (H, W), nonzero = cloud.

        Returns:
            Number of masks stored.

        Raises:
            UsageError: a mask is not 2-D, or a path lies outside the data root.
            DatasetNotFoundError: an image does not exist.
        """
        groups: dict[Path, dict[str, Entry]] = {}
        for s2_path, mask in masks.items():
            arr = np.asarray(mask).astype(bool)
            if arr.ndim != 2:
                raise UsageError(f"masks: the mask of {s2_path} has shape {arr.shape}; "
                                 "expected (H, W)")
            _, rel, st = self._locate(Path(s2_path))
            groups.setdefault(self._group_path(rel), {})[rel] = Entry(
                st.st_size, st.st_mtime_ns, float(arr.mean()), arr.shape,
                np.packbits(arr.ravel()))
        for gpath, updates in groups.items():
            self._store(gpath, updates)
        return sum(len(u) for u in groups.values())

    def _ensure(self, paths: list[Path], workers: int, progress: bool) -> None:
        stats = self._precompute(paths, workers, progress)
        if stats.failed:
            path, message = stats.failed[0]
            message = message if path in message else f"{path}: {message}"
            if not Path(path).exists():
                raise DatasetNotFoundError(message)
            raise DataError(message)

    def _compute(self, path: Path, rel: str, gpath: Path) -> Entry:
        entry = _compute_entry(path)
        self.misses += 1
        self._store(gpath, {rel: entry})
        return entry

    def _stale_jobs(self, s2_paths: Iterable[Path], stats: PrecomputeStats
                    ) -> dict[Path, list[tuple[str, str]]]:
        """Group the images needing computation by cache file; count fresh and missing ones."""
        jobs: dict[Path, list[tuple[str, str]]] = {}
        seen: set[str] = set()
        for p in s2_paths:
            try:
                path, rel, st = self._locate(p)
            except DatasetNotFoundError as err:
                stats.failed.append((str(p), str(err)))
                continue
            if rel in seen:
                continue
            seen.add(rel)
            gpath = self._group_path(rel)
            if self._group(gpath, rel, st, with_bits=False)[1] is not None:
                stats.cached += 1
            else:
                jobs.setdefault(gpath, []).append((str(path), rel))
        return jobs

    def precompute(self, s2_paths: Iterable[Path], workers: int = 1,
                   progress: bool = True) -> PrecomputeStats:
        """Compute and store the masks of all images not freshly cached.

        Work is split by patch (one cache file per task), so parallel workers never write the
        same file. Missing or unreadable images are listed in the result, not raised.

        Args:
            s2_paths: S2 images under the data root.
            workers: Worker processes (spawned); 1 computes in this process.
            progress: Show a tqdm progress bar on stderr.

        Returns:
            Counts of computed, cached and failed images and the time taken.

        Raises:
            UsageError: ``workers`` < 1.
        """
        self._groups.clear()  # judge freshness by what is on disk now
        return self._precompute(s2_paths, workers, progress)

    def _precompute(self, s2_paths: Iterable[Path], workers: int, progress: bool
                    ) -> PrecomputeStats:
        """:meth:`precompute` trusting fresh entries already held in memory."""
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise UsageError(f"workers: {workers!r} is not a positive integer; expected >= 1")
        from tqdm import tqdm

        t0 = time.perf_counter()
        stats = PrecomputeStats()
        jobs = self._stale_jobs(s2_paths, stats)
        total = sum(len(v) for v in jobs.values())
        with tqdm(total=total, desc="cloud masks", unit="img", disable=not progress or not total,
                  file=sys.stderr) as bar:
            for gpath, (n, failed) in self._run_jobs(jobs, workers):
                stats.computed += n
                stats.failed.extend(failed)
                self._groups.pop(gpath, None)
                bar.update(n + len(failed))
        self.misses += stats.computed
        stats.seconds = time.perf_counter() - t0
        return stats

    def _run_jobs(self, jobs: dict[Path, list[tuple[str, str]]], workers: int
                  ) -> Iterator[tuple[Path, tuple[int, list[tuple[str, str]]]]]:
        """Yield (cache file, result of :func:`_compute_group`) per patch, in a pool if asked."""
        if workers == 1 or len(jobs) <= 1:
            for gpath, items in jobs.items():
                yield gpath, self._guarded(gpath, items)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                                 initializer=_init_worker) as pool:
            futures = {pool.submit(_compute_group, str(g), items): g for g, items in jobs.items()}
            for fut in as_completed(futures):
                gpath = futures[fut]
                try:
                    yield gpath, fut.result()
                except OSError as err:
                    self._warn_unwritable(err)
                    yield gpath, (len(jobs[gpath]), [])

    def _guarded(self, gpath: Path, items: list[tuple[str, str]]
                 ) -> tuple[int, list[tuple[str, str]]]:
        """In-process :func:`_compute_group` that tolerates a read-only cache."""
        try:
            return _compute_group(str(gpath), items)
        except OSError as err:
            self._warn_unwritable(err)
            return len(items), []

    def _warn_unwritable(self, err: OSError) -> None:
        """Warn once that masks cannot be stored (they are still computed and returned)."""
        if not self._warned:
            warnings.warn(f"cloud-mask cache {self.cache_dir} is not writable ({err}); set "
                          f"{CACHE_ENV} to a writable directory", stacklevel=4)
            self._warned = True
