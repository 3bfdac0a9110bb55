"""SEN12MS-CR-TS as a torch Dataset of (L cloudy inputs, cloud-free target) samples.

The dataset holds only the index (which dates each sample uses, their coverage); images are
read per item: the L input dates (S2, S1, cloud mask) and the target S2, nothing else.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ..api import DEFAULT_S1_DB_RANGE, Inputs, Sample, SampleMeta
from ..constants import REGIONS, S1_BANDS, S2_BANDS, SPLIT_NAMES, TARGET_CLEAR_MAX
from ..errors import DataError, UsageError, parse_enum
from .cr import SEN12MSCR as SEN12MSCR_KEY
from .cr import SEN12MSCRTS as SEN12MSCRTS_KEY
from .cr import check_cr_L, detect_dataset
from .index import (
    PatchRecord,
    build_index,
    check_split_region,
    parse_row,
    patch_coverage,
    read_index,
    scan_tree,
)
from .sampler import Protocol, Selection, check_cov_bounds, check_seq_len, select_random

if TYPE_CHECKING:
    import pandas as pd

    from .masks import MaskCache


class SamplerKind(enum.Enum):
    """How a sample's dates are chosen.

    Attributes:
        FIXED: the deterministic test protocol of DESIGN.md (one sample per patch).
        RANDOM: training: a random clear target and L adjacent inputs, redrawn every epoch.
    """

    FIXED = "fixed"
    RANDOM = "random"


class NonFiniteWarning(UserWarning):
    """An image held NaN/inf pixel values; they were replaced by 0."""


class SEN12MSCRTS(Dataset):
    """SEN12MS-CR-TS multi-temporal cloud-removal samples (Ebel et al. 2022).

    Each item is a :class:`crbench.api.Sample`: ``inputs`` (S2 ``(L, 13, H, W)`` and S1
    ``(L, 2, H, W)`` in [0, 1], cloud masks ``(L, H, W)`` float32 with 1 = cloud, coverage
    ``(L,)`` of the masks given, acquisition days ``(L,)`` int64), the target S2 ``(13, H, W)``
    as a separate tensor that no attribute of ``inputs`` references, and ``meta``. Batch with
    ``DataLoader(ds, batch_size, collate_fn=crbench.api.collate)``.

    With ``sampler="fixed"`` the dates follow the index (:func:`crbench.data.index.build_index`,
    built here unless given); with ``only_matching`` the samples that do not match are left
    out and counted in :attr:`n_skipped`. With ``sampler="random"`` each item draws a clear
    target and L adjacent inputs (:func:`crbench.data.sampler.select_random`) from an RNG
    seeded by ``(seed, epoch, index)``; call :meth:`set_epoch` every epoch. Patches without
    a clear date cannot be sampled and are counted in :attr:`n_skipped`.

    Attributes:
        records: every patch of the split (:class:`~crbench.data.index.PatchRecord`).
        index: the fixed sampler's index (all patches, matching or not), else None.
        n_skipped: samples left out (non-matching, or patches without a clear date).
    """

    dataset: ClassVar[str] = SEN12MSCRTS_KEY
    all_bands: ClassVar[tuple[str, ...]] = S2_BANDS
    s1_bands: ClassVar[tuple[str, ...]] = S1_BANDS
    splits: ClassVar[tuple[str, ...]] = SPLIT_NAMES
    regions: ClassVar[tuple[str, ...]] = REGIONS
    samplers: ClassVar[tuple[str, ...]] = tuple(s.value for s in SamplerKind)
    protocols: ClassVar[tuple[str, ...]] = tuple(p.value for p in Protocol)

    def __init__(self, root: Path, split: str = "test", L: int = 3,
                 region: str = "all", sampler: SamplerKind | str = "fixed",
                 protocol: Protocol | str = "toolbox", min_cov: float = 0.0,
                 max_cov: float = 1.0, index: pd.DataFrame | Path | str | None = None,
                 only_matching: bool = True, seed: int = 0, crop: int | None = None,
                 cache: MaskCache | None = None, progress: bool = False,
                 workers: int = 1, target_s1: bool = False,
                 s1_db_range: Sequence[tuple[float, float]] | None = None) -> None:
        """Index the split (reading cached coverage; computing only missing masks).

        Args:
            root: dataset root (layout of DESIGN.md).
            split: "train", "val", "test" or "all".
            L: number of input dates, 1..29.
            region: "all", "africa", "america", "asiaEast", "asiaWest" or "europa".
            sampler: "fixed" (test protocol) or "random" (training).
            protocol: "toolbox" (target may be an input), "strict" (never; fixed sampler
                only) or "parity" (toolbox, and blank images count as clear: coverage 0.0
                and an all-clear mask, for both samplers).
            min_cov: lower coverage bound of an input (fixed sampler, inclusive).
            max_cov: upper coverage bound of an input (fixed sampler, inclusive).
            index: fixed sampler: an index DataFrame or the path of an index CSV
                (``crbench data index``); built from the tree when None.
            only_matching: fixed sampler: leave out samples that do not match.
            seed: seed of the per-item RNG (random dates and crop positions).
            crop: side of a square crop, at a random position applied identically to every
                array of the item; None for the full image.
            cache: mask cache; default ``MaskCache(root)``.
            progress: progress bar while computing missing masks.
            workers: processes for computing missing masks.
            target_s1: also read the target date's S1 image into ``Sample.target_s1``
                (training: SeqDMs' Eq. 27 pairs the clear target with its own S1).
            s1_db_range: (min, max) dB of VV and VH mapped to [0, 1] in ``inputs.s1`` (the
                method's :attr:`crbench.api.Method.s1_db_range`); None: [-25, 0] dB for both.

        Raises:
            UsageError: bad L, bounds, protocol, sampler, split, region, crop, seed, S1 range
                or an index made for another L.
            DatasetNotFoundError: missing root or empty split.
            DataError: incomplete patches, or index rows for patches not in the split.
        """
        self.L = check_seq_len(L)
        self.min_cov, self.max_cov = check_cov_bounds(min_cov, max_cov)
        self.protocol = Protocol.parse(protocol)
        self.sampler = parse_enum(SamplerKind, sampler, "sampler")
        check_split_region(split, region)
        if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 1):
            raise UsageError(f"crop: bad value {crop!r}; expected a positive number of pixels "
                             "or None")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise UsageError(f"seed: bad value {seed!r}; expected a non-negative integer")
        self.root, self.split, self.region = Path(root).expanduser().absolute(), split, region
        found = detect_dataset(self.root)
        if found not in (None, self.dataset):
            raise UsageError(f"root: {str(self.root)!r} has the {found} layout, not "
                             f"{self.dataset}'s; use {_CLASSES[found]} (or dataset_class(root))")
        self.seed, self.crop, self.epoch = int(seed), crop, 0
        self.only_matching = bool(only_matching)
        self.target_s1 = bool(target_s1)
        self.s1_db_range = _s1_range(s1_db_range)
        self.records: list[PatchRecord] = scan_tree(self.root, split, region)
        if cache is None:  # after the scan: the default cache directory lives under root
            from .masks import MaskCache

            cache = MaskCache(self.root)
        self.cache = cache
        self.index: pd.DataFrame | None = None
        self._fixed: list[tuple[int, Selection, float]] = []
        self._random: list[tuple[int, list[float]]] = []
        if self.sampler is SamplerKind.FIXED:
            self._init_fixed(index, progress, workers)
        else:
            self._init_random(progress, workers)

    def _init_fixed(self, index: pd.DataFrame | Path | str | None, progress: bool,
                    workers: int) -> None:
        import pandas as pd

        if index is None:
            frame = build_index(self.root, self.split, self.L, self.region, self.min_cov,
                                self.max_cov, self.protocol, cache=self.cache,
                                progress=progress, workers=workers)
        elif isinstance(index, pd.DataFrame):
            frame = index
        else:
            frame = read_index(Path(index))
        lookup = {(rec.roi, rec.patch): i for i, rec in enumerate(self.records)}
        self.n_skipped = 0
        for number, row in enumerate(frame.to_dict("records")):
            try:
                sel, _, cov_target = parse_row(row)
            except (KeyError, ValueError, TypeError) as exc:
                raise DataError(f"index: row {number} is malformed ({exc}); expected the "
                                f"columns of crbench data index") from None
            if len(sel.input_idx) != self.L:
                raise UsageError(f"index: rows have {len(sel.input_idx)} inputs but L={self.L}; "
                                 "build the index with the same L")
            key = (str(row["roi"]), int(row["patch"]))
            if key not in lookup:
                raise DataError(f"index: {key[0]} patch {key[1]} is not in split {self.split!r} "
                                f"of region {self.region!r} under {str(self.root)!r}")
            if self.only_matching and not sel.match:
                self.n_skipped += 1
                continue
            self._fixed.append((lookup[key], sel, cov_target))
        self.index = frame

    def _init_random(self, progress: bool, workers: int) -> None:
        coverages = patch_coverage(self.records, self.cache, workers=workers, progress=progress,
                                   blank_clear=self.protocol.blank_is_clear)
        self._random = [(i, cov) for i, cov in enumerate(coverages)
                        if len(cov) > self.L and min(cov) <= TARGET_CLEAR_MAX]
        self.n_skipped = len(self.records) - len(self._random)

    def _draw(self, cov: list[float], rng: np.random.Generator) -> Selection | None:
        """Random sampler: the positions of one training sample's inputs and target."""
        return select_random(cov, self.L, rng)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the per-item RNG for a new epoch (random dates and crops change)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Number of samples."""
        return len(self._fixed) if self.sampler is SamplerKind.FIXED else len(self._random)

    def _select(self, idx: int, rng: np.random.Generator
                ) -> tuple[PatchRecord, Selection, float | None]:
        if self.sampler is SamplerKind.FIXED:
            rec_i, sel, cov_target = self._fixed[idx]
            return self.records[rec_i], sel, cov_target
        rec_i, cov = self._random[idx]
        rec = self.records[rec_i]
        sel = self._draw(cov, rng)
        if sel is None:  # cannot happen: patches without a clear date were left out
            raise DataError(f"{rec.roi} patch {rec.patch}: no clear date to use as target")
        sel_t = Selection([rec.ts[i] for i in sel.input_idx], rec.ts[sel.target_idx], sel.match)
        return rec, sel_t, cov[sel.target_idx]

    def __getitem__(self, idx: int) -> Sample:
        """Read sample ``idx``: its L input dates and its target, nothing else.

        Raises:
            IndexError: ``idx`` out of range.
            DataError: unreadable image or images of different sizes.
            UsageError: ``crop`` larger than the images.
        """
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} samples")
        idx = idx % len(self)
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        rec, sel, cov_target = self._select(idx, rng)
        pos = [rec.pos(t) for t in sel.input_idx]
        tpos = rec.pos(sel.target_idx)
        s2 = [_read(rec.s2[p], "s2") for p in pos]
        s1 = [_read_s1(rec, p, s2[0].shape[-2:], self.s1_db_range) for p in pos]
        masks = self.cache.masks([rec.s2[p] for p in pos],
                                 blank_clear=self.protocol.blank_is_clear)
        target = _read(rec.s2[tpos], "s2")
        extra = [tpos] if self.target_s1 else []
        arrays = [*s2, *s1, *masks, target,
                  *(_read_s1(rec, p, None, self.s1_db_range) for p in extra)]
        s1_paths = [rec.s1[p] or rec.s2[p] for p in pos]
        _check_sizes(arrays, [*(rec.s2[p] for p in pos), *s1_paths,
                              *(rec.s2[p] for p in pos), rec.s2[tpos],
                              *(rec.s1[p] for p in extra)])
        full_cov = [float(np.mean(m)) for m in masks]
        if cov_target is None or not np.isfinite(cov_target):
            cov_target = float(self.cache.coverage(rec.s2[tpos],
                                                   blank_clear=self.protocol.blank_is_clear))
        window = self._crop_window(arrays[0].shape[-2:], rng)
        s2_t, s1_t, m_t = (torch.from_numpy(np.stack([a[..., window[0], window[1]]
                                                       for a in group]))
                           for group in (s2, s1, [m.astype(np.float32) for m in masks]))
        inputs = Inputs(s2=s2_t, s1=s1_t, masks=m_t, coverage=m_t.mean(dim=(-2, -1)),
                        days=torch.tensor([rec.days[p] for p in pos],
                                          dtype=torch.int64))
        target_t = torch.from_numpy(np.array(target[..., window[0], window[1]], copy=True))
        meta = SampleMeta(roi=rec.roi, patch=rec.patch, input_idx=list(sel.input_idx),
                          target_idx=sel.target_idx, coverage_inputs=full_cov,
                          coverage_target=float(cov_target), match=sel.match,
                          target_path=str(rec.s2[tpos]))
        target_s1 = (torch.from_numpy(np.array(arrays[-1][..., window[0], window[1]], copy=True))
                     if self.target_s1 else None)
        return Sample(inputs=inputs, target=target_t, meta=meta, target_s1=target_s1)

    def _crop_window(self, shape: Sequence[int], rng: np.random.Generator
                     ) -> tuple[slice, slice]:
        height, width = int(shape[0]), int(shape[1])
        if self.crop is None:
            return slice(0, height), slice(0, width)
        if self.crop > min(height, width):
            raise UsageError(f"crop: {self.crop} px is larger than the images "
                             f"({height}x{width}); expected at most {min(height, width)}")
        y = int(rng.integers(height - self.crop + 1))
        x = int(rng.integers(width - self.crop + 1))
        return slice(y, y + self.crop), slice(x, x + self.crop)

    def __repr__(self) -> str:
        """Summary: split, region, sampler, L and sample counts."""
        return (f"SEN12MSCRTS(root={str(self.root)!r}, split={self.split!r}, "
                f"region={self.region!r}, sampler={self.sampler.value!r}, L={self.L}, "
                f"samples={len(self)}, skipped={self.n_skipped})")


class SEN12MSCR(SEN12MSCRTS):
    """SEN12MS-CR mono-temporal cloud-removal samples (Ebel et al. 2020) with L = 1.

    Layout, splits (UnCRtainTS's scene lists, matched exactly) and the index rows are those of
    :mod:`crbench.data.cr`. Each item is the same :class:`crbench.api.Sample` as
    :class:`SEN12MSCRTS` yields at L = 1: ``inputs`` the cloudy S2 ``(1, 13, H, W)`` and the
    patch's S1 ``(1, 2, H, W)`` in [0, 1] (same scaling), its s2cloudless mask ``(1, H, W)``
    from the mask cache, ``days`` 0; the target the cloud-free S2, whose coverage is recorded
    in ``meta.coverage_target``; ``meta.input_idx`` ``[0]`` and ``target_idx`` 1.

    The fixed sampler keeps the samples whose cloudy image's coverage lies in [min_cov,
    max_cov] (:func:`crbench.data.cr.select_cr`); the random sampler (training) uses every
    patch, the only draw being the crop.
    """

    dataset: ClassVar[str] = SEN12MSCR_KEY
    regions: ClassVar[tuple[str, ...]] = ("all",)

    def __init__(self, root: Path, split: str = "test", L: int = 1, **kwargs: object) -> None:
        """As :class:`SEN12MSCRTS` (same keyword arguments); ``L`` must be 1.

        Raises:
            UsageError: ``L`` other than 1, a region other than ``all``, or the other
                arguments as :class:`SEN12MSCRTS`.
        """
        check_seq_len(L)
        super().__init__(root, split, check_cr_L(L), **kwargs)  # type: ignore[arg-type]

    def _init_random(self, progress: bool, workers: int) -> None:
        coverages = patch_coverage(self.records, self.cache, workers=workers, progress=progress)
        self._random = list(enumerate(coverages))
        self.n_skipped = 0

    def _draw(self, cov: list[float], rng: np.random.Generator) -> Selection | None:
        return Selection([0], 1, True)


_CLASSES = {SEN12MSCRTS_KEY: "SEN12MSCRTS", SEN12MSCR_KEY: "SEN12MSCR"}


def dataset_class(root: Path) -> type[SEN12MSCRTS]:
    """:class:`SEN12MSCR` for a root with the SEN12MS-CR layout, else :class:`SEN12MSCRTS`.

    Raises:
        DataError: the root holds both layouts.
    """
    return SEN12MSCR if detect_dataset(Path(root)) == SEN12MSCR_KEY else SEN12MSCRTS


def read_scaled(path: Path, mod: str) -> np.ndarray:
    """Read one image and scale it as every sample is (DESIGN.md): S2 (``mod`` "s2") clipped
    to [0, 10000] / 10000, S1 ("s1") clipped to [-25, 0] dB -> [0, 1]; float32 (C, H, W) in
    the file's band order.

    Raises:
        DataError / DatasetNotFoundError: unreadable or missing file, wrong band count.
    """
    return _read(path, mod)


def _s1_range(ranges: Sequence[tuple[float, float]] | None
              ) -> tuple[tuple[float, float], ...] | None:
    """The checked S1 range; None for crbench's default (so that path is the one of before)."""
    from .io import check_s1_range

    pairs = check_s1_range(ranges)
    return None if pairs == DEFAULT_S1_DB_RANGE else pairs


def _read(path: Path, mod: str, s1_range: Sequence[tuple[float, float]] | None = None
          ) -> np.ndarray:
    """Read and scale one image to [0, 1] float32 (S1 over ``s1_range``, default [-25, 0] dB);
    warns if NaN/inf pixels were replaced."""
    from .io import read_s1, read_s2, scale_s1, scale_s2

    read = read_s2(path) if mod == "s2" else read_s1(path)
    if read.nonfinite:
        warnings.warn(f"{path}: {read.nonfinite} NaN/inf pixel values replaced by 0",
                      NonFiniteWarning, stacklevel=3)
    return scale_s2(read.array) if mod == "s2" else scale_s1(read.array, s1_range)


def _read_s1(rec: PatchRecord, pos: int, size: Sequence[int] | None,
             s1_range: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """S1 of date position ``pos``; zeros of ``size`` where the patch has no S1 image there
    (methods that need S1 are refused on such patches before a run, see
    :attr:`crbench.data.index.PatchRecord.has_s1`).

    Raises:
        DataError: no S1 image and no ``size`` to stand in for it (the target's S1).
    """
    path = rec.s1[pos]
    if path is not None:
        return _read(path, "s1", s1_range)
    if size is None:
        raise DataError(f"{rec.roi} patch {rec.patch}: no S1 image of date t={rec.ts[pos]}, "
                        "which this use needs (the target's S1)")
    return np.zeros((len(S1_BANDS), int(size[0]), int(size[1])), dtype=np.float32)


def _check_sizes(arrays: Sequence[np.ndarray], paths: Sequence[Path]) -> None:
    size = arrays[0].shape[-2:]
    for array, path in zip(arrays, paths, strict=True):
        if array.shape[-2:] != size:
            raise DataError(f"{path}: image size {tuple(array.shape[-2:])} differs from "
                            f"{tuple(size)} of {paths[0]}")
