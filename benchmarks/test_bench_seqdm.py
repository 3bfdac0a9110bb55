"""SeqDM cost: sampling throughput (images x steps / s) and the time of one training iteration
(Algorithm 2: the Eq. 27 and Eq. 28 optimiser steps) for the tiny and the full configuration.

Run: ``python -m pytest benchmarks/test_bench_seqdm.py --benchmark-enable``. Numbers go to
``benchmark.extra_info``; ``sampling_overhead_vs_network`` is the per-step sampling time divided
by one bare network forward pass measured in the same run (the cost of SeqTIS fusion and the
reverse-step arithmetic). On CPU the full 256 x 256 model is heavy: batch 1, one round. On a
CUDA device the full configuration also runs with batch 8 under autocast.
"""

from __future__ import annotations

import time

import pytest
import torch
from crbench_methods.seqdm import SeqDM
from crbench_methods.seqdm.train import TrainBatch, Trainer

from crbench.api import Inputs

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# preset -> (image side, batch, sampling steps, rounds)
CASES = {"tiny": (64, 2, 10, 3), "full": (256, 8 if DEVICE.type == "cuda" else 1,
                                         10 if DEVICE.type == "cuda" else 2, 1)}


def _inputs(b: int, side: int, L: int = 3) -> Inputs:
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(b, L, side, side, generator=g) > 0.5).float()
    return Inputs(s2=torch.rand(b, L, 13, side, side, generator=g),
                  s1=torch.rand(b, L, 2, side, side, generator=g), masks=masks,
                  coverage=masks.mean(dim=(-2, -1)), days=torch.zeros(b, L, dtype=torch.long))


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _forward_seconds(m: SeqDM, b: int, side: int) -> float:
    x = torch.randn(b, 13, side, side, device=DEVICE)
    a = torch.randn(b, 2, side, side, device=DEVICE)
    t = torch.full((b,), 500, device=DEVICE)
    with torch.no_grad():
        m._net_fn(x, a, t)  # warm-up
        _sync()
        t0 = time.perf_counter()
        m._net_fn(x, a, t)
        _sync()
    return time.perf_counter() - t0


@pytest.mark.parametrize("preset", list(CASES))
def test_bench_sampling(benchmark, preset: str) -> None:
    side, b, steps, rounds = CASES[preset]
    m = SeqDM(preset=preset, sample_steps=steps, progress=False).to(DEVICE)
    inputs = _inputs(b, side).to(DEVICE)
    times: list[float] = []

    def run() -> None:
        t0 = time.perf_counter()
        m.predict(inputs)
        _sync()
        times.append(time.perf_counter() - t0)

    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    best = min(times)
    per_step = best / steps
    benchmark.extra_info.update({
        "device": str(DEVICE), "preset": preset, "image_side": side, "batch": b,
        "steps": steps, "images_x_steps_per_s": b * steps / best,
        "seconds_per_step": per_step,
        "sampling_overhead_vs_network": per_step / _forward_seconds(m, b, side),
        "params": sum(p.numel() for p in m.net.parameters())})


@pytest.mark.parametrize("preset", list(CASES))
def test_bench_train_iteration(benchmark, preset: str) -> None:
    side, b, _, rounds = CASES[preset]
    m = SeqDM(preset=preset)
    trainer = Trainer(m.net, m.diffusion, m.config, DEVICE, seed=0)
    g = torch.Generator().manual_seed(0)
    s1 = torch.rand(b, 3, 2, side, side, generator=g) * 2 - 1
    batch = TrainBatch(x0=torch.rand(b, 13, side, side, generator=g) * 2 - 1, a0=s1[:, 0],
                       s2=torch.rand(b, 3, 13, side, side, generator=g) * 2 - 1, s1=s1,
                       clear=(torch.rand(b, 3, 1, side, side, generator=g) > 0.5).float())
    batch = TrainBatch(**{k: v.to(DEVICE) for k, v in vars(batch).items()})
    times: list[float] = []

    def run() -> None:
        t0 = time.perf_counter()
        trainer.iterate(batch)
        _sync()
        times.append(time.perf_counter() - t0)

    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=int(preset == "tiny"))
    benchmark.extra_info.update({
        "device": str(DEVICE), "preset": preset, "image_side": side, "batch": b,
        "seconds_per_iteration": min(times), "optimizer_steps_per_iteration": 2,
        "samples_per_s": b / min(times)})
