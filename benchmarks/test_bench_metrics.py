"""Speed of crbench.metrics against a per-sample numpy + scikit-image reference loop.

Run: ``OMP_NUM_THREADS=1 python -m pytest benchmarks/test_bench_metrics.py --benchmark-enable``
(pyproject's addopts disable benchmarks by default). The batch is 16 samples of 13x256x256
(2 in a smoke run).
The reference (RMSE/PSNR in numpy, SSIM with skimage per band, SAM in numpy, all float64,
single-threaded) is timed once per module in the same process; each case puts
``speedup = reference seconds / crbench seconds`` (wall clock, both best-of-rounds) and
``cpu_speedup`` (the same with process CPU time, less sensitive to other load on a shared
machine) in extra_info. Target: speedup >= 10.

With ``threads = 2`` crbench runs its chunks in a pool of two single-threaded workers
(``crbench.metrics.core._run_chunks``); the reference stays single-threaded (numpy, scipy and
scikit-image run these operations on one core), so that case compares crbench using the
whole 2-core machine against the reference as users run it.

``backend`` is the CPU back end (``crbench.metrics.ssim.FilterBackend``): ``native``, the C
kernel every install with a C compiler gets, and ``opencv``, the fallback without it, timed
side by side in one run (a back end that is not installed is skipped).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from crbench.metrics import compute_metrics
from crbench.metrics import native as metrics_native
from crbench.metrics import ssim as metrics_ssim
from crbench.metrics.ssim import FilterBackend

B, C, H, W, L = 16, 13, 256, 256, 3
REF_ROUNDS = 2


def make_batch(n: int = B) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reflectance-like target (smooth field + texture), a perturbed prediction, masks."""
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((n, C, 8, 8), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear").numpy()
    target = np.clip(0.05 + 0.4 * smooth + 0.03 * rng.standard_normal((n, C, H, W),
                                                                       dtype=np.float32), 0, 1)
    pred = np.clip(target + 0.05 * rng.standard_normal((n, C, H, W), dtype=np.float32), 0, 1)
    masks = rng.random((n, L, H, W)) < 0.4
    return pred.astype(np.float32), target.astype(np.float32), masks


def reference(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(B, 4): nrmse_all, psnr, ssim, sam per sample, one sample at a time."""
    rows = []
    for p32, t32 in zip(pred, target, strict=True):
        p, t = p32.astype(np.float64), t32.astype(np.float64)
        rmse = np.sqrt(np.mean((p - t) ** 2))
        psnr = peak_signal_noise_ratio(t, p, data_range=1)
        ssim = np.mean([structural_similarity(p[c], t[c], gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False, data_range=1)
                        for c in range(C)])
        cos = (p * t).sum(0) / (np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0))
        rows.append((rmse, psnr, ssim, np.arccos(np.clip(cos, -1, 1)).mean()))
    return np.array(rows)


def timed(fn, *args) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0, out


@pytest.fixture(scope="module")
def batch(enabled: bool) -> dict:
    """The batch (2 samples in a smoke run) and the reference's values and first timing."""
    pred, target, masks = make_batch(B if enabled else 2)
    wall, cpu, values = timed(reference, pred, target)
    return {"np": (pred, target, masks), "values": values, "ref_times": [(wall, cpu)]}


@pytest.fixture(params=[FilterBackend.NATIVE.value, FilterBackend.OPENCV.value])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force one CPU back end of crbench.metrics for the case (skipped if not installed)."""
    if request.param == FilterBackend.NATIVE.value and not metrics_native.available():
        pytest.skip("crbench.metrics._kernel not built (no C compiler at install time)")
    if request.param == FilterBackend.OPENCV.value:
        if metrics_ssim.cv2 is None:
            pytest.skip("OpenCV not installed")
        monkeypatch.setattr(metrics_native, "_kernel", None)
    assert metrics_ssim.filter_backend(torch.device("cpu")).value == request.param
    return request.param


@pytest.mark.parametrize("threads", [1, 2])
def test_bench_compute_metrics(benchmark, batch: dict, threads: int, backend: str) -> None:
    pred, target, masks = batch["np"]
    args = tuple(torch.from_numpy(a) for a in (pred, target, masks))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = benchmark.pedantic(compute_metrics, args=args, rounds=10, iterations=1,
                                 warmup_rounds=1)
        ref_times, ours_times = list(batch["ref_times"]), []
        if benchmark.enabled:  # interleave both so that changing load hits both alike
            for _ in range(REF_ROUNDS):
                ref_times.append(timed(reference, pred, target)[:2])
                ours_times.append(timed(compute_metrics, *args)[:2])
    finally:
        torch.set_num_threads(before)
    ref = batch["values"]
    # same numbers as the reference (skimage pads by reflection and crops the SSIM borders,
    # crbench pads with zeros and keeps them, so SSIM only agrees approximately)
    np.testing.assert_allclose(got["nrmse_all"].numpy(), ref[:, 0], rtol=1e-6)
    np.testing.assert_allclose(got["psnr"].numpy(), ref[:, 1], atol=1e-5)
    np.testing.assert_allclose(got["sam"].numpy(), ref[:, 3], atol=1e-5)
    np.testing.assert_allclose(got["ssim"].numpy(), ref[:, 2], atol=0.02)
    if benchmark.enabled:
        ref_wall, ref_cpu = (min(t[i] for t in ref_times) for i in (0, 1))
        ours_wall = min(benchmark.stats.stats.min, *(t[0] for t in ours_times))
        ours_cpu = min(t[1] for t in ours_times)
        benchmark.extra_info.update({
            "torch_threads": threads, "batch": f"{B}x{C}x{H}x{W}",
            "backend": backend,
            "reference_seconds": ref_wall, "crbench_seconds": ours_wall,
            "speedup": ref_wall / ours_wall, "reference_cpu_seconds": ref_cpu,
            "crbench_cpu_seconds": ours_cpu, "cpu_speedup": ref_cpu / ours_cpu})
