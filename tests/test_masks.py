"""Cloud masks (crbench.data.masks): s2cloudless parity, the blank rule and the on-disk cache."""

from __future__ import annotations

import functools
import os
import pickle
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from crbench.data import maskfile
from crbench.data.io import read_s2
from crbench.data.masks import MaskCache, compute_cloud_mask, default_cache_dir
from crbench.errors import DataError, DatasetNotFoundError, UsageError


def _s2(root: Path, patch: int, ts: range | list[int], roi: str = "ROIs1868/119") -> list[Path]:
    """S2 images of one patch at the given dates, in date order."""
    return [next((root / roi / "S2" / str(t)).glob(f"*_patch_{patch}.tif")) for t in ts]


def _copy(src_root: Path, files: list[Path], dst_root: Path) -> list[Path]:
    """Copy files into a fresh tree, keeping their paths relative to the root (and mtimes)."""
    out = []
    for f in files:
        dst = dst_root / f.relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
        out.append(dst)
    return out


@functools.cache
def _toolbox_detector():
    from s2cloudless import S2PixelCloudDetector

    return S2PixelCloudDetector(threshold=0.4, all_bands=True, average_over=4, dilation_size=2)


def _direct(path: Path) -> np.ndarray:
    """The toolbox's recipe written out with the literal s2cloudless settings."""
    raw = read_s2(path).array
    img = np.clip(raw, 0, 10000) / 10000
    return _toolbox_detector().get_cloud_masks(np.moveaxis(img, 0, -1)[None, ...])[0].astype(bool)


def test_mask_equals_direct_s2cloudless(synth_root: Path) -> None:
    from crbench.synth import load_truth

    truth = load_truth(synth_root, "ROIs1868/119", 0).cloud().mean(axis=(1, 2))
    partly = [int(t) for t in np.flatnonzero((truth > 0.2) & (truth < 0.8))[:2]]
    clear = [int(t) for t in np.flatnonzero(truth == 0)[:1]]
    assert len(partly) == 2 and len(clear) == 1, "synthetic patch lacks partly cloudy dates"
    coverage = []
    for path in _s2(synth_root, 0, partly + clear):
        ours = compute_cloud_mask(read_s2(path).array)
        assert ours.dtype == bool and ours.shape == (64, 64)
        np.testing.assert_array_equal(ours, _direct(path))
        coverage.append(ours.mean())
    assert 0 < coverage[0] < 1 and 0 < coverage[1] < 1


def test_blank_image_is_fully_cloudy() -> None:
    assert compute_cloud_mask(np.zeros((13, 16, 20), np.uint16)).all()
    # scaled mean and std below 1e-5 (raw 0.05 -> 5e-6) is still blank
    assert compute_cloud_mask(np.full((13, 8, 8), 0.05, np.float32)).all()
    assert compute_cloud_mask(np.zeros((13, 16, 20))).shape == (16, 20)


def test_mask_rejects_wrong_shape() -> None:
    with pytest.raises(UsageError, match=r"raw_s2: shape \(12, 8, 8\).*\(13, H, W\)"):
        compute_cloud_mask(np.zeros((12, 8, 8)))


def test_second_access_does_not_recompute(synth_root: Path, tmp_path: Path) -> None:
    paths = _s2(synth_root, 1, range(3), roi="ROIs1868/36")
    cache = MaskCache(synth_root, cache_dir=tmp_path / "c")
    stats = cache.precompute(paths, progress=False)
    assert (stats.computed, stats.cached, stats.failed) == (3, 0, [])
    assert cache.misses == 3
    again = MaskCache(synth_root, cache_dir=tmp_path / "c")
    for p in paths:
        m = again.mask(p)
        np.testing.assert_array_equal(m, compute_cloud_mask(read_s2(p).array))
        assert again.coverage(p) == pytest.approx(m.mean())
    assert again.misses == 0 and again.hits == 6
    assert again.precompute(paths, progress=False).computed == 0
    # compact: one file per patch, far smaller than the boolean masks themselves
    files = list((tmp_path / "c").rglob("*.npz"))
    assert [f.name for f in files] == ["patch_1.npz"]
    assert files[0].stat().st_size < 3 * 64 * 64 // 2


