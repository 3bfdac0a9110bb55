"""GaussianDiffusion of SeqDMs: schedules, respacing, posterior, reverse step and hybrid loss,
checked against an independent float64 numpy reference of improved DDPM's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crbench.errors import UsageError
from crbench_methods.seqdm.diffusion import (
    BetaSchedule,
    GaussianDiffusion,
    Prediction,
    discretized_gaussian_log_likelihood,
    make_betas,
    space_timesteps,
)
from crbench_methods.seqdm.network import MmDMNet

TINY_NET = {"image_size": 8, "base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
            "attention_resolutions": [4], "num_heads": 2, "dropout": 0.0}


def _ref_linear(T: int) -> np.ndarray:
    return np.linspace(0.1 / T, 20.0 / T, T)  # DDPM's 1e-4..0.02 at T = 1000, rescaled


def _ref_cosine(T: int) -> np.ndarray:
    f = np.cos((np.arange(T + 1) / T + 0.008) / 1.008 * np.pi / 2) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], 0.999)


def _ref_spaced(betas: np.ndarray, n: int) -> tuple[np.ndarray, list[int]]:
    """Kept steps by rounding i * (T - 1) / (n - 1); betas from the kept alphas_cumprod."""
    T = len(betas)
    kept = sorted({int(np.round(i * (T - 1) / (n - 1))) for i in range(n)})
    abar = np.cumprod(1.0 - betas)[kept]
    prev = np.concatenate([[1.0], abar[:-1]])
    return 1.0 - abar / prev, kept


def _ref_posterior(betas: np.ndarray) -> dict[str, np.ndarray]:
    abar = np.cumprod(1.0 - betas)
    prev = np.concatenate([[1.0], abar[:-1]])
    var = betas * (1 - prev) / (1 - abar)
    return {"var": var, "logvar": np.log(np.concatenate([[var[1]], var[1:]])),
            "c1": betas * np.sqrt(prev) / (1 - abar),
            "c2": (1 - prev) * np.sqrt(1 - betas) / (1 - abar), "abar": abar}


@pytest.mark.parametrize("schedule", [BetaSchedule.LINEAR, BetaSchedule.COSINE])
@pytest.mark.parametrize("n", [1000, 50, 7])
def test_respaced_posterior_matches_float64_reference(schedule: BetaSchedule, n: int) -> None:
    ref_betas = _ref_linear(1000) if schedule is BetaSchedule.LINEAR else _ref_cosine(1000)
    np.testing.assert_allclose(make_betas(schedule, 1000), ref_betas, rtol=1e-12)
    spaced_betas, kept = _ref_spaced(ref_betas, n)
    ref = _ref_posterior(spaced_betas)
    d = GaussianDiffusion.from_schedule(schedule, 1000).respaced(n)
    assert d.timestep_map == kept and d.num_timesteps == len(kept)
    np.testing.assert_allclose(d.betas, spaced_betas, rtol=1e-10)
    np.testing.assert_allclose(d.posterior_log_variance_clipped, ref["logvar"], rtol=1e-10)

    # the torch path (float32 tensors) against the float64 reference
    g = torch.Generator().manual_seed(0)
    t = torch.arange(d.num_timesteps)
    x0 = torch.rand(len(t), 3, 4, 4, generator=g) * 2 - 1
    xt = torch.randn(len(t), 3, 4, 4, generator=g)
    mean, var, _ = d.q_posterior(x0, xt, t)
    c1, c2 = ref["c1"][:, None, None, None], ref["c2"][:, None, None, None]
    ref_mean = c1 * x0.double().numpy() + c2 * xt.double().numpy()
    np.testing.assert_allclose(mean.numpy(), ref_mean, atol=1e-4)
    np.testing.assert_allclose(var.flatten().numpy(), ref["var"], atol=1e-4)
    # learned-range variance: v = -1 gives the clipped posterior, v = 1 the respaced beta
    v = torch.rand(len(t), 3, 4, 4, generator=g) * 2 - 1
    out = d.p_mean_variance(torch.cat([torch.zeros_like(x0), v], 1), xt, t)
    frac = (v.double().numpy() + 1) / 2
    ref_lv = (frac * np.log(spaced_betas)[:, None, None, None]
              + (1 - frac) * ref["logvar"][:, None, None, None])
    np.testing.assert_allclose(out["log_variance"].numpy(), ref_lv, atol=1e-4)
    # epsilon = 0 -> x0_hat = x_t / sqrt(abar), clipped to [-1, 1]
    x0_hat = np.clip(xt.double().numpy() / np.sqrt(ref["abar"])[:, None, None, None], -1, 1)
    np.testing.assert_allclose(out["pred_x0"].numpy(), x0_hat, atol=1e-4)


def test_space_timesteps_rejects_bad_counts() -> None:
    with pytest.raises(UsageError, match="sample_steps"):
        space_timesteps(1000, 0)
    with pytest.raises(UsageError, match="sample_steps"):
        space_timesteps(100, 101)
    assert space_timesteps(1000, 1) == [999]


def test_discretized_likelihood_is_a_distribution_over_255_bins() -> None:
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64).reshape(256, 1)
    for mean, log_scale in ((0.0, -3.0), (0.7, -1.0), (-0.99, -5.0)):
        lp = discretized_gaussian_log_likelihood(
            levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale))
        assert math.isclose(float(lp.exp().sum()), 1.0, abs_tol=2e-3)


def test_vlb_gradient_reaches_only_the_variance() -> None:
    d = GaussianDiffusion.from_schedule("linear", 100)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(4, 3, 4, 4, generator=g)
    out = torch.randn(4, 6, 4, 4, generator=g, requires_grad=True)
    t = torch.tensor([0, 1, 50, 99])
    losses = d.training_losses(lambda x, tm: out, x0, t, noise)
    (grad_vb,) = torch.autograd.grad(losses.vb.sum(), out, retain_graph=True)
    assert grad_vb[:, :3].abs().max() == 0 and grad_vb[:, 3:].abs().max() > 0
    (grad_mse,) = torch.autograd.grad(losses.mse.sum(), out)
    assert grad_mse[:, 3:].abs().max() == 0 and grad_mse[:, :3].abs().max() > 0
    assert torch.allclose(losses.loss, losses.mse + losses.vb)
    # lambda * T = 0.1 here: the VLB term is the bits/dim L_t scaled by 0.1
    raw = d.vb_terms(torch.cat([out[:, :3].detach(), out[:, 3:]], 1), x0,
                     d.q_sample(x0, t, noise), t)
    assert torch.allclose(losses.vb, 0.1 * raw)


def test_hybrid_loss_decreases_when_overfitting_one_sample() -> None:
    torch.manual_seed(0)
    net = MmDMNet(TINY_NET)
    d = GaussianDiffusion.from_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(1, 13, 8, 8, generator=g) * 2 - 1).expand(3, -1, -1, -1)
    a0 = (torch.rand(1, 2, 8, 8, generator=g) * 2 - 1).expand(3, -1, -1, -1)
    t = torch.tensor([0, 20, 400])
    noise = torch.randn(3, 13, 8, 8, generator=g)
    a_t = d.q_sample(a0, t, torch.randn(3, 2, 8, 8, generator=g))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    history = []
    for _ in range(20):
        losses = d.training_losses(lambda x, tm: net(x, a_t, tm), x0, t, noise)
        loss = losses.loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        assert torch.isfinite(losses.vb).all()
    assert history[-1] < 0.6 * history[0], history


def test_reverse_step_adds_no_noise_at_t0() -> None:
    d = GaussianDiffusion.from_schedule("cosine", 50)
    x = torch.randn(2, 3, 4, 4)
    out = torch.zeros(2, 6, 4, 4)
    t = torch.tensor([0, 0])
    a = d.p_sample(out, x, t, torch.randn(2, 3, 4, 4))["sample"]
    b = d.p_sample(out, x, t, torch.randn(2, 3, 4, 4))["sample"]
    assert torch.equal(a, b)
    t = torch.tensor([10, 10])
    assert not torch.equal(d.p_sample(out, x, t, torch.randn(2, 3, 4, 4))["sample"],
                           d.p_sample(out, x, t, torch.randn(2, 3, 4, 4))["sample"])


def test_edm_preconditioning_targets_unit_variance_and_inverts_exactly() -> None:
    """Prediction.EDM: for data of mean mu and std s the regression target F has unit
    variance at every step (the point of the preconditioning); the x0 read from the target
    is x0 exactly; the estimate skips x_t at low noise (eps-like) and ignores it at high
    noise (x0-like); the loss is the MSE of F; respacing keeps mu and s."""
    mu = [-0.8 + 0.02 * k for k in range(13)]
    d = GaussianDiffusion.from_schedule("linear", 1000, prediction=Prediction.EDM,
                                        data_mean=mu, precond_sigma=0.1)
    g = torch.Generator().manual_seed(2)
    x0 = torch.tensor(mu).reshape(1, -1, 1, 1) + 0.1 * torch.randn(6, 13, 32, 32, generator=g)
    noise = torch.randn(6, 13, 32, 32, generator=g)
    t = torch.tensor([0, 20, 100, 300, 600, 999])
    x_t = d.q_sample(x0, t, noise)
    target = d.regression_target(x0, x_t, t, noise)
    np.testing.assert_allclose(target.std(dim=(1, 2, 3)).numpy(), 1.0, atol=0.03)
    back, eps = d.x0_from_head(target, x_t, t)
    torch.testing.assert_close(back, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps, noise, atol=2e-3, rtol=2e-3)
    # the part of x_t the estimate keeps: almost all at t = 0, almost none at t = 999
    zero = torch.zeros_like(target)
    keep = (d.x0_from_head(zero, x_t + 1.0, t)[0] - d.x0_from_head(zero, x_t, t)[0])
    assert keep[0].mean() > 0.98 and keep[-1].mean() < 0.01
    losses = d.training_losses(lambda x, tm: torch.cat([target + 0.5, zero], 1), x0, t, noise)
    torch.testing.assert_close(losses.mse, torch.full((6,), 0.25), atol=1e-5, rtol=1e-5)
    r = d.respaced(10)
    assert (r.prediction, r.data_mean, r.precond_sigma) == (Prediction.EDM, d.data_mean, 0.1)
    with pytest.raises(UsageError, match=r"precond_sigma: got 0\.0, expected a number > 0"):
        GaussianDiffusion.from_schedule("linear", 100, precond_sigma=0.0)


def test_x0_prediction_reads_the_head_as_x0_and_regresses_onto_x0() -> None:
    """Prediction.X0: the first output half is x0 itself; the implied noise reproduces x_t
    with q_sample, the loss is the x0 MSE, and respacing keeps the parameterisation."""
    d = GaussianDiffusion.from_schedule("linear", 1000, prediction=Prediction.X0).respaced(10)
    assert d.prediction is Prediction.X0
    g = torch.Generator().manual_seed(1)
    t = torch.tensor([0, 4, 9])
    x0 = torch.rand(3, 13, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(3, 13, 4, 4, generator=g)
    x_t = d.q_sample(x0, t, noise)
    head = x0 + 0.1 * torch.randn(3, 13, 4, 4, generator=g)
    out = d.p_mean_variance(torch.cat([head, torch.zeros_like(head)], 1), x_t, t, clip=False)
    torch.testing.assert_close(out["pred_x0"], head)
    torch.testing.assert_close(d.q_sample(head, t, out["eps"]), x_t, atol=1e-4, rtol=1e-4)
    eps_d = GaussianDiffusion.from_schedule("linear", 1000).respaced(10)
    same = eps_d.p_mean_variance(torch.cat([out["eps"], torch.zeros_like(head)], 1), x_t, t,
                                 clip=False)
    torch.testing.assert_close(same["mean"], out["mean"], atol=1e-4, rtol=1e-4)
    losses = d.training_losses(lambda x, tm: torch.cat([head, torch.zeros_like(head)], 1),
                               x0, t, noise)
    torch.testing.assert_close(losses.mse, ((head - x0) ** 2).mean(dim=(1, 2, 3)))
