"""The back ends of crbench.metrics: crbench's C kernel (crbench.metrics._kernel), OpenCV
and torch give the documented values, and the kernel's wrapper guards its raw buffers.

Agreement with the float64 references and scikit-image is tested per back end in
test_metrics.py (tests taking the ``backend`` fixture)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from metrics_refs import ref_sam_map, ref_ssim_map, scene

from crbench.metrics import compute_metrics, sam_map, ssim_map
from crbench.metrics import native as metrics_native
from crbench.metrics import ssim as metrics_ssim
from crbench.metrics.core import _Workspace
from crbench.metrics.ssim import FilterBackend, filter_backend, gaussian_window


def test_identical_scaled_and_zero_spectra_on_every_back_end(backend: FilterBackend) -> None:
    rng = np.random.default_rng(20)
    x = scene(rng, b=2, h=19, w=140, lo=0.2, hi=0.6)
    x[0, :, 3, 4] = 0  # a zero spectrum in both images
    same = {k: v.numpy() for k, v in compute_metrics(x, x.copy(), np.ones((2, 1, 19, 140))).items()}
    assert (same["nrmse_all"] == 0).all() and np.isposinf(same["psnr"]).all()
    assert np.abs(same["ssim"] - 1).max() < 1e-6
    assert (same["sam"] == 0).all()  # exact, not arccos(1 - eps)
    angles = sam_map(0.5 * x, x).numpy()  # right spectra at half the brightness
    assert angles.max() == 0
    y = x.copy()
    y[1, :, 7, 8] = 0  # one zero spectrum: pi/2
    assert sam_map(x, y)[1, 7, 8].item() == pytest.approx(math.pi / 2, abs=1e-6)


def test_back_end_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    expected = FilterBackend.NATIVE if metrics_native.available() else (
        FilterBackend.OPENCV if metrics_ssim.cv2 is not None else FilterBackend.TORCH)
    assert filter_backend(cpu) is expected
    assert filter_backend(torch.device("cuda")) is FilterBackend.TORCH  # never the CPU kernels
    monkeypatch.setattr(metrics_native, "_kernel", None)
    assert not metrics_native.available()
    monkeypatch.setattr(metrics_ssim, "cv2", None)
    assert filter_backend(cpu) is FilterBackend.TORCH


@pytest.mark.usefixtures("native_kernel")
def test_native_sample_sums_match_float64_references_and_the_torch_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(21)
    x, y = (scene(rng, b=3, h=9, w=131) for _ in range(2))
    x[1, :, 2, 5] = 0  # zero spectrum in x only: pi/2
    x[2, :, 4, 4] = y[2, :, 4, 4] = 0  # in both: 0
    y[0, :, 6, 7] = 2 * x[0, :, 6, 7]  # right spectrum at twice the brightness: exactly 0
    cloudy = torch.from_numpy(rng.random((3, 9, 131)) < 0.3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    angles = torch.empty(3, 9, 131)
    totals, ranges = metrics_native.sample_sums(xt, yt, cloudy, angles)
    got = totals.numpy()
    both = np.stack([x, y], axis=1).reshape(3, -1)
    np.testing.assert_array_equal(ranges.numpy(), np.stack([both.min(1), both.max(1)], 1))
    err2 = ((x.astype(np.float64) - y) ** 2).sum(axis=1)
    c = cloudy.numpy()
    for i in range(3):
        ref_angles = ref_sam_map(x[i].astype(np.float64), y[i].astype(np.float64))
        np.testing.assert_allclose(angles[i].numpy(), ref_angles, atol=1e-6)
        expected = [err2[i].sum(), err2[i][c[i]].sum(), err2[i][~c[i]].sum(), ref_angles.sum()]
        np.testing.assert_allclose(got[i], expected, rtol=2e-6)
    assert angles[0, 6, 7] == 0 and angles[2, 4, 4] == 0
    assert angles[1, 2, 5].item() == pytest.approx(math.pi / 2, abs=1e-6)
    no_region = metrics_native.sample_sums(xt, yt)[0].numpy()
    assert (no_region[:, 1] == 0).all() and (no_region[:, 2] == no_region[:, 0]).all()
    monkeypatch.setattr(metrics_native, "_kernel", None)  # the torch formulas
    fallback = _Workspace((3, 13, 9, 131), torch.device("cpu"))
    assert not fallback.native
    fallback_totals = fallback.sample_sums(xt, yt, slice(0, 3), cloudy)[0]
    np.testing.assert_allclose(fallback_totals.numpy(), got, rtol=2e-6)


@pytest.mark.usefixtures("native_kernel")
def test_native_ssim_sums_equal_the_sum_of_the_map() -> None:
    rng = np.random.default_rng(22)
    x, y = (torch.from_numpy(scene(rng, b=1, h=40, w=260)[0]) for _ in range(2))
    g = gaussian_window().astype(np.float32)
    out_map = torch.empty_like(x)
    sums = metrics_native.ssim_sums(x, y, g, out_map)
    assert sums.dtype == torch.float64 and sums.shape == (13,)
    np.testing.assert_allclose(sums.numpy(), out_map.double().sum(dim=(1, 2)).numpy(), rtol=1e-6)
    ref = ref_ssim_map(x[4].double().numpy(), y[4].double().numpy())
    np.testing.assert_allclose(out_map[4].numpy(), ref, atol=2e-5)
    assert torch.equal(ssim_map(x[None], y[None])[0], out_map)


@pytest.mark.usefixtures("native_kernel")
@pytest.mark.parametrize("bad, pattern", [
    (lambda x: x.double(), "float32"),
    (lambda x: x.transpose(1, 2), "contiguous: False"),
    (lambda x: x[:, :4], r"shape \(2, 8, 8\)"),
])
def test_native_wrapper_refuses_buffers_the_kernel_cannot_read(bad, pattern: str) -> None:
    x = torch.rand(2, 8, 8)
    g = gaussian_window().astype(np.float32)
    with pytest.raises(ValueError, match=pattern):
        metrics_native.ssim_sums(x, bad(x.clone()), g)
    with pytest.raises(ValueError, match="symmetric 11-tap"):
        metrics_native.ssim_sums(x, x, np.arange(11, dtype=np.float32))
    with pytest.raises(ValueError, match=r"cloudy.*torch.bool"):
        metrics_native.sample_sums(x[None], x[None], torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match=r"sam_out.*shape \(1, 8, 8\)"):
        metrics_native.sample_sums(x[None], x[None], sam_out=torch.empty(1, 8, 7))
