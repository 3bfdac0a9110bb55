"""crbench.metrics against independent float64 numpy references (tests/metrics_refs.py),
scikit-image, properties, bad input and aggregation. Tests taking the ``backend`` fixture
run once per back end (the C kernel, OpenCV, torch; tests/conftest.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_refs import (
    as_np,
    cloud_masks,
    perturb,
    ref_metrics,
    ref_sam_map,
    ref_ssim_map,
    scene,
)
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from crbench.errors import UsageError
from crbench.metrics import (
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    MaskConvention,
    aggregate,
    aggregate_frame,
    compute_metrics,
    region_masks,
    sam_map,
    ssim_map,
)
from crbench.metrics.ssim import FilterBackend

# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("convention", ["paper", "toolbox"])
def test_all_metrics_match_float64_references(convention: str, backend: FilterBackend) -> None:
    rng = np.random.default_rng(0)
    t = scene(rng, b=2, h=40, w=56)
    p = perturb(rng, t, 0.05)
    m = cloud_masks(rng, 2, 3, 40, 56)
    got = compute_metrics(torch.from_numpy(p), torch.from_numpy(t), torch.from_numpy(m),
                          convention)
    assert set(got) == set(METRIC_NAMES)
    for v in got.values():
        assert v.dtype == torch.float64 and v.shape == (2,)
    for i in range(2):
        ref = ref_metrics(p[i].astype(np.float64), t[i].astype(np.float64), m[i], convention)
        for k in ("nrmse_all", "nrmse_cloudy", "nrmse_clear"):
            assert got[k][i].item() == pytest.approx(ref[k], rel=1e-6), k
        assert got["psnr"][i].item() == pytest.approx(ref["psnr"], abs=1e-5)
        assert got["ssim"][i].item() == pytest.approx(ref["ssim"], abs=1e-5)
        assert got["sam"][i].item() == pytest.approx(ref["sam"], abs=1e-6)


def test_ssim_map_matches_reference_including_borders_and_tiny_images(
        backend: FilterBackend) -> None:
    """Zero padding is exact at the borders, also for images smaller than the window and for
    widths that are not a multiple of the C kernel's 128-column strips."""
    rng = np.random.default_rng(1)
    for h, w in [(33, 20), (7, 12), (1, 1), (12, 3), (5, 129), (14, 300)]:
        t = scene(rng, b=1, h=h, w=w)
        p = perturb(rng, t, 0.1)
        got = ssim_map(torch.from_numpy(p), torch.from_numpy(t)).numpy()
        for c in range(13):
            ref = ref_ssim_map(p[0, c].astype(np.float64), t[0, c].astype(np.float64))
            np.testing.assert_allclose(got[0, c], ref, atol=2e-5, err_msg=f"{h}x{w} band {c}")


def test_masked_rmse_conventions_on_a_known_pattern() -> None:
    """Two inputs; pixel columns: cloudy in both / only the first / none."""
    h, w = 4, 6
    m = np.zeros((1, 2, h, w), dtype=bool)
    m[0, :, :, 0:2] = True  # cloudy in both inputs
    m[0, 0, :, 2:4] = True  # cloudy in the first input only
    t = np.full((1, 13, h, w), 0.5, dtype=np.float32)
    p = t.copy()
    p[..., 0:2] += 0.1  # error 0.1 where cloudy in both
    p[..., 2:4] += 0.2  # error 0.2 where cloudy in one
    p[..., 4:6] += 0.3  # error 0.3 where clear in both
    args = (torch.from_numpy(p), torch.from_numpy(t), torch.from_numpy(m))
    paper = compute_metrics(*args, convention=MaskConvention.PAPER)
    toolbox = compute_metrics(*args, convention=MaskConvention.TOOLBOX)
    assert paper["nrmse_cloudy"].item() == pytest.approx(0.1, rel=1e-5)
    assert paper["nrmse_clear"].item() == pytest.approx(math.sqrt((0.04 + 0.09) / 2), rel=1e-5)
    assert toolbox["nrmse_cloudy"].item() == pytest.approx(math.sqrt((0.01 + 0.04) / 2),
                                                           rel=1e-5)
    assert toolbox["nrmse_clear"].item() == pytest.approx(0.3, rel=1e-5)
    cloudy, clear = region_masks(torch.from_numpy(m), "toolbox")
    assert cloudy[0, 0].tolist() == [True] * 4 + [False] * 2
    assert torch.equal(clear, ~cloudy)


