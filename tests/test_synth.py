"""Synthetic SEN12MS-CR-TS generator (crbench.synth): layout, georeference, determinism,
cloud statistics, physical plausibility and agreement of s2cloudless with the ground truth."""

from __future__ import annotations

import hashlib
import itertools
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy.ndimage import binary_erosion

from crbench.cli.main import main
from crbench.constants import (
    ALL_ROIS,
    N_DATES,
    S1_BANDS,
    S2_BANDS,
    rois_for,
)
from crbench.data.layout import file_path, parse_name
from crbench.data.masks import compute_cloud_mask
from crbench.errors import DatasetNotFoundError, UsageError
from crbench.synth import (
    LandCover,
    TruthClass,
    interleaved_rois,
    load_truth,
    synthesize,
    truth_path,
)

ROIS4 = interleaved_rois()[:4]
PATCHES = (0, 1)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _s2(root: Path, roi: str, patch: int, t: int) -> np.ndarray:
    tr = load_truth(root, roi, patch)
    return _read(file_path(root, "s2", roi, t, tr.s2_dates[t], patch)).astype(np.float64) / 1e4


def _s1(root: Path, roi: str, patch: int, t: int) -> np.ndarray:
    tr = load_truth(root, roi, patch)
    return _read(file_path(root, "s1", roi, t, tr.s1_dates[t], patch))


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- layout
def test_rois_interleave_splits_and_cover_the_official_list() -> None:
    order = interleaved_rois()
    assert sorted(order) == sorted(ALL_ROIS)
    assert [r in rois_for("test") for r in order[:4]] == [True, False, False, False]
    assert order[1] in rois_for("train") and order[3] in rois_for("train")
    assert order[2] in rois_for("val")
    assert order[4] in rois_for("test")


def test_layout_names_and_dates(synth_root: Path) -> None:
    tifs = sorted(synth_root.rglob("*.tif"))
    assert len(tifs) == len(ROIS4) * len(PATCHES) * N_DATES * 2
    keys = {}
    for p in tifs:
        k = parse_name(p.name)
        assert k is not None, p
        assert p == file_path(synth_root, k.mod, k.roi, k.t, k.day, k.patch)
        keys[(k.mod, k.roi, k.patch, k.t)] = k.day
    assert {r for _, r, _, _ in keys} == set(ROIS4)
    assert {p for _, _, p, _ in keys} == set(PATCHES)
    for roi in ROIS4:
        s2 = [keys[("s2", roi, 0, t)] for t in range(N_DATES)]
        s1 = [keys[("s1", roi, 0, t)] for t in range(N_DATES)]
        assert all(d.year == 2018 for d in s1 + s2)
        assert all(a < b for a, b in itertools.pairwise(s2))  # increasing over the year
        assert (s2[-1] - s2[0]).days > 300  # spread over 2018
        assert max(abs((a - b).days) for a, b in zip(s1, s2, strict=True)) <= 5
        assert s2 == [keys[("s2", roi, 1, t)] for t in range(N_DATES)]  # one date per t
    # The tree spans the official splits: one test, two train, one val ROI.
    found = {s: [r for r in ROIS4 if r in rois_for(s)] for s in ("test", "train", "val")}
    assert [len(found[s]) for s in ("test", "train", "val")] == [1, 2, 1]


def test_truth_lives_outside_the_roi_tree(synth_root: Path) -> None:
    for roi in ROIS4:
        for patch in PATCHES:
            path = truth_path(synth_root, roi, patch)
            assert path.is_file()
            assert not any(part.startswith("ROIs") for part in path.relative_to(
                synth_root).parts[:-1])
            tr = load_truth(synth_root, roi, patch)
            assert tr.classes.shape == (N_DATES, 64, 64) and tr.classes.dtype == np.uint8
            assert set(np.unique(tr.classes)) <= {int(c) for c in TruthClass}
            assert tr.landcover.shape == (64, 64)
            assert isinstance(tr.s2_dates[0], date)
    with pytest.raises(DatasetNotFoundError, match="patch 7"):
        load_truth(synth_root, ROIS4[0], 7)


def test_georeference_utm_10m_adjacent_patches(synth_root: Path) -> None:
    for roi in ROIS4:
        tr = load_truth(synth_root, roi, 0)
        with rasterio.open(file_path(synth_root, "s2", roi, 0, tr.s2_dates[0], 0)) as a, \
                rasterio.open(file_path(synth_root, "s2", roi, 0, tr.s2_dates[0], 1)) as b, \
                rasterio.open(file_path(synth_root, "s1", roi, 0, tr.s1_dates[0], 0)) as s1:
            epsg = a.crs.to_epsg()
            assert 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760
            assert a.crs.linear_units in ("metre", "meter")
            assert a.res == (10.0, 10.0)
            assert s1.crs == a.crs and s1.transform == a.transform
            assert b.crs == a.crs
            # patch 1 continues patch 0 to the east, same row
            assert b.transform.c == pytest.approx(a.transform.c + 64 * 10.0)
            assert b.transform.f == pytest.approx(a.transform.f)
            assert 100_000 < a.transform.c < 900_000 and 0 < a.transform.f < 10_000_000


