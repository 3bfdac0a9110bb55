"""crbench's s2cloudless masks on real clouds against Sentinel Hub's (issue 13, item 4).

The eo-learn tree (five real S2 L1C dates of one place in Slovenia, 2015, 101 x 100 px, no
S1) ships Sentinel Hub's own s2cloudless layers per date: ``masks/<k>/CLM_<date>.npy`` (cloud
mask 0/1) and ``CLP_<date>.npy`` (cloud probability, float32 in [0, 1]; the data's README says
0-255, the files hold [0, 1]), both (101, 100) like the GeoTIFF, whose date k they belong to.
Read in place (the mask cache goes to a temporary ``CRBENCH_CACHE_DIR``); skipped only when
the shared data is absent.

Measured (crbench mask cache vs CLM, per date k = 0..4): coverage 0, 0.9985, 1, 0, 0 vs
0, 1, 1, 0, 0; pixel accuracy 1, 0.9985, 1, 1, 1; IoU of the cloud class - (no cloud in
either), 0.9985, 1, -, -. s2cloudless probabilities (crbench's detector settings) against CLP:
Pearson r 0.50, 0.80, 0.79, 0.65, 0.60 as stored, at most 0.24 for any flip of CLP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers import REALDATA

from crbench.constants import S2CLOUDLESS_KWARGS
from crbench.data.io import scale_s2
from crbench.data.masks import CACHE_ENV, MaskCache

EOLEARN = REALDATA / "eolearn-slovenia-2015"
pytestmark = pytest.mark.skipif(not (EOLEARN / "tree").is_dir(),
                                reason=f"shared real data {EOLEARN} is absent")

# date k -> (crbench coverage, pixel accuracy, IoU or None where neither mask has cloud)
MEASURED = {0: (0.0, 1.0, None), 1: (0.9985, 0.9985, 0.9985), 2: (1.0, 1.0, 1.0),
            3: (0.0, 1.0, None), 4: (0.0, 1.0, None)}


def _s2(k: int) -> Path:
    return next((EOLEARN / "tree").glob(f"ROIs*/*/S2/{k}/*.tif"))


def _layer(kind: str, k: int) -> np.ndarray:
    return np.load(next((EOLEARN / "masks" / str(k)).glob(f"{kind}_*.npy")))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> MaskCache:
    """crbench's mask cache of the tree, computed once into a temporary cache dir."""
    tmp = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(tmp))
        masks = MaskCache(EOLEARN / "tree")
    assert masks.cache_dir.is_relative_to(tmp)  # the shared data is never written
    masks.precompute([_s2(k) for k in range(5)])
    return masks


@pytest.mark.parametrize("k", range(5), ids=[
    f"date{k}-cov{c}-acc{a}-iou{i if i is not None else 'none'}"
    for k, (c, a, i) in MEASURED.items()])
def test_coverage_and_pixels_agree_with_sentinel_hub(cache: MaskCache, k: int) -> None:
    clm = _layer("CLM", k)
    with rasterio.open(_s2(k)) as src:
        assert clm.shape == (src.height, src.width) == (101, 100)
    ours = cache.mask(_s2(k))
    assert ours.shape == clm.shape
    assert abs(cache.coverage(_s2(k)) - float(clm.mean())) <= 0.02
    theirs = clm.astype(bool)
    accuracy = float((ours == theirs).mean())
    union = int((ours | theirs).sum())
    iou = float((ours & theirs).sum()) / union if union else None
    want_cov, want_acc, want_iou = MEASURED[k]
    assert cache.coverage(_s2(k)) == pytest.approx(want_cov, abs=1e-4)
    assert accuracy == pytest.approx(want_acc, abs=1e-4)
    assert iou == (pytest.approx(want_iou, abs=1e-4) if want_iou is not None else None)


def test_masks_are_aligned_with_the_geotiff() -> None:
    """The .npy layers are in the GeoTIFF's row/column order: crbench's s2cloudless
    probability correlates with CLP as stored, and far less with any flip of it."""
    from s2cloudless import S2PixelCloudDetector

    detector = S2PixelCloudDetector(**S2CLOUDLESS_KWARGS)
    for k in range(5):
        with rasterio.open(_s2(k)) as src:
            img = np.moveaxis(scale_s2(src.read()), 0, -1)[None]
        prob = detector.get_cloud_probability_maps(img)[0].ravel()
        clp = _layer("CLP", k)
        r = {name: np.corrcoef(prob, v.ravel())[0, 1] for name, v in (
            ("as stored", clp), ("up-down", clp[::-1]), ("left-right", clp[:, ::-1]),
            ("both", clp[::-1, ::-1]))}
        assert r["as stored"] >= 0.45, (k, r)
        assert all(r["as stored"] > v + 0.2 for name, v in r.items() if name != "as stored"), r
