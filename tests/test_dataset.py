"""SEN12MSCRTS torch Dataset on the synthetic tree: shapes, ranges, dtypes, samplers, crops."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from crbench.api import Batch, Inputs, Sample, collate
from crbench.data.dataset import SEN12MSCRTS
from crbench.data.index import build_index, parse_row, scan_tree, write_index
from crbench.data.io import read_s1, read_s2, scale_s1, scale_s2
from crbench.data.masks import MaskCache
from crbench.errors import DataError, UsageError

TEST_ROI = "ROIs1868/119"


@pytest.fixture(scope="module")
def index3(synth_root: Path) -> pd.DataFrame:
    return build_index(synth_root, "test", 3)


@pytest.fixture(scope="module")
def ds(synth_root: Path, index3: pd.DataFrame) -> SEN12MSCRTS:
    return SEN12MSCRTS(synth_root, split="test", L=3, index=index3)


def test_fixed_counts_match_index(ds: SEN12MSCRTS, index3: pd.DataFrame) -> None:
    assert len(ds) == int(index3["match"].sum())
    assert ds.n_skipped == int((~index3["match"]).sum())
    assert len(ds) + ds.n_skipped == len(ds.records) == 2
    assert len(ds) >= 1


def test_sample_shapes_ranges_dtypes(ds: SEN12MSCRTS) -> None:
    sample = ds[0]
    assert isinstance(sample, Sample)
    x = sample.inputs
    assert x.s2.shape == (3, 13, 64, 64) and x.s2.dtype == torch.float32
    assert x.s1.shape == (3, 2, 64, 64) and x.s1.dtype == torch.float32
    assert x.masks.shape == (3, 64, 64) and x.masks.dtype == torch.float32
    assert x.coverage.shape == (3,) and x.days.shape == (3,) and x.days.dtype == torch.int64
    assert sample.target.shape == (13, 64, 64) and sample.target.dtype == torch.float32
    for t in (x.s2, x.s1, sample.target):
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert set(torch.unique(x.masks).tolist()) <= {0.0, 1.0}
    assert torch.allclose(x.coverage, x.masks.mean(dim=(1, 2)))
    assert x.seq_len == 3


def test_sample_values_are_the_files(ds: SEN12MSCRTS, synth_root: Path) -> None:
    sample = ds[0]
    meta = sample.meta
    rec = next(r for r in ds.records if (r.roi, r.patch) == (meta.roi, meta.patch))
    cache = MaskCache(synth_root)
    for k, t in enumerate(meta.input_idx):
        np.testing.assert_array_equal(sample.inputs.s2[k].numpy(),
                                      scale_s2(read_s2(rec.s2[t]).array))
        np.testing.assert_array_equal(sample.inputs.s1[k].numpy(),
                                      scale_s1(read_s1(rec.s1[t]).array))
        np.testing.assert_array_equal(sample.inputs.masks[k].numpy() == 1, cache.mask(rec.s2[t]))
    np.testing.assert_array_equal(sample.target.numpy(),
                                  scale_s2(read_s2(rec.s2[meta.target_idx]).array))
    assert sample.inputs.days.tolist() == [rec.days[t] for t in meta.input_idx]
    assert meta.target_path == str(rec.s2[meta.target_idx])
    assert meta.match is True and meta.coverage_target <= 1e-3
    row = ds.index[(ds.index["roi"] == meta.roi) & (ds.index["patch"] == meta.patch)].iloc[0]
    sel, cov_in, cov_target = parse_row(row.to_dict())
    assert (sel.input_idx, sel.target_idx) == (meta.input_idx, meta.target_idx)
    assert meta.coverage_inputs == pytest.approx(cov_in)
    assert meta.coverage_target == cov_target


def _assert_target_unreachable(sample: Sample) -> None:
    target_ptr = sample.target.untyped_storage().data_ptr()
    for f in fields(Inputs):
        value = getattr(sample.inputs, f.name)
        assert value is not sample.target
        assert value.untyped_storage().data_ptr() != target_ptr


def test_target_not_reachable_from_inputs(ds: SEN12MSCRTS, synth_root: Path,
                                          index3: pd.DataFrame) -> None:
    _assert_target_unreachable(ds[0])
    # toolbox protocol with the target also an input: equal values, still separate tensors
    row = index3.iloc[0].to_dict()
    row.update(input_idx="3;4;5", target_idx=4, match=True)
    frame = pd.DataFrame([row])
    sample = SEN12MSCRTS(synth_root, "test", L=3, index=frame)[0]
    assert torch.equal(sample.inputs.s2[1], sample.target)
    _assert_target_unreachable(sample)
    sample.inputs.s2[1].zero_()  # a method writing into its inputs cannot touch the target
    assert float(sample.target.abs().sum()) > 0


def test_only_matching_false_keeps_all(synth_root: Path, index3: pd.DataFrame) -> None:
    full = SEN12MSCRTS(synth_root, "test", L=3, index=index3, only_matching=False)
    assert len(full) == len(index3) and full.n_skipped == 0
    assert [full[i].meta.match for i in range(len(full))] == index3["match"].tolist()


def test_index_from_csv_path(synth_root: Path, index3: pd.DataFrame, ds: SEN12MSCRTS,
                             tmp_path: Path) -> None:
    path = write_index(index3, tmp_path / "i.csv")
    from_csv = SEN12MSCRTS(synth_root, "test", L=3, index=path)
    assert len(from_csv) == len(ds)
    a, b = from_csv[0], ds[0]
    assert a.meta == b.meta
    assert torch.equal(a.inputs.s2, b.inputs.s2) and torch.equal(a.target, b.target)


def test_index_built_when_not_given(synth_root: Path, ds: SEN12MSCRTS) -> None:
    built = SEN12MSCRTS(synth_root, "test", L=3)
    pd.testing.assert_frame_equal(built.index, ds.index)


def test_index_mismatch_is_refused(synth_root: Path, index3: pd.DataFrame) -> None:
    with pytest.raises(UsageError, match="index: rows have 3 inputs but L=4"):
        SEN12MSCRTS(synth_root, "test", L=4, index=index3)
    with pytest.raises(DataError, match="index: row 0 is malformed"):
        SEN12MSCRTS(synth_root, "test", L=3, index=index3.assign(input_idx="0;1;x"))
    other = index3.assign(roi="ROIs2017/22")
    with pytest.raises(DataError, match="ROIs2017/22 patch 0 is not in split 'test'"):
        SEN12MSCRTS(synth_root, "test", L=3, index=other)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"L": 0}, "L: bad value 0"), ({"L": 30}, "L: bad value 30"),
    ({"split": "tset"}, "split: unknown value 'tset'"),
    ({"region": "mars"}, "region: unknown value 'mars'"),
    ({"sampler": "shuffle"}, "sampler: unknown value 'shuffle'; expected one of fixed, random"),
    ({"protocol": "x"}, "protocol: unknown value 'x'"),
    ({"crop": 0}, "crop: bad value 0"),
    ({"seed": -1}, "seed: bad value -1"), ({"min_cov": 0.5, "max_cov": 0.1}, "min_cov/max_cov"),
])
def test_bad_arguments(synth_root: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        SEN12MSCRTS(synth_root, **kwargs)


def test_dataloader_batches(ds: SEN12MSCRTS) -> None:
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate)))
    assert isinstance(batch, Batch)
    n = min(2, len(ds))
    assert batch.inputs.s2.shape == (n, 3, 13, 64, 64)
    assert batch.inputs.masks.shape == (n, 3, 64, 64)
    assert batch.target.shape == (n, 13, 64, 64) and len(batch.meta) == n


# -- random sampler ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blank_root(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Copy of the test ROI whose patch 1 S2 images are all blank (s2cloudless counts blank
    images as fully cloudy, so patch 1 has no clear date); the copied mask cache keeps
    patch 0 cached (same relative paths, sizes and mtimes)."""
    base = tmp_path_factory.mktemp("blank")
    root, cache_dir = base / "root", base / "cache"
    build_index(synth_root, "test", 3)  # make sure the source cache is filled
    shutil.copytree(synth_root / TEST_ROI, root / TEST_ROI)  # copy2 keeps mtime_ns
    shutil.copytree(MaskCache(synth_root).cache_dir, cache_dir)
    for path in (root / TEST_ROI / "S2").glob("*/*patch_1.tif"):
        with rasterio.open(path) as src:
            profile = src.profile
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.zeros((profile["count"], profile["height"], profile["width"]),
                               dtype=profile["dtype"]))
    return root, cache_dir