def test_touch_invalidates_exactly_that_entry(synth_root: Path, tmp_path: Path) -> None:
    paths = _copy(synth_root, _s2(synth_root, 0, range(3)), tmp_path / "d")
    cache = MaskCache(tmp_path / "d", cache_dir=tmp_path / "c")
    cache.precompute(paths, progress=False)
    st = paths[1].stat()
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    fresh = MaskCache(tmp_path / "d", cache_dir=tmp_path / "c")
    assert [fresh.is_cached(p) for p in paths] == [True, False, True]
    stats = fresh.precompute(paths, progress=False)
    assert (stats.computed, stats.cached) == (1, 2)
    assert all(fresh.is_cached(p) for p in paths)


def test_corrupt_cache_file_is_recomputed(synth_root: Path, tmp_path: Path) -> None:
    paths = _copy(synth_root, _s2(synth_root, 1, [5]), tmp_path / "d")
    MaskCache(tmp_path / "d", cache_dir=tmp_path / "c").precompute(paths, progress=False)
    (entry,) = (tmp_path / "c").rglob("*.npz")
    good = entry.read_bytes()
    for broken in (b"garbage, not a zip file", good[: len(good) // 2], b""):
        entry.write_bytes(broken)
        cache = MaskCache(tmp_path / "d", cache_dir=tmp_path / "c")
        assert not cache.is_cached(paths[0])
        np.testing.assert_array_equal(cache.mask(paths[0]), _direct(paths[0]))
        assert cache.misses == 1
        assert MaskCache(tmp_path / "d", cache_dir=tmp_path / "c").is_cached(paths[0])


def test_coverage_of_fresh_entry_never_unpacks(synth_root: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _copy(synth_root, _s2(synth_root, 0, [2, 3]), tmp_path / "d")
    warm = MaskCache(tmp_path / "d", cache_dir=tmp_path / "c")
    expected = [m.mean() for m in warm.masks(paths)]

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("coverage() unpacked a mask")

    monkeypatch.setattr(np, "unpackbits", boom)
    cache = MaskCache(tmp_path / "d", cache_dir=tmp_path / "c")
    assert [cache.coverage(p) for p in paths] == pytest.approx(expected)
    assert (cache.hits, cache.misses) == (2, 0)


def test_writers_with_stale_views_keep_each_others_entries(synth_root: Path,
                                                           tmp_path: Path) -> None:
    paths = _copy(synth_root, _s2(synth_root, 0, [0, 1]), tmp_path / "d")
    a = MaskCache(tmp_path / "d", cache_dir=tmp_path / "c")
    b = MaskCache(tmp_path / "d", cache_dir=tmp_path / "c")
    assert not a.is_cached(paths[0]) and not b.is_cached(paths[1])  # both load the empty view
    a.mask(paths[0])
    b.mask(paths[1])  # b's view predates a's write; the merge must keep a's entry
    c = MaskCache(tmp_path / "d", cache_dir=tmp_path / "c")
    assert c.is_cached(paths[0]) and c.is_cached(paths[1])


def test_concurrent_writes_to_one_patch_file_lose_nothing(tmp_path: Path) -> None:
    target = tmp_path / "ROIs1868" / "119" / "patch_0.npz"
    rng = np.random.default_rng(0)
    masks = {f"ROIs1868/119/S2/{t}/x_{t}.tif": rng.random((8, 8)) < 0.5 for t in range(12)}

    def write(rel: str, m: np.ndarray) -> None:
        entry = maskfile.Entry(100, 7, float(m.mean()), m.shape, np.packbits(m.ravel()))
        maskfile.write_group(target, {rel: entry})

    threads = [threading.Thread(target=write, args=item) for item in masks.items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    group = maskfile.read_group(target, with_bits=True)
    assert sorted(group.index) == sorted(masks)
    for rel, m in masks.items():
        np.testing.assert_array_equal(group.unpack(group.index[rel]), m)
    assert not [p for p in target.parent.iterdir() if p.suffix == ".tmp"]


@pytest.mark.slow
def test_parallel_precompute_matches_direct(synth_root: Path, tmp_path: Path) -> None:
    """Two spawned workers, one patch each (slow only because each worker imports s2cloudless)."""
    files = _s2(synth_root, 0, [1], "ROIs2017/22") + _s2(synth_root, 1, [1], "ROIs2017/22")
    paths = _copy(synth_root, files, tmp_path / "d")
    cache = MaskCache(tmp_path / "d", cache_dir=tmp_path / "c")
    stats = cache.precompute(paths, workers=2, progress=False)
    assert (stats.computed, stats.cached, stats.failed) == (2, 0, [])
    assert len(list((tmp_path / "c").rglob("*.npz"))) == 2
    for p in paths:
        np.testing.assert_array_equal(cache.mask(p), _direct(p))
    assert cache.misses == 2 and cache.hits == 2


def test_unreadable_image_is_reported_not_dropped(synth_root: Path, tmp_path: Path) -> None:
    good, bad = _copy(synth_root, _s2(synth_root, 0, [3, 4]), tmp_path / "d")
    bad.write_bytes(bad.read_bytes()[:300])
    gone = tmp_path / "d" / "ROIs1868" / "119" / "S2" / "9" / "gone.tif"
    cache = MaskCache(tmp_path / "d", cache_dir=tmp_path / "c")
    stats = cache.precompute([good, bad, gone], progress=False)
    assert stats.computed == 1 and stats.total == 3
    assert sorted(p for p, _ in stats.failed) == sorted([str(bad), str(gone)])
    messages = dict(stats.failed)
    assert "corrupt" in messages[str(bad)] and "file not found" in messages[str(gone)]
    with pytest.raises(DatasetNotFoundError, match=r"gone\.tif"):
        cache.masks([good, gone])
    with pytest.raises(DataError, match=re.escape(bad.name)):
        cache.mask(bad)
    with pytest.raises(DataError, match=re.escape(bad.name)):
        cache.coverages([good, bad])


def test_bad_arguments(synth_root: Path, tmp_path: Path) -> None:
    cache = MaskCache(synth_root, cache_dir=tmp_path / "c")
    outside = tmp_path / "elsewhere.tif"
    outside.write_bytes(b"")
    with pytest.raises(UsageError, match=r"s2_path: .*elsewhere\.tif is not under the data root"):
        cache.mask(outside)
    with pytest.raises(DatasetNotFoundError, match=r"missing\.tif: file not found"):
        cache.coverage(synth_root / "missing.tif")
    with pytest.raises(UsageError, match="workers: 0"):
        cache.precompute([], workers=0)
    with pytest.raises(DatasetNotFoundError, match=r"data_root: .*absent is not a directory"):
        MaskCache(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()


def test_cache_pickles_for_dataloader_workers(synth_root: Path, tmp_path: Path) -> None:
    path = _s2(synth_root, 0, [0])[0]
    cache = MaskCache(synth_root, cache_dir=tmp_path / "c")
    cache.coverage(path)
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.cache_dir == cache.cache_dir and clone.is_cached(path)
    assert clone.mask(path).shape == (64, 64) and clone.misses == 1 and clone.hits == 1


def test_unwritable_cache_warns_and_still_answers(synth_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    path = _s2(synth_root, 0, [0])[0]
    cache = MaskCache(synth_root, cache_dir=blocker / "cache")  # cannot be created
    with pytest.warns(UserWarning, match="not writable.*CRBENCH_CACHE_DIR"):
        mask = cache.mask(path)
    assert mask.shape == (64, 64) and cache.misses == 1
    assert not cache.is_cached(path)


def test_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRBENCH_CACHE_DIR", raising=False)
    assert default_cache_dir(tmp_path) == tmp_path / ".crbench" / "masks"
    assert MaskCache(tmp_path).cache_dir == tmp_path / ".crbench" / "masks"
    monkeypatch.setenv("CRBENCH_CACHE_DIR", str(tmp_path / "env"))
    other = tmp_path / "other"
    assert default_cache_dir(other).parent == tmp_path / "env"
    assert default_cache_dir(other) != default_cache_dir(tmp_path)  # one dir per data root


def test_read_only_data_root_is_never_written(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # shared data marked read-only stays untouched even where the process could write (root)
    monkeypatch.delenv("CRBENCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "data"
    root.mkdir()
    root.chmod(0o555)
    try:
        where = default_cache_dir(root)
        assert where.parent == tmp_path / "home" / ".cache" / "crbench"
        assert list(root.iterdir()) == []
    finally:
        root.chmod(0o755)
    assert default_cache_dir(root) == root / ".crbench" / "masks"  # writable again
