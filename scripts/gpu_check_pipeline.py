"""Measurements of scripts/gpu_check.py beyond the SeqDMs network: Seq2point and STGAN
training steps and inference, the metrics on the device against the CPU kernel, a tiny
end-to-end ``crbench run`` on the device and on the CPU, and the projected cost of the
paper's Tables 1-3.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from gpu_check_lib import Plan, free_memory, peak_gib, reset_peak, sample_inputs, timed

from crbench.api import Batch, SampleMeta
from crbench.runner.store import read_rows
from crbench.training import StepContext

# the paper's full test split (about 3,800 patches) at L = 3, 4, 5: Tables 1-3
TEST_PATCHES = 3800
TABLE_L = (3, 4, 5)
TABLE_STEPS = (1000, 250, 50)
DETERMINISTIC = ("least_cloudy", "mosaicing")
E2E_METHODS = ("least_cloudy", "mosaicing", "seq2point", "stgan", "seqdm")
METRICS = ("nrmse_all", "nrmse_cloudy", "nrmse_clear", "psnr", "ssim", "sam")


# ---- Seq2point and STGAN -----------------------------------------------------------------
def _learned(name: str, preset: str) -> Any:
    from crbench_methods.seq2point import Seq2Point
    from crbench_methods.stgan import STGAN

    cls = {"seq2point": Seq2Point, "stgan": STGAN}[name]
    return cls(3, preset, val_samples=0)


def _batch(b: int, side: int) -> Batch:
    inputs = sample_inputs(b, side)
    g = torch.Generator().manual_seed(7)
    meta = [SampleMeta("gpu_check", 0, [0, 1, 2], 3, [0.5] * 3, 0.0, True)] * b
    return Batch(inputs=inputs, target=torch.rand(b, 13, side, side, generator=g), meta=meta)


def _learned_case(name: str, plan: Plan) -> dict[str, Any]:
    dev, b, side = plan.torch_device, plan.learned_batch, plan.side
    torch.manual_seed(0)
    model = _learned(name, plan.learned_preset)
    batch = _batch(b, side)
    parts = model.training_parts(plan.train_warmup + plan.train_timed, dev)
    ctx = StepContext(dev, parts.optimizers, plan.train_warmup + plan.train_timed)
    losses: list[dict[str, float]] = []

    def step() -> None:
        losses.append(parts.step_fn(batch, ctx))
        ctx.step += 1

    times = timed(step, dev, plan.train_warmup, plan.train_timed)
    train_s = sum(times) / len(times)
    train_peak = peak_gib(dev)
    inputs = batch.inputs.to(dev)
    reset_peak(dev)
    pred_s = min(timed(lambda: model.predict(inputs), dev, 1, 3))
    params = sum(p.numel() for p in parts.model.parameters())
    return {"method": name, "preset": plan.learned_preset, "image_side": side, "batch": b,
            "params": params, "train_step_s": train_s, "train_peak_mem_gib": train_peak,
            "losses_finite": all(math.isfinite(v) for r in losses for v in r.values()),
            "inference_samples_per_s": b / pred_s, "inference_peak_mem_gib": peak_gib(dev)}


def measure_learned(plan: Plan) -> dict[str, Any]:
    """Training steps (the shared loop's step function under autocast) and inference of
    Seq2point and STGAN at ``plan.side``."""
    rows = []
    for name in ("seq2point", "stgan"):
        rows.append(_learned_case(name, plan))
        free_memory(plan.torch_device)
    return {"rows": rows}


# ---- metrics -----------------------------------------------------------------------------
@contextlib.contextmanager
def torch_metrics_backend() -> Iterator[None]:
    """crbench.metrics forced to its torch back end on CPU (what runs on CUDA)."""
    from crbench.metrics import native
    from crbench.metrics import ssim as metrics_ssim

    saved = native._kernel, metrics_ssim.cv2
    native._kernel, metrics_ssim.cv2 = None, None
    try:
        yield
    finally:
        native._kernel, metrics_ssim.cv2 = saved


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| over entries finite in both; inf if they disagree on which are."""
    a, b = a.double().cpu(), b.double().cpu()
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    if not torch.equal(fa, fb) or not torch.equal(a[~fa].nan_to_num(), b[~fb].nan_to_num()):
        return math.inf
    return float((a[fa] - b[fb]).abs().max()) if bool(fa.any()) else 0.0


def measure_metrics(plan: Plan) -> dict[str, Any]:
    """All metrics of one batch on the device against the CPU's default back end (the C
    kernel where built); on a CPU run, the torch back end (the code CUDA runs) instead."""
    from crbench.metrics import compute_metrics, native

    dev, b, side = plan.torch_device, plan.metrics_batch, plan.side
    g = torch.Generator().manual_seed(3)
    target = torch.rand(b, 13, side, side, generator=g)
    pred = (target + 0.1 * torch.randn(b, 13, side, side, generator=g)).clamp(0, 1)
    masks = sample_inputs(b, side).masks
    ref_s = min(timed(lambda: compute_metrics(pred, target, masks), torch.device("cpu"), 0, 2))
    ref = compute_metrics(pred, target, masks)
    if dev.type == "cuda":
        p, t, m = pred.to(dev), target.to(dev), masks.to(dev)
        other_s = min(timed(lambda: compute_metrics(p, t, m), dev, 1, 3))
        other, against = compute_metrics(p, t, m), "cuda (torch)"
    else:
        with torch_metrics_backend():
            other_s = min(timed(lambda: compute_metrics(pred, target, masks), dev, 0, 2))
            other, against = compute_metrics(pred, target, masks), "cpu (torch back end)"
    diffs = {k: _max_diff(ref[k], other[k]) for k in ref}
    return {"batch": b, "image_side": side, "reference": "cpu (native kernel)"
            if native.available() else "cpu (opencv/torch)", "against": against,
            "max_abs_diff": diffs, "max_abs_diff_all": max(diffs.values()),
            "reference_samples_per_s": b / ref_s, "against_samples_per_s": b / other_s}


# ---- end to end --------------------------------------------------------------------------
def _e2e_tree(plan: Plan, work: Path) -> tuple[Path, Path]:
    """A seeded synthetic test split and untrained checkpoints of the learned methods (the
    comparison is between devices, not of skill)."""
    from crbench.synth import synthesize
    from crbench_methods.seqdm import SeqDM

    root, ckpt = work / "tree", work / "ckpt"
    synthesize(root, rois=1, patches=plan.e2e_patches, size=plan.e2e_size, seed=1)
    torch.manual_seed(0)
    _learned("seq2point", "tiny").save(ckpt / "seq2point" / "L3")
    _learned("stgan", "tiny").save(ckpt / "stgan")
    SeqDM(preset="tiny").save(ckpt / "seqdm")
    return root, ckpt


def _run(root: Path, ckpt: Path, out: Path, device: str, steps: int) -> int:
    """``crbench run`` in this process; what it prints goes to ``out``.log."""
    from crbench.cli.main import main

    out.parent.mkdir(parents=True, exist_ok=True)
    with (out.parent / f"{out.name}.log").open("w") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        return main(["run", "--data", str(root), "--methods", ",".join(E2E_METHODS), "--L", "3",
                     "--checkpoints", str(ckpt), "--out", str(out), "--device", device,
                     "--steps", str(steps), "--seed", "0", "--batch-size", "4",
                     "--no-progress"])


def _rows(out: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    return {(r.method, r.roi, str(r.patch)): {m: float(getattr(r, m)) for m in METRICS}
            for r in read_rows(out).itertuples()}


def _compare(a: dict[tuple[str, str, str], dict[str, float]],
             b: dict[tuple[str, str, str], dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in E2E_METHODS:
        keys = sorted(k for k in a if k[0] == method and k in b)
        diffs = [abs(a[k][m] - b[k][m]) for k in keys for m in METRICS
                 if math.isfinite(a[k][m]) and math.isfinite(b[k][m])]
        # a value finite on one device only (e.g. PSNR inf against a large finite one)
        mismatch = sum(math.isfinite(a[k][m]) != math.isfinite(b[k][m])
                       for k in keys for m in METRICS)
        means = {m: abs(sum(a[k][m] for k in keys) - sum(b[k][m] for k in keys))
                 / max(1, len(keys)) for m in ("nrmse_all", "ssim")}
        tol = 1e-5 if method in DETERMINISTIC else None
        worst = max(diffs, default=0.0)
        out[method] = {"rows": len(keys), "max_abs_diff": worst, "mean_abs_diff": means,
                       "finite_mismatches": mismatch, "tolerance": tol,
                       "ok": None if tol is None else bool(keys) and worst <= tol
                       and mismatch == 0}
    return out


def measure_e2e(plan: Plan, work: Path) -> dict[str, Any]:
    """``crbench run`` of every method at L = 3 on the same tree and checkpoints, on the
    device and on the CPU (on a CPU run: twice on the CPU), rows compared per sample."""
    root, ckpt = _e2e_tree(plan, work)
    devices = (plan.device, "cpu")
    codes, rows = [], []
    for i, dev in enumerate(devices):
        out = work / f"run{i}-{dev.replace(':', '')}"
        codes.append(_run(root, ckpt, out, dev, plan.e2e_steps))
        if codes[-1] != 0:
            log = (out.parent / f"{out.name}.log").read_text()[-800:]
            raise RuntimeError(f"crbench run --device {dev} exited {codes[-1]}: {log}")
        rows.append(_rows(out))
    notes = {"learned": "untrained checkpoints; on CUDA the networks run under autocast",
             "seqdm": "same seed, but CUDA and CPU generators draw different noise streams, "
                      "so only the mean metrics are comparable"}
    return {"devices": list(devices), "exit_codes": codes, "rows": len(rows[0]),
            "compare": _compare(rows[0], rows[1]), "notes": notes}


# ---- projection --------------------------------------------------------------------------
def best_sampling(sampling: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest measured case at the largest batch."""
    rows = [r for r in sampling.get("rows", []) if "images_x_steps_per_s" in r]
    if not rows:
        return None
    big = max(r["batch"] for r in rows)
    return max((r for r in rows if r["batch"] == big), key=lambda r: r["images_x_steps_per_s"])


def project_tables(sampling: dict[str, Any]) -> dict[str, Any]:
    """Device hours of SeqDMs over Tables 1-3 (TEST_PATCHES patches at each L of TABLE_L,
    one draw each) at each of TABLE_STEPS sampling steps, from the best measured rate."""
    best = best_sampling(sampling)
    if best is None:
        return {"skipped": "no sampling throughput was measured"}
    rate, calls = best["images_x_steps_per_s"], TEST_PATCHES * len(TABLE_L) / best["batch"]
    images = TEST_PATCHES * len(TABLE_L)
    overhead = best.get("call_overhead_s", 0.0) * calls  # once per batch of images
    hours = {str(s): (images * s / rate + overhead) / 3600.0 for s in TABLE_STEPS}
    return {"from": {k: best.get(k) for k in ("variant", "batch", "images_x_steps_per_s",
                                              "call_overhead_s")},
            "images": images, "hours_by_steps": hours,
            "note": f"{TEST_PATCHES} test patches x L = 3, 4, 5, one draw (--samples 1)"}
