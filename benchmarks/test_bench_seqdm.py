"""SeqDM cost: sampling throughput (images x steps / s) at 256 x 256, the time of one training
iteration (Algorithm 2: the Eq. 27 and Eq. 28 optimiser steps), and peak memory.

Run: ``python -m pytest benchmarks/test_bench_seqdm.py --benchmark-enable``. Numbers go to
``benchmark.extra_info``: ``images_x_steps_per_s``, ``seconds_per_step``, ``samples_per_s``
(one image at the case's step count; the paper samples with 1000 steps, so a real image costs
``1000 * seconds_per_step / batch``), ``sampling_overhead_vs_network`` (sampling time over the
time spent inside the network during the same calls: the cost of the SeqTIS fusion and the
reverse-step arithmetic), ``peak_mem_mib`` (measured on the first round, see
``benchutil.peak_memory``).

Cases: ``tiny`` (the CPU/demo network) samples at 256 x 256; its training iteration runs at the
preset's 64 x 64 crops. ``full`` (the paper's ADM, 256 x 256) runs on CUDA always, on a CPU
only with ``CRBENCH_BENCH_FULL=1`` (minutes per step). On a CPU the tiny network's attention at
128 x 128 tokens costs about 20 s per step at 256 x 256, so a timed CPU run samples one image
for two steps, one round; on CUDA 8 images, 10 steps, 3 rounds under autocast. A smoke run
(timing off) uses 64 x 64 and one step.
"""

from __future__ import annotations

import time

import pytest
import torch
from benchutil import CPU, DEVICE, FULL, FULL_ENV, Peak, measured, sync

from crbench.api import Inputs
from crbench_methods.seqdm import SeqDM
from crbench_methods.seqdm.train import TrainBatch, Trainer

# preset -> (image side, batch, sampling steps, rounds) of a timed sampling case
SAMPLING = {"tiny": (256, 1, 2, 1) if CPU else (256, 8, 10, 3),
            "full": (256, 1, 2, 1) if CPU else (256, 8, 10, 1)}
# preset -> (image side, batch, rounds) of a timed training case
TRAINING = {"tiny": (64, 2, 3), "full": (256, 1, 1) if CPU else (256, 4, 3)}
SMOKE = (64, 1, 1, 1)


def _inputs(b: int, side: int, L: int = 3) -> Inputs:
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(b, L, side, side, generator=g) > 0.5).float()
    return Inputs(s2=torch.rand(b, L, 13, side, side, generator=g),
                  s1=torch.rand(b, L, 2, side, side, generator=g), masks=masks,
                  coverage=masks.mean(dim=(-2, -1)), days=torch.zeros(b, L, dtype=torch.long))


def _clock_network(m: SeqDM, seconds: list[float]) -> None:
    """Make ``m`` add the time of every network evaluation to ``seconds[0]``."""
    net_fn = m._net_fn

    def timed_net(x: torch.Tensor, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sync()
        t0 = time.perf_counter()
        out = net_fn(x, a, t)
        sync()
        seconds[0] += time.perf_counter() - t0
        return out

    m._net_fn = timed_net  # instance attribute: SeqDM.sample calls self._net_fn


def _skip_heavy(preset: str, enabled: bool) -> None:
    if preset == "full" and CPU and not (FULL and enabled):
        pytest.skip(f"full SeqDM on a CPU: minutes per step; {FULL_ENV}=1 with "
                    "--benchmark-enable runs it")


@pytest.mark.parametrize("preset", ["tiny", "full"])
def test_bench_sampling(benchmark, enabled: bool, preset: str) -> None:
    _skip_heavy(preset, enabled)
    side, b, steps, rounds = SAMPLING[preset] if enabled else SMOKE
    m = SeqDM(preset=preset, sample_steps=steps, progress=False).to(DEVICE)
    inputs = _inputs(b, side).to(DEVICE)
    if not CPU:
        m.predict(inputs)  # warm-up (cuDNN autotuning, allocator)
    times: list[float] = []
    peaks: list[Peak] = []
    net_s = [0.0]
    _clock_network(m, net_s)
    benchmark.pedantic(measured(lambda: m.predict(inputs), times, peaks), rounds=rounds,
                       iterations=1, warmup_rounds=0)
    assert m.last_std is not None and tuple(m.last_std.shape) == (b, 13, side, side)
    if not enabled:
        return
    best = min(times)
    per_step = best / steps
    benchmark.extra_info.update({
        "device": str(DEVICE), "method": "seqdm", "preset": preset, "image_side": side,
        "batch": b, "steps": steps, "images_x_steps_per_s": b * steps / best,
        "seconds_per_step": per_step, "samples_per_s": b / best,
        "sampling_overhead_vs_network": sum(times) / net_s[0],
        "params": sum(p.numel() for p in m.net.parameters()), **peaks[0].info()})


@pytest.mark.parametrize("preset", ["tiny", "full"])
def test_bench_train_iteration(benchmark, enabled: bool, preset: str) -> None:
    _skip_heavy(preset, enabled)
    side, b, rounds = TRAINING[preset] if enabled else (64, 1, 1)
    m = SeqDM(preset=preset)
    trainer = Trainer(m.net, m.diffusion, m.config, DEVICE, seed=0)
    g = torch.Generator().manual_seed(0)
    s1 = torch.rand(b, 3, 2, side, side, generator=g) * 2 - 1
    batch = TrainBatch(x0=torch.rand(b, 13, side, side, generator=g) * 2 - 1, a0=s1[:, 0],
                       s2=torch.rand(b, 3, 13, side, side, generator=g) * 2 - 1, s1=s1,
                       clear=(torch.rand(b, 3, 1, side, side, generator=g) > 0.5).float())
    batch = TrainBatch(**{k: v.to(DEVICE) for k, v in vars(batch).items()})
    times: list[float] = []
    peaks: list[Peak] = []
    warmup = int(enabled and preset == "tiny")
    benchmark.pedantic(measured(lambda: trainer.iterate(batch), times, peaks), rounds=rounds,
                       iterations=1, warmup_rounds=warmup)
    if not enabled:
        return
    best = min(times[warmup:])  # the warm-up (first call) also measured peak memory
    benchmark.extra_info.update({
        "device": str(DEVICE), "method": "seqdm", "preset": preset, "image_side": side,
        "batch": b, "step_s": best, "optimizer_steps_per_iteration": 2,
        "samples_per_s": b / best, **peaks[0].info()})
