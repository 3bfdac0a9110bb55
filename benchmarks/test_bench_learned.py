"""Seq2point and STGAN cost: inference throughput (samples/s), one training step (seconds) and
peak memory, at 256 x 256 (the real patch size).

Run: ``python -m pytest benchmarks/test_bench_learned.py --benchmark-enable``. Inputs are
256 x 256, batch 4, L = 3 (random tensors: the cost does not depend on content). Figures go to
``benchmark.extra_info``: ``samples_per_s`` / ``step_s``, ``megapixels_per_s`` (comparable
across image sizes), ``params``, ``peak_mem_mib`` (see ``benchutil.peak_memory``) and
``x_mosaicing``, the time of the same batch relative to the mosaicing baseline measured in the
same run. Times are the best of the rounds (2 on a CPU, 5 on CUDA) that did not also measure
peak memory.

The ``tiny`` presets always run. The ``full`` presets (the papers' networks) run on CUDA at
256 x 256, batch 4, under autocast; on a CPU they are heavy (the full Seq2point network needs
about 15 TFLOP per forward pass of a 256 x 256 x 4 batch) and run only with
``CRBENCH_BENCH_FULL=1``, at 256 x 256, batch 1, one round. A smoke run (timing off) uses
64 x 64, batch 1, tiny presets only.
"""

from __future__ import annotations

import time

import pytest
import torch
from benchutil import CPU, DEVICE, FULL, FULL_ENV, Peak, measured, sync

from crbench.api import Batch, Inputs, SampleMeta
from crbench.training import StepContext
from crbench_methods.mosaicing import mosaic
from crbench_methods.seq2point import Seq2Point
from crbench_methods.stgan import STGAN

METHODS: dict[str, type] = {"seq2point": Seq2Point, "stgan": STGAN}


def case(preset: str, enabled: bool) -> tuple[int, int, int]:
    """(image side, batch, rounds) of one benchmark case."""
    if not enabled:
        return 64, 1, 1
    if preset == "tiny":
        return 256, 4, 2 if CPU else 5
    return (256, 1, 1) if CPU else (256, 4, 5)


def _batch(b: int, side: int, L: int = 3) -> Batch:
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(b, L, side, side, generator=g) > 0.5).float()
    inputs = Inputs(s2=torch.rand(b, L, 13, side, side, generator=g),
                    s1=torch.rand(b, L, 2, side, side, generator=g), masks=masks,
                    coverage=masks.mean(dim=(-2, -1)), days=torch.zeros(b, L, dtype=torch.long))
    meta = [SampleMeta("bench", 0, list(range(L)), L, [0.5] * L, 0.0, True)] * b
    return Batch(inputs=inputs, target=torch.rand(b, 13, side, side, generator=g), meta=meta)


def _mosaic_seconds(inputs: Inputs) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        mosaic(inputs.s2, inputs.masks)
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _skip_heavy(preset: str, enabled: bool) -> None:
    if preset == "full" and not enabled:
        pytest.skip("full preset only with --benchmark-enable (heavy)")
    if preset == "full" and CPU and not FULL:
        pytest.skip(f"full preset on a CPU: minutes per round; {FULL_ENV}=1 runs it")


def _network(model: Seq2Point | STGAN) -> torch.nn.Module:
    return model.net if isinstance(model, Seq2Point) else model.generator


def _figures(model, preset: str, side: int, b: int, best: float, peaks: list[Peak],
             inputs: Inputs) -> dict[str, object]:
    return {"device": str(DEVICE), "method": model.name, "preset": preset, "image_side": side,
            "batch": b, "megapixels_per_s": b * side * side / best / 1e6,
            "x_mosaicing": best / _mosaic_seconds(inputs),
            "params": sum(p.numel() for p in _network(model).parameters()),
            **peaks[0].info()}


@pytest.mark.parametrize("preset", ["tiny", "full"])
@pytest.mark.parametrize("method", list(METHODS))
def test_bench_inference(benchmark, enabled: bool, method: str, preset: str) -> None:
    _skip_heavy(preset, enabled)
    side, b, rounds = case(preset, enabled)
    torch.manual_seed(0)
    model = METHODS[method](3, preset).to(DEVICE)
    inputs = _batch(b, side).inputs.to(DEVICE)
    out = model.predict(inputs)  # warm-up (and lazy build)
    assert tuple(out.shape) == (b, 13, side, side) and torch.isfinite(out).all()
    times: list[float] = []
    peaks: list[Peak] = []
    benchmark.pedantic(measured(lambda: model.predict(inputs), times, peaks), rounds=rounds,
                       iterations=1, warmup_rounds=0)
    if enabled:
        best = min(times[1:] or times)  # the first round also measured peak memory
        benchmark.extra_info.update({"samples_per_s": b / best,
                                     **_figures(model, preset, side, b, best, peaks, inputs)})


@pytest.mark.parametrize("preset", ["tiny", "full"])
@pytest.mark.parametrize("method", list(METHODS))
def test_bench_train_step(benchmark, enabled: bool, method: str, preset: str) -> None:
    _skip_heavy(preset, enabled)
    side, b, rounds = case(preset, enabled)
    torch.manual_seed(0)
    model = METHODS[method](3, preset, val_samples=0)
    batch = _batch(b, side)
    parts = model.training_parts(rounds + 1, DEVICE)
    ctx = StepContext(DEVICE, parts.optimizers, rounds + 1)
    losses: list[dict[str, float]] = []

    def one_step() -> None:  # what the training loop does per step
        losses.append(parts.step_fn(batch, ctx))
        for sched in parts.schedulers.values():
            sched.step()
        ctx.step += 1

    times: list[float] = []
    peaks: list[Peak] = []
    # the first step is the warm-up (allocations, optimizer state); its peak memory counts
    benchmark.pedantic(measured(one_step, times, peaks), rounds=rounds, iterations=1,
                       warmup_rounds=int(enabled))
    assert losses and all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in losses)
    if enabled:
        best = min(times[1:])
        benchmark.extra_info.update({"step_s": best, **_figures(
            model, preset, side, b, best, peaks, batch.inputs.to(DEVICE))})