def test_random_excludes_patch_without_clear_date(blank_root: tuple[Path, Path]) -> None:
    root, cache_dir = blank_root
    cache = MaskCache(root, cache_dir=cache_dir)
    rnd = SEN12MSCRTS(root, "test", L=3, sampler="random", cache=cache)
    assert len(rnd) == 1 and rnd.n_skipped == 1
    assert cache.misses == 30  # only the 30 rewritten images of patch 1
    for epoch in range(5):
        rnd.set_epoch(epoch)
        meta = rnd[0].meta
        assert meta.patch == 0 and meta.match and meta.coverage_target <= 1e-3
        assert meta.target_idx not in meta.input_idx


def test_random_sampler_deterministic_per_epoch(synth_root: Path) -> None:
    a = SEN12MSCRTS(synth_root, "test", L=3, sampler="random", seed=5)
    b = SEN12MSCRTS(synth_root, "test", L=3, sampler="random", seed=5)
    picks = []
    for epoch in range(8):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        ma, mb = a[0].meta, b[0].meta
        assert (ma.input_idx, ma.target_idx) == (mb.input_idx, mb.target_idx)
        picks.append((tuple(ma.input_idx), ma.target_idx))
        inputs, target = ma.input_idx, ma.target_idx
        others = [t for t in range(30) if t != target]
        start = others.index(inputs[0])
        assert inputs == others[start:start + 3]
    assert len(set(picks)) > 1  # epochs draw different samples