def test_band_counts_dtypes_descriptions(synth_root: Path) -> None:
    roi = ROIS4[0]
    tr = load_truth(synth_root, roi, 0)
    with rasterio.open(file_path(synth_root, "s2", roi, 3, tr.s2_dates[3], 0)) as s2:
        assert s2.count == 13 and s2.dtypes == ("uint16",) * 13
        assert s2.descriptions == S2_BANDS
    with rasterio.open(file_path(synth_root, "s1", roi, 3, tr.s1_dates[3], 0)) as s1:
        assert s1.count == 2 and s1.dtypes == ("float32", "float32")
        assert s1.descriptions == S1_BANDS
        db = s1.read()
    assert np.isfinite(db).all()
    assert -40 < np.median(db[0]) < 0 and np.median(db[1]) < np.median(db[0])  # VH < VV


# ----------------------------------------------------------------------------- determinism
def test_deterministic_and_independent_of_tree_size(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", rois=1, patches=1, size=32, seed=7)
    synthesize(tmp_path / "b", rois=1, patches=1, size=32, seed=7)
    a, b = _tree_hashes(tmp_path / "a"), _tree_hashes(tmp_path / "b")
    assert len(a) == 2 * N_DATES + 2 and a == b  # byte-identical, truth included
    synthesize(tmp_path / "c", rois=2, patches=2, size=32, seed=7, workers=2)
    c = _tree_hashes(tmp_path / "c")
    shared = [k for k in a if not k.endswith("synth.json")]
    # More ROIs/patches, made in parallel, leave patch 0 unchanged.
    assert all(c[k] == a[k] for k in shared)
    synthesize(tmp_path / "d", rois=1, patches=1, size=32, seed=8)
    d = _tree_hashes(tmp_path / "d")
    tifs_a = {v for k, v in a.items() if k.endswith(".tif")}
    tifs_d = {v for k, v in d.items() if k.endswith(".tif")}
    assert tifs_a.isdisjoint(tifs_d)  # another seed changes every image


# ----------------------------------------------------------------------------- clouds
def test_coverage_statistics(synth_root: Path) -> None:
    cov = np.stack([load_truth(synth_root, r, p).coverage for r in ROIS4 for p in PATCHES])
    assert cov.min() == 0.0 and cov.max() == 1.0
    assert 0.4 <= cov.mean() <= 0.6
    assert np.histogram(cov, bins=5, range=(0, 1))[0].min() > 0  # the whole range occurs
    with_clear = (cov == 0).any(axis=1)
    assert with_clear.sum() > len(with_clear) / 2  # most patches have a clear date
    assert not with_clear.all()  # some have none
    classes = np.concatenate([load_truth(synth_root, r, p).classes.ravel()
                              for r in ROIS4 for p in PATCHES])
    assert set(np.unique(classes)) == {int(c) for c in TruthClass}  # every cloud type occurs


def test_cloud_radiometry_follows_truth(synth_root: Path) -> None:
    thick_b02, thick_b10, clear_b10, shadow_ratio, cirrus_b10 = [], [], [], [], []
    thin_ratio = []
    with_clear = [(r, p) for r in ROIS4 for p in PATCHES
                  if (load_truth(synth_root, r, p).coverage == 0).any()]
    for roi, patch in with_clear[:2]:
        tr = load_truth(synth_root, roi, patch)
        t_clear = int(np.flatnonzero(tr.coverage == 0)[0])
        ref = _s2(synth_root, roi, patch, t_clear)
        clear_b10.append(ref[10].ravel())
        for t in range(N_DATES):
            img, c = _s2(synth_root, roi, patch, t), tr.classes[t]
            thick_b02.append(img[1][c == TruthClass.THICK])
            thick_b10.append(img[10][c == TruthClass.THICK])
            cirrus_b10.append(img[10][c == TruthClass.CIRRUS])
            sh = c == TruthClass.SHADOW
            shadow_ratio.append(img[7][sh] / ref[7][sh])
            thin = c == TruthClass.THIN
            thin_ratio.append(img[1][thin] / ref[1][thin])
    assert np.median(np.concatenate(thick_b02)) > 0.3  # thick clouds are bright
    b10_clear = np.median(np.concatenate(clear_b10))
    assert b10_clear < 0.01
    assert np.median(np.concatenate(thick_b10)) > b10_clear + 0.02
    assert np.median(np.concatenate(cirrus_b10)) > b10_clear + 0.005
    assert np.median(np.concatenate(shadow_ratio)) < 0.8  # shadows darken the ground
    thin_b02 = np.median(np.concatenate(thin_ratio))
    assert thin_b02 > 1.1  # thin clouds and haze brighten the ground but stay translucent


def test_s2cloudless_finds_thick_clouds(synth_root: Path) -> None:
    """IoU of the s2cloudless masks (DESIGN.md settings) with the thick-cloud truth, pooled
    over one partly cloudy date per patch; clear dates must give (almost) empty masks."""
    inter = union = 0
    clear_cov = []
    for i, (roi, patch) in enumerate((r, p) for r in ROIS4 for p in PATCHES):
        tr = load_truth(synth_root, roi, patch)
        thick = tr.classes == TruthClass.THICK
        frac = thick.mean(axis=(1, 2))
        partial = np.flatnonzero((frac > 0.1) & (frac < 0.9))
        assert partial.size, (roi, patch)
        t = int(partial[0])
        mask = compute_cloud_mask(_read(file_path(synth_root, "s2", roi, t, tr.s2_dates[t],
                                                  patch)))
        inter += (mask & thick[t]).sum()
        union += (mask | thick[t]).sum()
        clear = np.flatnonzero(tr.coverage == 0)
        if i % 2 == 0 and clear.size:
            t = int(clear[0])
            raw = _read(file_path(synth_root, "s2", roi, t, tr.s2_dates[t], patch))
            clear_cov.append(compute_cloud_mask(raw).mean())
    assert inter / union >= 0.6
    assert len(clear_cov) >= 3 and max(clear_cov) <= 1e-3  # clear dates stay clear


# ----------------------------------------------------------------------------- plausibility
def _clear_pixels(root: Path, cls: LandCover, erode: int = 2):
    """Yield (image, interior mask of ``cls``, date) for each clear date of each patch."""
    for roi in ROIS4:
        for patch in PATCHES:
            tr = load_truth(root, roi, patch)
            m = binary_erosion(tr.landcover == cls, iterations=erode)
            if m.sum() < 20:
                continue
            for t in np.flatnonzero(tr.coverage == 0):
                yield _s2(root, roi, patch, t), m, tr.s2_dates[t]


def test_vegetation_ndvi_high_and_seasonal(synth_root: Path) -> None:
    forest = [((x[7] - x[3]) / (x[7] + x[3]))[m] for x, m, _ in
              _clear_pixels(synth_root, LandCover.FOREST)]
    assert len(forest) >= 5
    assert np.percentile(np.concatenate(forest), 2) > 0.5
    crop = {d: np.median(((x[7] - x[3]) / (x[7] + x[3]))[m]) for x, m, d in
            _clear_pixels(synth_root, LandCover.CROPLAND)}
    assert max(crop.values()) > 0.6 and max(crop.values()) - min(crop.values()) > 0.15


def test_water_dark_in_nir_and_swir(synth_root: Path) -> None:
    water = [x[:, m] for x, m, _ in _clear_pixels(synth_root, LandCover.WATER)]
    assert len(water) >= 3
    px = np.concatenate(water, axis=1)
    assert np.percentile(px[7], 99) < 0.05  # B08
    assert np.percentile(px[11], 99) < 0.05  # B11
    assert np.median(px[2]) > np.median(px[7])  # green above NIR


def test_sar_backscatter_ordered_by_class(synth_root: Path) -> None:
    vv: dict[LandCover, list[np.ndarray]] = {c: [] for c in LandCover}
    for roi in ROIS4:
        for patch in PATCHES:
            tr = load_truth(synth_root, roi, patch)
            for t in (0, 15):
                db = _s1(synth_root, roi, patch, t)
                for c in LandCover:
                    vv[c].append(db[0][binary_erosion(tr.landcover == c)])
    med = {c: np.median(np.concatenate(v)) for c, v in vv.items() if sum(map(len, v)) > 50}
    # Multiplicative speckle: over calm homogeneous water the linear intensity of one date
    # has a coefficient of variation near 1/sqrt(ENL) (about 0.5 for IW GRD).
    cv = [np.std(10 ** (w / 10)) / np.mean(10 ** (w / 10)) for w in vv[LandCover.WATER]
          if w.size > 100]
    assert cv and 0.3 < np.median(cv) < 0.7
    assert med[LandCover.WATER] < med[LandCover.FOREST] < med[LandCover.URBAN]
    assert med[LandCover.WATER] < med[LandCover.CROPLAND] < med[LandCover.URBAN]


def test_sar_changes_with_the_season(synth_root: Path) -> None:
    """Cropland VH follows crop growth and soil moisture over the year."""
    best = max(((r, p) for r in ROIS4 for p in PATCHES), key=lambda rp: (
        load_truth(synth_root, *rp).landcover == LandCover.CROPLAND).sum())
    tr = load_truth(synth_root, *best)
    crop = binary_erosion(tr.landcover == LandCover.CROPLAND)
    assert crop.sum() > 100
    vh = np.array([np.median(_s1(synth_root, *best, t)[1][crop]) for t in range(N_DATES)])
    assert vh.max() - vh.min() > 2.0  # dB over the year, well above the speckle of a median


# ----------------------------------------------------------------------------- bad input, CLI
@pytest.mark.parametrize(("kwargs", "words"), [
    ({"rois": 0}, ["rois", "0", "1 to 53"]),
    ({"rois": 54}, ["rois", "54"]),
    ({"rois": ["ROIs9999/1"]}, ["rois", "ROIs9999/1", "official"]),
    ({"rois": ["ROIs1868/119", "ROIs1868/119"]}, ["rois", "distinct"]),
    ({"rois": True}, ["rois", "True"]),
    ({"patches": 0}, ["patches", "0", ">= 1"]),
    ({"size": 24}, ["size", "24", ">= 32"]),
    ({"size": (101, 31)}, ["size", "(101, 31)", "(height, width)"]),
    ({"size": (40, 40, 40)}, ["size", "(40, 40, 40)", "(height, width)"]),
    ({"size": "101x100"}, ["size", "'101x100'", "(height, width)"]),
    ({"seed": -1}, ["seed", "-1"]),
    ({"workers": 0}, ["workers", "0", ">= 1"]),
])
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        synthesize(tmp_path / "x", **{"size": 32, **kwargs})
    for w in words:
        assert w in str(info.value)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("size", "shape"), [((37, 50), (37, 50)), ((101, 100), (101, 100)),
                                             (33, (33, 33))])
