"""Reading GeoTIFFs (crbench.data.io): real files from the synthetic tree, and broken ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from crbench.data.io import read_raster, read_s1, read_s2, scale_s1, scale_s2
from crbench.errors import DataError, DatasetNotFoundError


def _write(path: Path, array: np.ndarray) -> Path:
    """Write a (C, H, W) array as a GeoTIFF in UTM zone 10N, 10 m pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c, h, w = array.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c,
                       dtype=array.dtype, crs="EPSG:32610",
                       transform=Affine(10, 0, 500000, 0, -10, 4000000)) as dst:
        dst.write(array)
    return path


def _first(root: Path, mod: str) -> Path:
    return sorted(root.glob(f"ROIs*/*/{mod}/0/*.tif"))[0]


def test_read_s2_and_s1_from_synthetic_tree(synth_root: Path) -> None:
    s2 = read_s2(_first(synth_root, "S2"))
    s1 = read_s1(_first(synth_root, "S1"))
    assert s2.array.dtype == np.float32 and s2.array.shape == (13, 64, 64)
    assert s1.array.dtype == np.float32 and s1.array.shape == (2, 64, 64)
    assert s2.nonfinite == 0 and s1.nonfinite == 0
    assert s2.crs is not None and s2.crs.is_projected and abs(s2.transform.a) == 10
    # raw digital numbers, not scaled; S1 in dB (negative)
    assert s2.array.max() > 1.0
    assert np.median(s1.array) < 0


def test_read_matches_rasterio_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 12000, size=(13, 8, 9), dtype=np.uint16)
    got = read_s2(_write(tmp_path / "a.tif", arr))
    np.testing.assert_array_equal(got.array, arr.astype(np.float32))


def test_wrong_band_count_names_file_found_and_expected(tmp_path: Path) -> None:
    path = _write(tmp_path / "twelve.tif", np.ones((12, 8, 8), np.uint16))
    with pytest.raises(DataError) as exc:
        read_s2(path)
    msg = str(exc.value)
    assert str(path) in msg and "found 12 bands" in msg and "expected 13" in msg
    with pytest.raises(DataError, match="found 12 bands, expected 2"):
        read_s1(path)


def test_truncated_geotiff_names_file(tmp_path: Path, synth_root: Path) -> None:
    data = _first(synth_root, "S2").read_bytes()
    for cut in (len(data) // 2, 200, 50):
        bad = tmp_path / f"cut{cut}.tif"
        bad.write_bytes(data[:cut])
        with pytest.raises(DataError) as exc:
            read_s2(bad)
        assert str(bad) in str(exc.value)
        assert "corrupt" in str(exc.value) and "truncated" in str(exc.value)


def test_not_a_geotiff_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tif"
    junk.write_text("this is not an image")
    with pytest.raises(DataError, match=r"junk\.tif: unreadable GeoTIFF"):
        read_s1(junk)
    missing = tmp_path / "nope.tif"
    with pytest.raises(DatasetNotFoundError, match=r"nope\.tif: file not found"):
        read_raster(missing, 2)


def test_nan_and_inf_replaced_by_zero_and_counted(tmp_path: Path) -> None:
    arr = np.full((2, 6, 6), -12.0, np.float32)
    arr[0, 0, 0] = np.nan
    arr[0, 1, 2] = np.nan
    arr[1, 3, 3] = np.inf
    arr[1, 4, 4] = -np.inf
    got = read_s1(_write(tmp_path / "s1.tif", arr))
    assert got.nonfinite == 4
    assert np.isfinite(got.array).all()
    assert got.array[0, 0, 0] == 0 and got.array[1, 4, 4] == 0
    assert np.count_nonzero(got.array == -12.0) == 2 * 36 - 4


def test_scale_s2_clips_then_divides() -> None:
    raw = np.array([-5.0, 0.0, 2500.0, 5000.0, 10000.0, 20000.0])
    out = scale_s2(raw)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0, 0.25, 0.5, 1, 1])


def test_scale_s1_clips_to_minus25_0_db() -> None:
    out = scale_s1(np.array([-40.0, -25.0, -12.5, -5.0, 0.0, 3.0]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0, 0.5, 0.8, 1, 1], rtol=1e-6)