def test_empty_region_is_nan_and_regions_partition_the_error() -> None:
    rng = np.random.default_rng(2)
    t = scene(rng, b=2, h=16, w=16)
    p = perturb(rng, t, 0.05)
    m = np.zeros((2, 3, 16, 16), dtype=bool)
    m[1, :, :8] = True  # sample 1: cloudy everywhere in the top half, in every input
    got = as_np(compute_metrics(p, t, m))
    assert math.isnan(got["nrmse_cloudy"][0]) and not math.isnan(got["nrmse_clear"][0])
    assert got["nrmse_clear"][0] == pytest.approx(got["nrmse_all"][0], rel=1e-9)
    all2 = got["nrmse_all"][1] ** 2
    parts = (got["nrmse_cloudy"][1] ** 2 + got["nrmse_clear"][1] ** 2) / 2  # equal halves
    assert parts == pytest.approx(all2, rel=1e-9)


# --------------------------------------------------------------------------- scikit-image


def test_ssim_map_and_psnr_match_scikit_image(backend: FilterBackend) -> None:
    rng = np.random.default_rng(3)
    t = scene(rng, b=2, h=64, w=64)
    p = perturb(rng, t, 0.04)
    got_map = ssim_map(torch.from_numpy(p), torch.from_numpy(t)).numpy()
    psnr = compute_metrics(p, t, np.zeros((2, 1, 64, 64)))["psnr"].numpy()
    for i in range(2):
        for c in range(13):
            _, ref = structural_similarity(
                p[i, c].astype(np.float64), t[i, c].astype(np.float64), gaussian_weights=True,
                sigma=1.5, use_sample_covariance=False, data_range=1, full=True)
            inner = (slice(5, -5), slice(5, -5))
            assert np.abs(got_map[i, c][inner] - ref[inner]).max() <= 1e-5, (i, c)
        ref_psnr = peak_signal_noise_ratio(t[i].astype(np.float64), p[i].astype(np.float64),
                                           data_range=1)
        assert psnr[i] == pytest.approx(ref_psnr, abs=1e-5)


# --------------------------------------------------------------------------- properties

sizes = st.tuples(st.integers(1, 2), st.integers(1, 20), st.integers(1, 20))


@settings(max_examples=8, deadline=None)
@given(shape=sizes, seed=st.integers(0, 2**31 - 1))
def test_identical_images_score_perfectly(shape: tuple[int, int, int], seed: int) -> None:
    b, h, w = shape
    x = np.random.default_rng(seed).random((b, 13, h, w)).astype(np.float32)
    got = as_np(compute_metrics(x, x.copy(), np.ones((b, 2, h, w))))
    assert (got["nrmse_all"] == 0).all() and (got["nrmse_cloudy"] == 0).all()
    assert np.isnan(got["nrmse_clear"]).all()  # every pixel cloudy in every input
    assert np.isposinf(got["psnr"]).all()
    assert np.allclose(got["ssim"], 1, atol=1e-6)
    assert (got["sam"] == 0).all()


