"""Measurements of scripts/gpu_check.py: the plan (sizes per mode), timing helpers, the
machine, the bf16 matrix-multiply peak, and the SeqDMs network (FLOPs, training iterations,
activations under fp16, sampling throughput).

Every ``measure_*`` function returns a JSON-able dict; numbers are plain floats or ints.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from crbench.api import Inputs
from crbench_methods.seqdm import SeqDM
from crbench_methods.seqdm.network import MmDMNet
from crbench_methods.seqdm.train import TrainBatch, Trainer

REPO = Path(__file__).resolve().parents[1]
AMP_DTYPES: dict[str, torch.dtype | None] = {"fp16": torch.float16, "bf16": torch.bfloat16,
                                              "fp32": None}


@dataclass(frozen=True)
class Plan:
    """Sizes of one check: ``smoke`` (tiny presets, seconds on a CPU) or the real one (the
    ``full`` presets at 256 px, sized for under 6 minutes on one H200)."""

    device: str
    smoke: bool
    side: int
    seqdm_preset: str
    learned_preset: str
    amp_modes: tuple[str, ...]
    train_batches: tuple[int, ...]
    train_warmup: int
    train_timed: int
    sample_batches: tuple[int, ...]
    sample_steps: int
    compile: bool
    matmul_n: int
    matmul_dtype: str
    learned_batch: int
    metrics_batch: int
    e2e_size: int
    e2e_patches: int
    e2e_steps: int

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


def make_plan(device: str, smoke: bool) -> Plan:
    """The sizes for ``device`` (``cuda``, ``cuda:1``, ``cpu``) and mode."""
    cuda = torch.device(device).type == "cuda"
    amp = ("fp16", "bf16") if cuda else ("fp32",)  # autocast is CUDA-only in crbench
    if smoke:
        return Plan(device=device, smoke=True, side=32, seqdm_preset="tiny",
                    learned_preset="tiny", amp_modes=amp, train_batches=(1, 2), train_warmup=1,
                    train_timed=1, sample_batches=(1, 2), sample_steps=3, compile=False,
                    matmul_n=256, matmul_dtype="bf16" if cuda else "fp32", learned_batch=1,
                    metrics_batch=2, e2e_size=32, e2e_patches=3, e2e_steps=2)
    return Plan(device=device, smoke=False, side=256, seqdm_preset="full",
                learned_preset="full", amp_modes=amp, train_batches=(1, 4, 8), train_warmup=3,
                train_timed=5, sample_batches=(1, 8, 32), sample_steps=20, compile=cuda,
                matmul_n=8192 if cuda else 2048, matmul_dtype="bf16" if cuda else "fp32",
                learned_batch=4, metrics_batch=16, e2e_size=64, e2e_patches=4, e2e_steps=10)


# ---- timing ------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, reps: int
          ) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """``torch.cuda.max_memory_allocated`` since :func:`reset_peak`, GiB (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def free_memory(device: torch.device) -> None:
    """Drop cached blocks between cases, so that each case's peak is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- the machine -------------------------------------------------------------------------
def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def measure_env(plan: Plan) -> dict[str, Any]:
    """Device name, versions, date and the plan."""
    from crbench.metrics import native

    dev = plan.torch_device
    info: dict[str, Any] = {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "python": sys.version.split()[0], "torch": torch.__version__,
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "git": _git_hash(),
        "metrics_native_kernel": native.available(), "plan": asdict(plan)}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(device_name=props.name, cuda=torch.version.cuda,
                    capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count,
                    memory_gib=props.total_memory / 2**30,
                    bf16_supported=torch.cuda.is_bf16_supported())
    else:
        info.update(device_name=platform.processor() or "cpu")
    return info


def measure_matmul_peak(plan: Plan) -> dict[str, Any]:
    """Dense matrix-multiply rate (n x n x n, 3 warm-ups, 10 timed products): the ceiling
    the achieved FLOP rates below are divided by."""
    dev, n = plan.torch_device, plan.matmul_n
    dtype = torch.bfloat16 if plan.matmul_dtype == "bf16" else torch.float32
    g = torch.Generator(dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    times = timed(lambda: a @ b, dev, warmup=3, reps=10)
    mean = sum(times) / len(times)
    return {"n": n, "dtype": plan.matmul_dtype, "seconds": mean,
            "peak_tflops": 2.0 * n**3 / mean / 1e12}


# ---- SeqDMs ------------------------------------------------------------------------------
def seqdm_config(plan: Plan) -> dict[str, Any]:
    """The SeqDMs preset's config (the network is built from it)."""
    return dict(SeqDM.presets[plan.seqdm_preset])


def measure_seqdm_flops(plan: Plan) -> dict[str, Any]:
    """FLOPs of one U-Net forward pass per image at ``plan.side`` and of one training
    iteration (Algorithm 2: both optimiser steps, forward and backward) per sample, counted by
    torch.utils.flop_counter on the meta device (shapes only, nothing computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg, s = seqdm_config(plan), plan.side
    with torch.device("meta"):
        net = MmDMNet(cfg)
        x, a = torch.zeros(1, 13, s, s), torch.zeros(1, 2, s, s)
        t = torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        out = net(x, a, t)
    forward = counter.get_total_flops()
    by_op = {str(k): v / 1e9 for k, v in counter.get_flop_counts().get("Global", {}).items()}
    with FlopCounterMode(display=False) as counter:
        net(x, a, t).float().square().mean().backward()
    train_step = counter.get_total_flops()  # forward + backward of one optimiser step
    params = sum(p.numel() for p in net.parameters())
    del out
    return {"preset": plan.seqdm_preset, "image_side": s, "params": params,
            "forward_flops_per_image": forward,
            "train_flops_per_sample": 2 * train_step,  # Eq. 27 and Eq. 28 steps
            "forward_gflop_by_op": by_op, "counted_on": "meta device (shapes only)"}


def train_batch(b: int, side: int, device: torch.device, L: int = 3) -> TrainBatch:
    """A seeded random batch in network units; about half of each date is cloudy."""
    g = torch.Generator().manual_seed(b)
    s1 = torch.rand(b, L, 2, side, side, generator=g) * 2 - 1
    clear = (torch.rand(b, L, 1, side // 8, side // 8, generator=g) > 0.5).float()
    clear = torch.nn.functional.interpolate(clear.flatten(0, 1), size=(side, side))
    batch = TrainBatch(x0=torch.rand(b, 13, side, side, generator=g) * 2 - 1, a0=s1[:, 0],
                       s2=torch.rand(b, L, 13, side, side, generator=g) * 2 - 1, s1=s1,
                       clear=clear.unflatten(0, (b, L)))
    return TrainBatch(**{k: v.to(device) for k, v in vars(batch).items()})


def _train_case(trainer: Trainer, plan: Plan, b: int, flops: dict[str, Any],
                peak_tflops: float | None) -> dict[str, Any]:
    dev = plan.torch_device
    batch = train_batch(b, plan.side, dev)
    recs: list[dict[str, float]] = []
    for _ in range(plan.train_warmup):
        recs.append(trainer.iterate(batch))
    reset_peak(dev)
    times = timed(lambda: recs.append(trainer.iterate(batch)), dev, 0, plan.train_timed)
    seconds = sum(times) / len(times)
    row: dict[str, Any] = {
        "batch": b, "seconds_per_iteration": seconds, "samples_per_s": b / seconds,
        "peak_mem_gib": peak_gib(dev),
        "losses_finite": all(math.isfinite(v) for r in recs for v in r.values()),
        "last_losses": recs[-1]}
    if trainer.scaler.is_enabled():
        row["grad_scale"] = float(trainer.scaler.get_scale())
    achieved = flops["train_flops_per_sample"] * b / seconds
    row["achieved_tflops"] = achieved / 1e12
    if peak_tflops:
        row["fraction_of_peak"] = achieved / (peak_tflops * 1e12)
    return row


def measure_seqdm_train(plan: Plan, flops: dict[str, Any], peak_tflops: float | None
                        ) -> dict[str, Any]:
    """Training iterations of Algorithm 2 (the Eq. 27 and Eq. 28 optimiser steps) per amp
    mode (fp16 autocast with a GradScaler, bf16 autocast; fp32 on CPU) and batch size."""
    dev = plan.torch_device
    method = SeqDM(preset=plan.seqdm_preset, progress=False)
    rows = []
    for mode in plan.amp_modes:
        trainer = Trainer(copy.deepcopy(method.net), method.diffusion, method.config, dev,
                          seed=0, amp_dtype=AMP_DTYPES[mode])
        for b in plan.train_batches:
            rows.append({"amp": mode, "grad_scaler": trainer.scaler.is_enabled(),
                         **_train_case(trainer, plan, b, flops, peak_tflops)})
        del trainer
        free_memory(dev)
    return {"preset": plan.seqdm_preset, "image_side": plan.side, "rows": rows}


@contextlib.contextmanager
def _activation_watch(net: torch.nn.Module) -> Iterator[dict[str, Any]]:
    """Largest finite magnitude and non-finite outputs over every module's output."""
    seen: dict[str, Any] = {"max_abs": 0.0, "nonfinite": []}

    def hook(mod: torch.nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            if not bool(torch.isfinite(out).all()):
                seen["nonfinite"].append(type(mod).__name__)
            seen["max_abs"] = max(seen["max_abs"], float(out.detach().abs().max()))

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def measure_seqdm_precision(plan: Plan) -> dict[str, Any]:
    """fp16 headroom of the network: under fp16 and bf16 autocast, the largest activation of
    any module (fp16 overflows at 65504) and the modules with non-finite outputs, at the
    first and last diffusion step (batch 2 at ``plan.side``); the zero-initialised output
    layers are randomised so that every path carries signal."""
    dev = plan.torch_device
    torch.manual_seed(0)
    net = MmDMNet(seqdm_config(plan)).to(dev).eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1 and not bool(p.any()):
                p.normal_(0.0, 0.02)
    s = plan.side
    x, a = torch.randn(2, 13, s, s, device=dev), torch.randn(2, 2, s, s, device=dev)
    t = torch.tensor([0, 999], device=dev)
    rows = {}
    with torch.no_grad():
        ref = net(x, a, t).float()
        for mode in ("fp16", "bf16"):
            with _activation_watch(net) as seen, torch.autocast(dev.type, AMP_DTYPES[mode]):
                out = net(x, a, t).float()
            rows[mode] = {"max_abs_activation": seen["max_abs"],
                          "nonfinite_modules": sorted(set(seen["nonfinite"])),
                          "max_rel_error_vs_fp32": float((out - ref).abs().max()
                                                         / ref.abs().max().clamp_min(1e-12))}
    del net
    free_memory(dev)
    note = ("" if dev.type == "cuda" else
            "CPU autocast, which crbench never uses: this exercises the check's own code")
    return {"fp16_max": 65504.0, "note": note, **rows}


def sample_inputs(b: int, side: int, L: int = 3) -> Inputs:
    """Seeded random inputs in [0, 1]; cloud masks in 8 x 8 blocks, about half cloudy."""
    g = torch.Generator().manual_seed(100 + b)
    masks = (torch.rand(b, L, side // 8, side // 8, generator=g) > 0.5).float()
    masks = masks.repeat_interleave(8, dim=-1).repeat_interleave(8, dim=-2)
    return Inputs(s2=torch.rand(b, L, 13, side, side, generator=g),
                  s1=torch.rand(b, L, 2, side, side, generator=g), masks=masks,
                  coverage=masks.mean(dim=(-2, -1)), days=torch.zeros(b, L, dtype=torch.long))


def _sampling_case(method: SeqDM, plan: Plan, b: int, variant: str, fwd_flops: float,
                   peak_tflops: float | None) -> dict[str, Any]:
    """Algorithm 1 through ``SeqDM.sample`` at batch ``b``: a warm-up call (2 steps; it also
    compiles), then one call of 1 step and one of ``plan.sample_steps``. Their difference
    gives the rate of the sampling loop (images x steps / s); the rest of a call is its fixed
    cost (the per-sample seeds hash every input pixel on the host, the first noise draw)."""
    dev, steps = plan.torch_device, plan.sample_steps
    inputs = sample_inputs(b, plan.side).to(dev)

    def call(n: int) -> float:
        return timed(lambda: method.sample(inputs, steps=n, samples=1, progress=False),
                     dev, 0, 1)[0]

    warmup_s = call(2)
    reset_peak(dev)
    one, full = call(1), call(steps)
    per_step = (full - one) / (steps - 1) if full > one else full / steps
    rate = b / per_step
    row: dict[str, Any] = {"variant": variant, "batch": b, "steps": steps, "seconds": full,
                           "images_x_steps_per_s": rate,
                           "call_overhead_s": max(full - steps * per_step, 0.0),
                           "images_x_steps_per_s_whole_call": b * steps / full,
                           "warmup_s": warmup_s, "peak_mem_gib": peak_gib(dev),
                           "achieved_tflops": rate * fwd_flops / 1e12}
    if peak_tflops:
        row["fraction_of_peak"] = rate * fwd_flops / (peak_tflops * 1e12)
    return row


def _compiled_case(method: SeqDM, plan: Plan, b: int, fwd_flops: float,
                   peak_tflops: float | None) -> dict[str, Any]:
    """The largest batch with the U-Net under torch.compile; a failure becomes a note."""
    unet = method.net.unet
    try:
        method.net.unet = torch.compile(unet)
        return _sampling_case(method, plan, b, "compile", fwd_flops, peak_tflops)
    except Exception as exc:  # compile back ends fail in many ways; the check goes on
        return {"variant": "compile", "batch": b,
                "skipped": f"torch.compile failed: {type(exc).__name__}: {exc}"[:500]}
    finally:
        method.net.unet = unet


def measure_seqdm_sampling(plan: Plan, fwd_flops: float, peak_tflops: float | None
                           ) -> dict[str, Any]:
    """Sampling throughput per batch size (eager), and at the largest batch with the network
    in channels_last memory format."""
    dev = plan.torch_device
    method = SeqDM(preset=plan.seqdm_preset, progress=False).to(dev)
    rows = [_sampling_case(method, plan, b, "eager", fwd_flops, peak_tflops)
            for b in plan.sample_batches]
    method.net.to(memory_format=torch.channels_last)
    rows.append(_sampling_case(method, plan, max(plan.sample_batches), "channels_last",
                               fwd_flops, peak_tflops))
    del method
    free_memory(dev)
    return {"preset": plan.seqdm_preset, "image_side": plan.side, "rows": rows}


def measure_seqdm_compile(plan: Plan, fwd_flops: float, peak_tflops: float | None
                          ) -> dict[str, Any]:
    """Sampling throughput at the largest batch with the U-Net under torch.compile (CUDA,
    not in a smoke run); skipped with the reason otherwise or when compiling fails."""
    dev, big = plan.torch_device, max(plan.sample_batches)
    if not plan.compile:
        why = "--smoke" if plan.smoke else "CUDA only"
        return {"rows": [{"variant": "compile", "batch": big,
                          "skipped": f"not attempted ({why})"}]}
    method = SeqDM(preset=plan.seqdm_preset, progress=False).to(dev)
    row = _compiled_case(method, plan, big, fwd_flops, peak_tflops)
    del method
    free_memory(dev)
    return {"preset": plan.seqdm_preset, "image_side": plan.side, "rows": [row]}
