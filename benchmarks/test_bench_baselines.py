"""Least-cloudy and mosaicing baselines: inference samples/s and peak memory at 256 x 256.

Run: ``python -m pytest benchmarks/test_bench_baselines.py --benchmark-enable``. A batch of 4
samples of L = 3 dates, 256 x 256 (random tensors: the cost does not depend on content), as in
``test_bench_learned.py``, so the samples/s of every method compare directly. Figures go to
``benchmark.extra_info``: ``samples_per_s``, ``megapixels_per_s``, ``peak_mem_mib``.
"""

from __future__ import annotations

import pytest
import torch
from benchutil import DEVICE, peak_memory, sync

from crbench.api import Inputs
from crbench_methods.least_cloudy import LeastCloudy
from crbench_methods.mosaicing import Mosaicing

METHODS = {"least_cloudy": LeastCloudy, "mosaicing": Mosaicing}
B, L, SIDE = 4, 3, 256


def _inputs(b: int, side: int) -> Inputs:
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(b, L, side, side, generator=g) > 0.5).float()
    return Inputs(s2=torch.rand(b, L, 13, side, side, generator=g),
                  s1=torch.rand(b, L, 2, side, side, generator=g), masks=masks,
                  coverage=masks.mean(dim=(-2, -1)), days=torch.zeros(b, L, dtype=torch.long))


@pytest.mark.parametrize("method", list(METHODS))
def test_bench_baseline_inference(benchmark, enabled: bool, method: str) -> None:
    side = SIDE if enabled else 64
    model = METHODS[method]()
    inputs = _inputs(B, side).to(DEVICE)

    def run() -> torch.Tensor:
        out = model.predict(inputs)
        sync()
        return out

    out = benchmark.pedantic(run, rounds=20 if enabled else 1, iterations=1,
                             warmup_rounds=int(enabled))
    assert tuple(out.shape) == (B, 13, side, side)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    if enabled:  # peak memory in a call of its own, after the timed rounds
        best = benchmark.stats.stats.min
        benchmark.extra_info.update({
            "device": str(DEVICE), "method": method, "preset": "-", "image_side": side,
            "batch": B, "samples_per_s": B / best, "megapixels_per_s": B * side * side / best / 1e6,
            **peak_memory(run).info()})
