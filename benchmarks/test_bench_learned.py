"""Seq2point and STGAN cost: one training step (seconds) and inference throughput (samples/s).

Run: ``python -m pytest benchmarks/test_bench_learned.py --benchmark-enable``. Inputs are
256 x 256, batch 4, L = 3 (random tensors: the cost does not depend on content). Figures go to
``benchmark.extra_info``: ``step_s`` / ``samples_per_s``, ``megapixels_per_s`` (comparable
across image sizes), ``params``, and ``x_mosaicing``, the time of the same batch relative to the
mosaicing baseline measured in the same run.

The full Seq2point network (256 channels, 16 + 5 residual blocks at full resolution) needs about
15 TFLOP per forward pass of a 256 x 256 x 4 batch: on a CPU it is measured at 64 x 64, batch 1,
one round, unless ``CRBENCH_BENCH_FULL=1`` asks for the 256 x 256 batch-4 case (minutes per
round). On CUDA every case runs at 256 x 256, batch 4, under autocast.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
import torch

from crbench.api import Batch, Inputs, SampleMeta
from crbench.training import StepContext
from crbench_methods.mosaicing import mosaic
from crbench_methods.seq2point import Seq2Point
from crbench_methods.stgan import STGAN

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CPU = DEVICE.type == "cpu"
FULL_ON_CPU = os.environ.get("CRBENCH_BENCH_FULL") == "1"
METHODS: dict[str, type] = {"seq2point": Seq2Point, "stgan": STGAN}


def case(method: str, preset: str) -> tuple[int, int, int]:
    """(image side, batch, rounds) of one benchmark case."""
    if preset == "tiny":
        return 256, 4, 3
    if CPU and method == "seq2point" and not FULL_ON_CPU:
        return 64, 1, 1
    return 256, 4, (1 if CPU else 5)


def _batch(b: int, side: int, L: int = 3) -> Batch:
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(b, L, side, side, generator=g) > 0.5).float()
    inputs = Inputs(s2=torch.rand(b, L, 13, side, side, generator=g),
                    s1=torch.rand(b, L, 2, side, side, generator=g), masks=masks,
                    coverage=masks.mean(dim=(-2, -1)), days=torch.zeros(b, L, dtype=torch.long))
    meta = [SampleMeta("bench", 0, list(range(L)), L, [0.5] * L, 0.0, True)] * b
    return Batch(inputs=inputs, target=torch.rand(b, 13, side, side, generator=g), meta=meta)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], times: list[float]) -> Callable[[], None]:
    def run() -> None:
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return run


def _mosaic_seconds(inputs: Inputs) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        mosaic(inputs.s2, inputs.masks)
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _skip_if_disabled(benchmark, preset: str) -> None:
    if preset == "full" and benchmark.disabled:
        pytest.skip("full preset only with --benchmark-enable (heavy)")


@pytest.mark.parametrize("preset", ["tiny", "full"])
@pytest.mark.parametrize("method", list(METHODS))
def test_bench_inference(benchmark, method: str, preset: str) -> None:
    _skip_if_disabled(benchmark, preset)
    side, b, rounds = case(method, preset)
    torch.manual_seed(0)
    model = METHODS[method](3, preset).to(DEVICE)
    inputs = _batch(b, side).inputs.to(DEVICE)
    model.predict(inputs)  # warm-up (and lazy build)
    times: list[float] = []
    benchmark.pedantic(_timed(lambda: model.predict(inputs), times), rounds=rounds,
                       iterations=1, warmup_rounds=0)
    best = min(times)
    benchmark.extra_info.update({
        "device": str(DEVICE), "method": method, "preset": preset, "image_side": side,
        "batch": b, "samples_per_s": b / best, "megapixels_per_s": b * side * side / best / 1e6,
        "x_mosaicing": best / _mosaic_seconds(inputs),
        "params": sum(p.numel() for p in _network(model).parameters())})


@pytest.mark.parametrize("preset", ["tiny", "full"])
@pytest.mark.parametrize("method", list(METHODS))
def test_bench_train_step(benchmark, method: str, preset: str) -> None:
    _skip_if_disabled(benchmark, preset)
    side, b, rounds = case(method, preset)
    torch.manual_seed(0)
    model = METHODS[method](3, preset, val_samples=0)
    batch = _batch(b, side)
    parts = model.training_parts(rounds + 1, DEVICE)
    ctx = StepContext(DEVICE, parts.optimizers, rounds + 1)

    def one_step() -> None:  # what the training loop does per step
        parts.step_fn(batch, ctx)
        for sched in parts.schedulers.values():
            sched.step()
        ctx.step += 1

    one_step()  # warm-up (allocations, autotuning)
    times: list[float] = []
    benchmark.pedantic(_timed(one_step, times), rounds=rounds, iterations=1, warmup_rounds=0)
    best = min(times)
    benchmark.extra_info.update({
        "device": str(DEVICE), "method": method, "preset": preset, "image_side": side,
        "batch": b, "step_s": best, "megapixels_per_s": b * side * side / best / 1e6,
        "x_mosaicing": best / _mosaic_seconds(batch.inputs.to(DEVICE)),
        "params": sum(p.numel() for p in _network(model).parameters())})


def _network(model: Seq2Point | STGAN) -> torch.nn.Module:
    return model.net if isinstance(model, Seq2Point) else model.generator
