"""Memory stays bounded regardless of split size: the peak RSS of indexing a test split and
one pass of the loader over it does not grow when the split grows 4x (200 -> 800 patches).

The trees are real GeoTIFF trees in the dataset layout: 8 ``crbench.synth`` patches (the
smallest size the generator allows) hard-linked under the names of 8 test ROIs x 100 patches,
so no 48,000 images have to be generated; the 200-patch tree links 2 of those ROI directories.
Their cloud masks come from the generator's ground truth, stored through ``MaskCache.store``
(instead of running s2cloudless on 24,000 images) in one cache both trees read (same relative
paths, same files); the measured process must compute none. L = 1 keeps the pass cheap (what
a sample holds does not depend on the split size for any L). Each measurement runs in a fresh
interpreter (``ru_maxrss`` is a process-lifetime peak)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crbench.constants import N_DATES, rois_for
from crbench.data.layout import file_name, parse_name
from crbench.data.masks import MaskCache
from crbench.synth import load_truth, synthesize

PATCHES_PER_ROI = 100
SOURCES = 8  # distinct synthetic patches the trees are made of
TEST_ROIS = rois_for("test")

MEASURE = r"""
import json, resource, sys
from pathlib import Path
import torch
from torch.utils.data import DataLoader
from crbench.api import collate
from crbench.data.dataset import SEN12MSCRTS
from crbench.data.index import build_index
from crbench.data.masks import MaskCache

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

root, cache_dir = Path(sys.argv[1]), Path(sys.argv[2])
torch.set_num_threads(1)
base = rss_mb()
cache = MaskCache(root, cache_dir)
frame = build_index(root, "test", 1, cache=cache)
ds = SEN12MSCRTS(root, split="test", L=1, sampler="fixed", index=frame, only_matching=False,
                 cache=cache)
n = 0
for batch in DataLoader(ds, batch_size=8, num_workers=0, collate_fn=collate):
    n += len(batch.meta)
print(json.dumps({"rows": len(frame), "samples": n, "computed": cache.misses,
                  "base_mb": base, "peak_mb": rss_mb()}))
"""


def _replicate(src: Path, src_roi: str, dst: Path, rois: tuple[str, ...]) -> dict[Path, Path]:
    """Hard-link the source patches as ``PATCHES_PER_ROI`` patches of each ROI in ``rois``;
    returns {new S2 path: source S2 path}."""
    s2_links: dict[Path, Path] = {}
    for mod in ("S1", "S2"):
        for t in range(N_DATES):
            sources = {}
            for f in (src / src_roi / mod / str(t)).iterdir():
                key = parse_name(f.name)
                assert key is not None
                sources[key.patch] = (f, key)
            for roi in rois:
                out_dir = dst / roi / mod / str(t)
                out_dir.mkdir(parents=True)
                for patch in range(PATCHES_PER_ROI):
                    f, key = sources[patch % SOURCES]
                    target = out_dir / file_name(key.mod, roi, t, key.day, patch)
                    os.link(f, target)
                    if mod == "S2":
                        s2_links[target] = f
    return s2_links


def _fill_masks(root: Path, s2_links: dict[Path, Path], src: Path, src_roi: str) -> Path:
    """Store the ground-truth masks of every linked S2 image; returns the cache directory."""
    truths = {p: load_truth(src, src_roi, p) for p in range(SOURCES)}
    masks = {}
    for path, source in s2_links.items():
        key = parse_name(source.name)
        assert key is not None
        masks[path] = truths[key.patch].cloud(key.t)
    cache = MaskCache(root)
    assert cache.store(masks) == len(masks)
    return cache.cache_dir


@pytest.fixture(scope="module")
def split_roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[int, Path], Path]:
    """({number of patches: root} for test splits of 200 and 800 patches, mask cache dir)."""
    base = tmp_path_factory.mktemp("mem")
    src, src_roi = base / "source", TEST_ROIS[0]
    synthesize(src, rois=[src_roi], patches=SOURCES, size=32, workers=2)
    large, small = base / "p800", base / "p200"
    cache_dir = _fill_masks(large, _replicate(src, src_roi, large, TEST_ROIS[:8]), src, src_roi)
    for roi in TEST_ROIS[:2]:
        (small / roi).parent.mkdir(parents=True, exist_ok=True)
        (small / roi).symlink_to(large / roi, target_is_directory=True)
    return {200: small, 800: large}, cache_dir


def _measure(root: Path, cache_dir: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(root), str(cache_dir)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_rss_flat_when_split_grows_4x(split_roots: tuple[dict[int, Path], Path]) -> None:
    roots, cache_dir = split_roots
    small, large = _measure(roots[200], cache_dir), _measure(roots[800], cache_dir)
    for n, res in ((200, small), (800, large)):
        assert res["rows"] == res["samples"] == n  # indexed and loaded every patch
        assert res["computed"] == 0  # masks came from the cache, no s2cloudless ran
    growth = large["peak_mb"] - small["peak_mb"]
    print(f"peak RSS: 200 patches {small['peak_mb']:.1f} MB (after imports "
          f"{small['base_mb']:.1f}), 800 patches {large['peak_mb']:.1f} MB (after imports "
          f"{large['base_mb']:.1f}); growth {growth:.1f} MB")
    assert large["peak_mb"] < 1.10 * small["peak_mb"] + 8.0, (small, large)