@settings(max_examples=8, deadline=None)
@given(shape=sizes, seed=st.integers(0, 2**31 - 1))
def test_symmetric_metrics(shape: tuple[int, int, int], seed: int) -> None:
    b, h, w = shape
    rng = np.random.default_rng(seed)
    x, y = rng.random((2, b, 13, h, w)).astype(np.float32)
    m = cloud_masks(rng, b, 2, h, w)
    xy, yx = as_np(compute_metrics(x, y, m)), as_np(compute_metrics(y, x, m))
    for k in METRIC_NAMES:
        np.testing.assert_allclose(xy[k], yx[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_random_noise_scores_worse_than_a_slightly_perturbed_target() -> None:
    rng = np.random.default_rng(4)
    t = scene(rng, b=3, h=32, w=32)
    near = perturb(rng, t, 0.02)
    noise = rng.random(t.shape).astype(np.float32)
    m = cloud_masks(rng, 3, 3, 32, 32)
    good, bad = as_np(compute_metrics(near, t, m)), as_np(compute_metrics(noise, t, m))
    for k in METRIC_NAMES:
        better = good[k] > bad[k] if HIGHER_IS_BETTER[k] else good[k] < bad[k]
        assert better.all(), (k, good[k], bad[k])


def test_sam_is_zero_for_right_spectra_at_another_brightness(backend: FilterBackend) -> None:
    rng = np.random.default_rng(5)
    t = scene(rng, b=2, h=16, w=16, lo=0.2, hi=0.8)
    got = as_np(compute_metrics(0.37 * t, t, np.zeros((2, 1, 16, 16))))
    assert (got["sam"] < 1e-6).all()
    assert (got["nrmse_all"] > 0.05).all()


def test_sam_zero_norm_pixels_are_documented_values_not_nan(backend: FilterBackend) -> None:
    rng = np.random.default_rng(6)
    t = scene(rng, b=1, h=8, w=8, lo=0.1, hi=0.5)
    p = perturb(rng, t, 0.05)
    p[0, :, 0, 0] = 0  # prediction zero, target not: pi/2
    p[0, :, 1, 1] = 0
    t[0, :, 1, 1] = 0  # both zero: 0
    t[0, :, 2, 2] = 0  # target zero, prediction not: pi/2
    angles = sam_map(p, t).numpy()[0]
    assert angles[0, 0] == pytest.approx(math.pi / 2, abs=1e-6)
    assert angles[1, 1] == 0
    assert angles[2, 2] == pytest.approx(math.pi / 2, abs=1e-6)
    np.testing.assert_allclose(angles, ref_sam_map(p[0].astype(float), t[0].astype(float)),
                               atol=1e-6)
    sam = compute_metrics(p, t, np.zeros((1, 1, 8, 8)))["sam"].item()
    assert math.isfinite(sam) and sam == pytest.approx(angles.astype(np.float64).mean(),
                                                       rel=1e-6)


def test_batch_results_equal_per_sample_results_and_inputs_are_untouched(
        backend: FilterBackend) -> None:
    rng = np.random.default_rng(7)
    t = torch.from_numpy(scene(rng, b=3, h=24, w=24))
    p = torch.from_numpy(perturb(rng, t.numpy(), 0.05))
    p[0, 0, 0, 0] = 1 + 5e-5  # within tolerance: clipped for the computation only
    m = torch.from_numpy(cloud_masks(rng, 3, 2, 24, 24))
    p_before = p.clone()
    batch = compute_metrics(p, t, m)
    assert torch.equal(p, p_before)
    for i in range(3):
        one = compute_metrics(p[i:i + 1].clamp(0, 1), t[i:i + 1], m[i:i + 1])
        for k in METRIC_NAMES:
            np.testing.assert_allclose(batch[k][i:i + 1].numpy(), one[k].numpy(), rtol=1e-6,
                                       atol=1e-9, err_msg=k)


def test_float64_and_half_inputs_give_float32_results() -> None:
    rng = np.random.default_rng(8)
    t = scene(rng, b=1, h=16, w=16)
    p = perturb(rng, t, 0.05)
    m = np.zeros((1, 1, 16, 16))
    base = as_np(compute_metrics(p, t, m))
    wide = as_np(compute_metrics(p.astype(np.float64), t.astype(np.float64), m))
    for k in METRIC_NAMES:
        np.testing.assert_allclose(wide[k], base[k], rtol=1e-6, equal_nan=True)
    half = as_np(compute_metrics(torch.from_numpy(p).half(), torch.from_numpy(t), m))
    assert half["nrmse_all"][0] == pytest.approx(base["nrmse_all"][0], rel=1e-2)


def test_grad_inputs_and_a_callers_autocast_do_not_change_results() -> None:
    rng = np.random.default_rng(13)
    t = torch.from_numpy(scene(rng, b=1, h=32, w=32))
    p = torch.from_numpy(perturb(rng, t.numpy(), 0.05))
    m = torch.zeros(1, 1, 32, 32)
    base = as_np(compute_metrics(p, t, m))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = as_np(compute_metrics(p.clone().requires_grad_(), t, m))
    for k in METRIC_NAMES:
        np.testing.assert_array_equal(under_autocast[k], base[k], err_msg=k)


def test_threaded_chunks_give_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several torch threads on CPU: chunks run in a worker pool; same numbers, and the
    caller's thread setting is restored."""
    import crbench.metrics.core as metrics

    monkeypatch.setitem(metrics._CHUNK_ELEMS, "cpu", 13 * 20 * 20)  # one sample per chunk
    rng = np.random.default_rng(15)
    t = scene(rng, b=4, h=20, w=20)
    p = perturb(rng, t, 0.05)
    m = cloud_masks(rng, 4, 2, 20, 20)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = as_np(compute_metrics(p, t, m))
        one_map = ssim_map(p, t)
        torch.set_num_threads(2)
        two = as_np(compute_metrics(p, t, m))
        assert torch.equal(ssim_map(p, t), one_map)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for k in METRIC_NAMES:
        np.testing.assert_array_equal(two[k], one[k], err_msg=k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(9)
    t = torch.from_numpy(scene(rng, b=2, h=64, w=64))
    p = torch.from_numpy(perturb(rng, t.numpy(), 0.05))
    m = torch.from_numpy(cloud_masks(rng, 2, 3, 64, 64))
    cpu = compute_metrics(p, t, m)
    gpu = compute_metrics(p.cuda(), t.cuda(), m.cuda())
    for k in METRIC_NAMES:
        assert gpu[k].device.type == "cuda"
        np.testing.assert_allclose(gpu[k].cpu().numpy(), cpu[k].numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=k)


# --------------------------------------------------------------------------- bad input


def good_args(b: int = 1, L: int = 2, h: int = 8, w: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(b, 13, h, w, generator=g), torch.rand(b, 13, h, w, generator=g),
            torch.zeros(b, L, h, w)]


def one_bad_value(value: float, b: int = 1, sample: int = 0) -> torch.Tensor:
    """A valid (b, 13, 8, 8) image batch with one bad value in sample ``sample``."""
    x = good_args(b=b)[0]
    x[sample, 3, 2, 5] = value
    return x


@pytest.mark.parametrize(("index", "bad", "pattern"), [
    (0, torch.rand(1, 12, 8, 8), r"pred has 12 bands"),
    (1, torch.rand(1, 13, 8, 9), r"target has shape \(1, 13, 8, 9\) but pred has"),
    (0, torch.rand(13, 8, 8), r"pred must have shape \(B, 13, H, W\)"),
    (0, torch.full((1, 13, 8, 8), 1.01), r"pred has values in \[.*1\.01\], outside \[0, 1\]"),
    (1, torch.full((1, 13, 8, 8), -0.5), r"target has values in \[-0\.5"),
    (1, torch.full((1, 13, 8, 8), float("nan")), r"target contains 832 NaN or infinite"),
    (0, one_bad_value(float("nan")), r"pred contains 1 NaN or infinite"),
    (1, one_bad_value(float("inf")), r"target contains 1 NaN or infinite"),
    (0, one_bad_value(-float("inf")), r"pred contains 1 NaN or infinite"),
    (0, one_bad_value(1e20), r"pred has values in \[.*1e\+20\], outside \[0, 1\]"),
    (0, torch.full((1, 13, 8, 8), 4000, dtype=torch.int16), r"pred has values .*S2 DN"),
    (2, torch.zeros(2, 2, 8, 8), r"masks has shape \(2, 2, 8, 8\); expected .*B=1"),
    (2, torch.zeros(1, 2, 8, 7), r"masks has shape .*W=8"),
    (2, torch.zeros(1, 0, 8, 8), r"masks has L = 0"),
    (2, torch.full((1, 2, 8, 8), 0.5), r"masks must contain only 0 and 1.*0\.5"),
    (2, torch.zeros(1, 8, 8), r"masks must have shape \(B, L, H, W\)"),
    (0, [[0.5]], r"pred must be a torch.Tensor or numpy array, got list"),
])
def test_bad_input_names_the_argument(index: int, bad: object, pattern: str,
                                      backend: FilterBackend) -> None:
    args: list[object] = list(good_args())
    args[index] = bad
    with pytest.raises(UsageError, match=pattern):
        compute_metrics(*args)


@pytest.mark.parametrize("value", [float("nan"), 1.5, -0.01])
def test_a_bad_value_in_a_later_chunk_is_found(value: float, backend: FilterBackend,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Values are checked chunk by chunk: a bad value in the last sample still fails, in
    compute_metrics, sam_map and ssim_map alike."""
    import crbench.metrics.core as metrics

    monkeypatch.setitem(metrics._CHUNK_ELEMS, "cpu", 13 * 8 * 8)  # one sample per chunk
    target = one_bad_value(value, b=3, sample=2)
    pred, _, masks = good_args(b=3)
    for call in (lambda: compute_metrics(pred, target, masks), lambda: sam_map(pred, target),
                 lambda: ssim_map(pred, target)):
        with pytest.raises(UsageError, match=r"^target (contains 1 NaN|has values in)"):
            call()


def test_bad_convention_lists_choices() -> None:
    expected = r"^convention: unknown value 'cloudy'; expected one of paper, toolbox$"
    with pytest.raises(UsageError, match=expected):
        compute_metrics(*good_args(), convention="cloudy")
    assert issubclass(UsageError, ValueError)


def test_values_within_tolerance_are_clipped() -> None:
    p, t, m = good_args()
    p_out = p.clone()
    p_out[0, 3, 2, 2] = 1 + 9e-5
    p_out[0, 4, 1, 1] = -9e-5
    p_in = p_out.clamp(0, 1)
    a, b = compute_metrics(p_out, t, m), compute_metrics(p_in, t, m)
    for k in METRIC_NAMES:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)


def test_non_contiguous_inputs_give_the_same_results(backend: FilterBackend) -> None:
    """Channels-last images and masks (numpy HWC stacks, say), also with values that need
    clipping, give the results of contiguous copies (torch may sum a channels-last tensor
    in another order: float rounding only)."""
    p, t, m = good_args(b=2)
    p[1, 3, 2, 2] = 1 + 9e-5  # within tolerance: clipped
    p_hwc, t_hwc = (v.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) for v in (p, t))
    m_hwc = m.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not (p_hwc.is_contiguous() or t_hwc.is_contiguous() or m_hwc.is_contiguous())
    a, b = compute_metrics(p_hwc, t_hwc, m_hwc), compute_metrics(p, t, m)
    for k in METRIC_NAMES:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-7, err_msg=k)
    np.testing.assert_allclose(sam_map(p_hwc, t_hwc), sam_map(p, t), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ssim_map(p_hwc, t_hwc), ssim_map(p, t), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- aggregation


def test_aggregate_ignores_nan_and_matches_a_naive_bootstrap() -> None:
    rng = np.random.default_rng(10)
    v = rng.normal(0.5, 0.1, 40)
    with_nan = np.concatenate([v[:10], [np.nan], v[10:], [np.nan]])
    agg = aggregate(with_nan, n_boot=500, ci=0.9, seed=3)
    assert (agg.n, agg.n_nan, agg.n_inf) == (40, 2, 0)
    assert agg.mean == pytest.approx(v.mean())
    idx = np.random.default_rng(3).integers(0, 40, size=(500, 40))
    boot = v[idx].mean(axis=1)
    assert agg.low == pytest.approx(np.quantile(boot, 0.05))
    assert agg.high == pytest.approx(np.quantile(boot, 0.95))
    assert agg.low < agg.mean < agg.high
    assert aggregate(torch.tensor(with_nan), n_boot=500, ci=0.9, seed=3) == agg
    assert aggregate(pd.Series(with_nan), n_boot=500, ci=0.9, seed=3) == agg


def test_aggregate_interval_has_the_expected_width_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(11)
    small, large = aggregate(rng.normal(0, 1, 25)), aggregate(rng.normal(0, 1, 2500))
    for agg, n in [(small, 25), (large, 2500)]:
        assert agg.low < agg.mean < agg.high
        width = agg.high - agg.low
        assert width == pytest.approx(2 * 1.96 / math.sqrt(n), rel=0.3)  # ~ normal theory
    assert (large.high - large.low) < (small.high - small.low) / 5


def test_aggregate_edge_cases() -> None:
    inf = aggregate([30.0, 40.0, math.inf, math.nan], n_boot=200)
    assert (inf.mean, inf.n, inf.n_nan, inf.n_inf) == (math.inf, 3, 1, 1)
    assert not math.isnan(inf.low) and not math.isnan(inf.high) and inf.high == math.inf
    empty = aggregate([math.nan, math.nan])
    assert math.isnan(empty.mean) and math.isnan(empty.low) and (empty.n, empty.n_nan) == (0, 2)
    one = aggregate([0.25])
    assert one.mean == one.low == one.high == 0.25
    v = np.random.default_rng(0).random(10)
    assert aggregate(v, seed=1) == aggregate(v, seed=1)
    assert aggregate(v, seed=1) != aggregate(v, seed=2)


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"values": [[1.0, 2.0]]}, r"values must be 1-D"),
    ({"values": ["a"]}, r"values must be numbers"),
    ({"values": [1.0], "n_boot": 0}, r"n_boot must be an integer >= 1, got 0"),
    ({"values": [1.0], "ci": 95}, r"ci must be in \(0, 1\).*got 95"),
])
def test_aggregate_bad_arguments(kwargs: dict, pattern: str) -> None:
    with pytest.raises(UsageError, match=pattern):
        aggregate(**kwargs)


def test_aggregate_frame_groups_rows() -> None:
    rng = np.random.default_rng(12)
    df = pd.DataFrame({"method": ["a"] * 6 + ["b"] * 4, "L": [3, 3, 3, 4, 4, 4, 3, 3, 3, 3],
                       "psnr": rng.normal(30, 2, 10), "sam": rng.random(10)})
    df.loc[1, "psnr"] = np.nan
    out = aggregate_frame(df, by=["method", "L"], n_boot=100)
    assert list(out[["method", "L"]].itertuples(index=False, name=None)) == [
        ("a", 3), ("a", 4), ("b", 3)]
    assert out["n_samples"].tolist() == [3, 3, 4]
    row = out.iloc[0]
    ref = aggregate(df.loc[:2, "psnr"].to_numpy(), n_boot=100)
    assert (row["psnr"], row["psnr_low"], row["psnr_high"]) == (ref.mean, ref.low, ref.high)
    assert (row["psnr_n"], row["psnr_n_nan"]) == (2, 1)
    assert "sam_high" in out.columns and "ssim" not in out.columns
    overall = aggregate_frame(df, n_boot=50)
    assert len(overall) == 1 and overall["n_samples"].item() == 10
    with pytest.raises(UsageError, match=r"columns \['split'\] not in the table"):
        aggregate_frame(df, by=["split"])