def test_random_crop_is_identical_across_arrays(synth_root: Path) -> None:
    full = SEN12MSCRTS(synth_root, "test", L=3, sampler="random", seed=1)
    crop = SEN12MSCRTS(synth_root, "test", L=3, sampler="random", seed=1, crop=24)
    a, c = full[1], crop[1]
    assert c.meta.input_idx == a.meta.input_idx  # crop is drawn after the dates
    assert c.inputs.s2.shape == (3, 13, 24, 24) and c.inputs.s1.shape == (3, 2, 24, 24)
    assert c.inputs.masks.shape == (3, 24, 24) and c.target.shape == (13, 24, 24)
    hits = [(y, x) for y in range(41) for x in range(41)
            if torch.equal(a.target[:, y:y + 24, x:x + 24], c.target)]
    assert len(hits) == 1
    y, x = hits[0]
    win = (..., slice(y, y + 24), slice(x, x + 24))
    assert torch.equal(a.inputs.s2[win], c.inputs.s2)
    assert torch.equal(a.inputs.s1[win], c.inputs.s1)
    assert torch.equal(a.inputs.masks[win], c.inputs.masks)
    assert torch.allclose(c.inputs.coverage, c.inputs.masks.mean(dim=(1, 2)))
    with pytest.raises(UsageError, match="crop: 65 px is larger than the images"):
        SEN12MSCRTS(synth_root, "test", L=3, sampler="random", crop=65)[0]


def test_records_cover_split(synth_root: Path, ds: SEN12MSCRTS) -> None:
    assert [(r.roi, r.patch) for r in ds.records] == \
        [(r.roi, r.patch) for r in scan_tree(synth_root, "test")]
    assert "split='test'" in repr(ds) and "sampler='fixed'" in repr(ds)