def test_any_size_and_non_square(tmp_path: Path, size, shape) -> None:
    """Any sides >= 32 (odd, non-square): every GeoTIFF and the ground truth have (H, W)
    = ``shape``, and the pixels are the top-left crop of the square tree of the grid side
    (so a 64 x 64 tree is unchanged from square-only versions)."""
    synthesize(tmp_path / "a", rois=1, patches=1, size=size, seed=3)
    side = -(-max(shape) // 8) * 8
    synthesize(tmp_path / "sq", rois=1, patches=1, size=side, seed=3)
    files = sorted((tmp_path / "a").glob("ROIs*/*/S*/*/*.tif"))
    assert len(files) == 2 * N_DATES
    for f in files[::7]:
        with rasterio.open(f) as a, rasterio.open(tmp_path / "sq" / f.relative_to(
                tmp_path / "a")) as sq:
            assert (a.height, a.width) == shape
            np.testing.assert_array_equal(a.read(), sq.read()[:, :shape[0], :shape[1]])
            assert a.transform == sq.transform
    truth = load_truth(tmp_path / "a", ROIS4[0], 0)
    assert truth.classes.shape == (N_DATES, *shape)


def test_cli_non_square_size(tmp_path: Path, capsys) -> None:
    assert main(["synth", str(tmp_path / "n"), "--rois", "1", "--patches", "1", "--size",
                 "37x50", "--quiet"]) == 0
    assert "37x50 px" in capsys.readouterr().out
    with rasterio.open(next((tmp_path / "n").glob("ROIs*/*/S2/*/*.tif"))) as src:
        assert (src.height, src.width) == (37, 50)


def test_cli_writes_summary_and_refuses_foreign_dirs(tmp_path: Path, capsys) -> None:
    root = tmp_path / "s"
    assert main(["synth", str(root), "--rois", "1", "--patches", "1", "--size", "32",
                 "--quiet"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and "1 ROIs" in out and "_truth" in out and "60" in out
    # Rerunning into a previous output replaces it (the old ROI folder goes away).
    assert main(["synth", str(root), "--rois", "ROIs1970/139", "--patches", "1",
                 "--size", "32", "--quiet"]) == 0
    assert not (root / ROIS4[0].split("/")[0]).exists()
    assert (root / "ROIs1970" / "139").is_dir()
    capsys.readouterr()
    assert main(["synth", str(tmp_path / "t"), "--size", "20"]) == 2
    err = capsys.readouterr().err
    assert "--size" in err and "20" in err and ">= 32" in err
    for bad in ("101x", "101x100x3", "axb", "101x20"):
        assert main(["synth", str(tmp_path / "t"), "--size", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"--size: got '{bad}'" in err and "HEIGHTxWIDTH" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["synth", str(foreign), "--size", "32", "--rois", "1", "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["synth", str(foreign), "--size", "32", "--rois", "1", "--patches", "1",
                 "--quiet", "--force"]) == 0
    assert (foreign / "notes.txt").read_text() == "mine"
