"""Uncertainty metrics (crbench.metrics.uncertainty) on cases whose true error variance is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from crbench.errors import UsageError
from crbench.metrics.uncertainty import (
    N_BINS,
    UNCERTAINTY_NAMES,
    calibration_bins,
    spearman,
    uce_auce,
    uncertainty_metrics,
)


def _case(seed: int = 0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target, a prediction whose error at each pixel is N(0, sigma^2) and that sigma, which
    varies over the image from 0.005 to 0.2 (the same in all 13 bands)."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 13, size, size, generator=g) * 0.5 + 0.2
    sigma = torch.logspace(np.log10(0.005), np.log10(0.2), size * size)
    sigma = sigma[torch.randperm(size * size, generator=g)].reshape(1, 1, size, size)
    sigma = sigma.expand(2, 13, size, size)
    pred = target + sigma * torch.randn(target.shape, generator=g)
    return pred, target, sigma


def test_calibrated_predictor_beats_mis_scaled_ones_in_uce() -> None:
    pred, target, sigma = _case()
    scores = {scale: uncertainty_metrics(pred, target, (scale * sigma) ** 2)[0]
              for scale in (0.25, 0.5, 1.0, 2.0, 4.0)}
    uce = {s: float(np.mean(v["uce"])) for s, v in scores.items()}
    # calibrated: only sampling noise is left (well under the error variance itself)
    mse = float((pred - target).square().mean())
    assert uce[1.0] < 0.05 * mse
    assert uce[1.0] < uce[0.5] < uce[0.25]
    assert uce[1.0] < uce[2.0] < uce[4.0]
    auce = {s: float(np.mean(v["auce"])) for s, v in scores.items()}
    assert auce[1.0] < min(auce[0.5], auce[2.0])


def test_spearman_is_scale_free_and_zero_for_an_uninformative_std() -> None:
    pred, target, sigma = _case(seed=1)
    calibrated = uncertainty_metrics(pred, target, sigma ** 2)[0]["spearman"]
    scaled = uncertainty_metrics(pred, target, (3 * sigma) ** 2)[0]["spearman"]
    assert calibrated == pytest.approx(scaled, abs=1e-12)
    assert min(calibrated) > 0.5
    noise = torch.rand(sigma.shape, generator=torch.Generator().manual_seed(5))
    shuffled = uncertainty_metrics(pred, target, noise ** 2)[0]["spearman"]
    assert max(abs(s) for s in shuffled) < 0.1


def test_spearman_matches_scipy_with_ties() -> None:
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0, 0.5]])
    b = torch.tensor([[0.3, 0.1, 0.2, 0.9, 0.4, 0.4, 0.8, 0.0]])
    assert spearman(a, b)[0] == pytest.approx(stats.spearmanr(a[0], b[0]).statistic, abs=1e-12)
    assert np.isnan(spearman(torch.ones(1, 5), b[:, :5])[0])


def test_most_certain_pixels_have_lower_error_when_the_std_is_informative() -> None:
    pred, target, sigma = _case(seed=2)
    good = uncertainty_metrics(pred, target, sigma ** 2)[0]
    for i in range(2):
        assert good["nrmse_certain50"][i] < good["nrmse_certain90"][i] < good["nrmse_mean"][i]
    flat = uncertainty_metrics(pred, target, torch.full_like(sigma, 0.01))[0]
    # no information: the stable order keeps the first pixels, about as bad as all of them
    assert flat["nrmse_certain50"][0] == pytest.approx(flat["nrmse_mean"][0], rel=0.15)
    assert set(good) == set(UNCERTAINTY_NAMES)


def test_bins_count_every_pixel_and_pool_by_summing() -> None:
    pred, target, sigma = _case(seed=3, size=16)
    out, bins = uncertainty_metrics(pred, target, sigma ** 2)
    assert bins.shape == (2, 3, N_BINS)
    assert bins[:, 0].sum(1).tolist() == [256.0, 256.0]
    se = (pred.double() - target.double()).square().mean(1).flatten(1)
    assert bins[:, 2].sum(1) == pytest.approx(se.sum(1), rel=1e-12)
    assert uce_auce(bins[0])[0] == pytest.approx(out["uce"][0], rel=1e-12)
    pooled = uce_auce(bins.sum(0))
    assert np.isfinite(pooled).all()
    # the stds below the first and above the last edge land in the end bins
    extreme = calibration_bins(torch.tensor([[1e-12, 4.0]]), torch.zeros(1, 2))
    assert extreme[0, 0, 0] == 1 and extreme[0, 0, -1] == 1


def test_root_uce_compares_rmse_with_root_mean_variance() -> None:
    bins = np.zeros((3, N_BINS))
    bins[:, 3] = (4, 4 * 0.01, 4 * 0.04)  # mean var 0.01, MSE 0.04
    assert uce_auce(bins) == pytest.approx((0.03, 0.03))
    assert uce_auce(bins, root=True) == pytest.approx((0.1, 0.1))
    assert all(np.isnan(uce_auce(np.zeros((3, N_BINS)))))


def test_bad_variance_is_refused() -> None:
    pred, target, sigma = _case(size=8)
    with pytest.raises(UsageError, match="negative or non-finite"):
        uncertainty_metrics(pred, target, -sigma)
    with pytest.raises(UsageError, match="one shape"):
        uncertainty_metrics(pred, target, sigma[:, :4])
