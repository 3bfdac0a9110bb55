"""Cloud-mask cache benchmarks: precompute throughput (1 vs 2 workers) and warm-cache lookups.

Run: ``python -m pytest benchmarks/test_bench_masks.py --benchmark-enable``. Ratios measured
side by side in the same run go to ``benchmark.extra_info``. The tree is the shared
``bench_tree`` (conftest: 60 S2 images, 64 x 64) with caches of their own; a smoke run (timing
off) uses 2 images of each of its 2 patches.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from crbench.data.masks import MaskCache


@pytest.fixture
def s2_tree(bench_tree: Path, enabled: bool) -> tuple[Path, list[Path]]:
    """(root, S2 images): all 60 in a timed run, 2 per patch in a smoke run."""
    paths = sorted(bench_tree.glob("ROIs*/*/S2/*/*.tif"))
    if not enabled:
        paths = [p for p in paths if p.parent.name in ("0", "1")]
        assert len(paths) == 4
    return bench_tree, paths


def _cold(root: Path, cache_dir: Path, paths: list[Path], workers: int) -> float:
    """Seconds to precompute every mask into an empty cache."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    stats = MaskCache(root, cache_dir=cache_dir).precompute(paths, workers=workers,
                                                            progress=False)
    assert stats.computed == len(paths) and not stats.failed
    return time.perf_counter() - t0


def test_bench_precompute_workers(benchmark, s2_tree: tuple[Path, list[Path]],
                                  tmp_path: Path) -> None:
    """Images/s with 2 spawned workers (benchmarked) against 1 worker (timed beside it)."""
    root, paths = s2_tree
    cache_dir = tmp_path / "cache"
    one = _cold(root, cache_dir, paths, workers=1)
    rounds: list[float] = []

    def run() -> None:
        rounds.append(_cold(root, cache_dir, paths, workers=2))

    benchmark.pedantic(run, rounds=2 if benchmark.enabled else 1, iterations=1)
    if benchmark.disabled:
        return
    two = min(rounds)
    benchmark.extra_info.update({
        "images": len(paths),
        "images_per_s_1_worker": len(paths) / one,
        "images_per_s_2_workers": len(paths) / two,
        "speedup_2_vs_1": one / two,
    })


def test_bench_coverage_warm_vs_compute(benchmark, s2_tree: tuple[Path, list[Path]],
                                        tmp_path: Path) -> None:
    """Coverage of every image from a warm on-disk cache (new MaskCache each round, so it
    reads the patch files) against computing the masks (timed beside it)."""
    root, paths = s2_tree
    cache_dir = tmp_path / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cold = MaskCache(root, cache_dir=cache_dir)
    t0 = time.perf_counter()
    expected = [cold.coverage(p) for p in paths]
    compute_s = time.perf_counter() - t0
    assert cold.misses == len(paths)

    def warm() -> list[float]:
        cache = MaskCache(root, cache_dir=cache_dir)
        out = [cache.coverage(p) for p in paths]
        assert cache.misses == 0
        return out

    assert benchmark(warm) == expected
    if benchmark.disabled:
        return
    warm_s = benchmark.stats.stats.min
    benchmark.extra_info.update({
        "images": len(paths),
        "compute_s": compute_s,
        "warm_lookup_s": warm_s,
        "speedup_warm_vs_compute": compute_s / warm_s,
    })
