"""scan_tree / build_index / CSV round trip on the synthetic tree (real rasterio, s2cloudless)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crbench.constants import ALL_ROIS, S1_LAUNCH
from crbench.data.index import (
    INDEX_COLUMNS,
    build_index,
    parse_row,
    read_index,
    scan_tree,
    write_index,
)
from crbench.data.io import read_s2
from crbench.data.layout import EXPECTED_LAYOUT, parse_name
from crbench.data.masks import MaskCache, compute_cloud_mask
from crbench.data.sampler import Protocol, select_fixed
from crbench.errors import DataError, DatasetNotFoundError, UsageError

TEST_ROI = "ROIs1868/119"  # the synthetic tree's only test-split ROI


@pytest.fixture(scope="module")
def test_index(synth_root: Path) -> pd.DataFrame:
    """Index of the test split (computes the test split's masks once into the shared cache)."""
    return build_index(synth_root, "test", 3)


def test_scan_tree_lists_patches_with_30_dates(synth_root: Path) -> None:
    records = scan_tree(synth_root, "test")
    assert [(r.roi, r.patch) for r in records] == [(TEST_ROI, 0), (TEST_ROI, 1)]
    for rec in records:
        assert len(rec.s1) == len(rec.s2) == len(rec.days) == 30
        for t, (s1, s2, day) in enumerate(zip(rec.s1, rec.s2, rec.days, strict=True)):
            k1, k2 = parse_name(s1.name), parse_name(s2.name)
            assert (k1.mod, k2.mod, k1.t, k2.t) == ("s1", "s2", t, t)
            assert k1.patch == k2.patch == rec.patch
            assert s2.parent == synth_root / TEST_ROI / "S2" / str(t)
            assert day == (k2.day - S1_LAUNCH).days
        assert rec.days == sorted(rec.days) and 1300 < rec.days[0] < 1700  # dates of 2018


def test_scan_tree_all_split_in_toolbox_order(synth_root: Path) -> None:
    records = scan_tree(synth_root, "all")
    rois = [r.roi for r in records]
    assert len(records) == 8
    assert rois == sorted(rois, key=ALL_ROIS.index)
    assert {r.roi for r in scan_tree(synth_root, "train")} == {"ROIs1868/36", "ROIs1868/56"}
    assert {r.roi for r in scan_tree(synth_root, "train", "europa")} == {"ROIs1868/56"}


def test_missing_root_shows_expected_layout(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as err:
        scan_tree(missing, "test")
    msg = str(err.value)
    assert str(missing) in msg and "does not exist" in msg
    assert EXPECTED_LAYOUT in msg and f"crbench synth {missing}" in msg


def test_empty_split_names_expected_and_found_rois(synth_root: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        scan_tree(synth_root, "test", "africa")
    msg = str(err.value)
    assert "split 'test' of region 'africa' is empty" in msg
    assert "ROIs2017/140, ROIs2017/32" in msg  # expected
    assert "ROIs found: ROIs1868/36, ROIs1868/56, ROIs1868/119, ROIs2017/22" in msg
    assert EXPECTED_LAYOUT in msg


def test_empty_directory_is_an_empty_split(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="ROIs found: none"):
        scan_tree(tmp_path, "val")


@pytest.mark.parametrize(("split", "region", "name"), [("testing", "all", "split"),
                                                       ("test", "asia", "region")])
def test_unknown_split_or_region(synth_root: Path, split: str, region: str, name: str) -> None:
    with pytest.raises(UsageError, match=rf"^{name}: unknown value '\w+'; expected one of"):
        scan_tree(synth_root, split, region)


def test_patch_missing_an_s1_image_keeps_its_dates(synth_root: Path, tmp_path: Path) -> None:
    """Issue 13: a missing S1 image no longer refuses the tree; the record says which."""
    root = tmp_path / "root"
    shutil.copytree(synth_root / TEST_ROI, root / TEST_ROI)
    victim = next((root / TEST_ROI / "S1" / "7").glob("*patch_1.tif"))
    victim.unlink()
    recs = {rec.patch: rec for rec in scan_tree(root, "test")}
    assert recs[1].ts == list(range(30)) and recs[1].s1[7] is None and not recs[1].has_s1
    assert recs[0].has_s1 and all(p is not None for p in recs[0].s1)


def test_build_index_columns_and_dtypes(test_index: pd.DataFrame) -> None:
    assert tuple(test_index.columns) == INDEX_COLUMNS
    assert test_index["patch"].dtype == np.int64
    assert test_index["target_idx"].dtype == np.int64
    assert test_index["coverage_target"].dtype == np.float64
    assert test_index["match"].dtype == bool
    assert list(zip(test_index["roi"], test_index["patch"], strict=True)) == \
        [(TEST_ROI, 0), (TEST_ROI, 1)]
    for text in test_index["input_idx"]:
        assert len(text.split(";")) == 3


def test_build_index_values_follow_sampler_and_masks(synth_root: Path,
                                                      test_index: pd.DataFrame) -> None:
    cache = MaskCache(synth_root)
    records = scan_tree(synth_root, "test")
    for rec, row in zip(records, test_index.to_dict("records"), strict=True):
        cov = [cache.coverage(p) for p in rec.s2]
        sel, cov_in, cov_target = parse_row(row)
        assert sel == select_fixed(cov, 3)
        assert cov_in == [cov[i] for i in sel.input_idx]  # exact: full precision in the text
        assert cov_target == cov[sel.target_idx]
    # the cached coverage is the s2cloudless mask's mean, computed here independently
    rec, row = records[0], test_index.iloc[0]
    for t in (int(row["target_idx"]), int(row["input_idx"].split(";")[0])):
        direct = compute_cloud_mask(read_s2(rec.s2[t]).array).mean()
        assert cache.coverage(rec.s2[t]) == pytest.approx(direct, abs=1e-12)


def test_second_build_reads_cache_only(synth_root: Path, test_index: pd.DataFrame) -> None:
    cache = MaskCache(synth_root)
    again = build_index(synth_root, "test", 3, cache=cache)
    assert cache.misses == 0 and cache.hits >= 60
    pd.testing.assert_frame_equal(again, test_index)


def test_strict_protocol_never_uses_target(synth_root: Path, test_index: pd.DataFrame) -> None:
    strict = build_index(synth_root, "test", 5, protocol=Protocol.STRICT)
    for row in strict.to_dict("records"):
        sel, _, _ = parse_row(row)
        assert sel.target_idx not in sel.input_idx and len(sel.input_idx) == 5


def test_bounds_filter_inputs(synth_root: Path, test_index: pd.DataFrame) -> None:
    frame = build_index(synth_root, "test", 2, min_cov=0.2, max_cov=0.6)
    for row in frame.to_dict("records"):
        sel, cov_in, _ = parse_row(row)
        assert all(0.2 <= c <= 0.6 for c in cov_in) or not sel.match


def test_csv_round_trip(tmp_path: Path, test_index: pd.DataFrame) -> None:
    path = write_index(test_index, tmp_path / "sub" / "i.csv")
    header = path.read_text().splitlines()[0]
    assert header == ",".join(INDEX_COLUMNS)
    back = read_index(path)
    pd.testing.assert_frame_equal(back, test_index, check_exact=True)


def test_build_index_validates_arguments_first(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="L: bad value 0"):
        build_index(tmp_path / "missing", "test", 0)
    with pytest.raises(UsageError, match="L: bad value 30"):
        build_index(tmp_path / "missing", "test", 30)
    with pytest.raises(UsageError, match="max_cov: bad value 2"):
        build_index(tmp_path / "missing", "test", 3, max_cov=2)


def test_read_index_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="crbench data index"):
        read_index(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("roi,patch,input_idx\nROIs1868/119,0,0;1;2\n")
    with pytest.raises(DataError, match=r"missing column.*target_idx"):
        read_index(bad)
    bad.write_text(",".join(INDEX_COLUMNS) + "\nROIs1868/119,0,0;1;x,4,0.1;0.2;0.3,0.0,True\n")
    with pytest.raises(DataError, match="unparsable value"):
        read_index(bad)


def test_roi_directory_without_images_is_named(tmp_path: Path) -> None:
    (tmp_path / TEST_ROI / "S2" / "0").mkdir(parents=True)
    with pytest.raises(DataError, match=r"ROIs1868/119: ROI directory holds no images"):
        scan_tree(tmp_path, "test")


def test_long_roi_lists_are_shortened(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r", \.\.\. \(53 in all\); ROIs found: none"):
        scan_tree(tmp_path, "all")


def test_relative_root(synth_root: Path, test_index: pd.DataFrame,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(synth_root.parent)
    records = scan_tree(Path(synth_root.name), "test")
    assert all(p.is_absolute() and p.is_file() for p in records[0].s2)
    cache = MaskCache(Path(synth_root.name))
    frame = build_index(Path(synth_root.name), "test", 3, cache=cache)
    pd.testing.assert_frame_equal(frame, test_index)
    assert cache.misses == 0
