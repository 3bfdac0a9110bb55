"""SeqDMs training made sound: the unclipped VLB, the Eq. 28 loss region and its VLB target,
the literal unknown state, the target date's S1 in Eq. 27, EMA warm-up, the paper preset's
epochs, the validation columns of history.csv and sampling's clip to the data range."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from crbench.api import Inputs, collate
from crbench.data.dataset import SEN12MSCRTS
from crbench.data.io import read_s1, scale_s1
from crbench_methods.seqdm import PRESETS, SeqDM
from crbench_methods.seqdm.diffusion import GaussianDiffusion, Prediction
from crbench_methods.seqdm.seqtis import (
    Fusion,
    LossRegion,
    UnknownState,
    fuse_clean,
    fused_training_state,
    loss_sequence,
    region_mask,
)
from crbench_methods.seqdm.train import Trainer, prepare_batch

DIFF = GaussianDiffusion.from_schedule("linear", 100)


def _kl_reference(out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: int) -> float:
    """Mean KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) in bits, float64, no clipping."""
    b, ab, ab_prev = DIFF.betas[t], DIFF.alphas_cumprod[t], DIFF.alphas_cumprod[t - 1]
    eps, v = (o.double().numpy() for o in out.chunk(2, dim=1))
    xt, x0d = x_t.double().numpy(), x0.double().numpy()
    pv = b * (1 - ab_prev) / (1 - ab)

    def post_mean(x: np.ndarray) -> np.ndarray:
        return (b * math.sqrt(ab_prev) / (1 - ab)) * x + (
            (1 - ab_prev) * math.sqrt(1 - b) / (1 - ab)) * xt

    x0_hat = (xt - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    logvar = (v + 1) / 2 * math.log(b) + (1 - (v + 1) / 2) * math.log(pv)
    kl = 0.5 * (-1 + logvar - math.log(pv) + pv / np.exp(logvar)
                + (post_mean(x0d) - post_mean(x0_hat)) ** 2 / np.exp(logvar))
    return float(kl.mean() / math.log(2))


def test_training_vlb_does_not_clip_the_x0_estimate() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(1, 3, 4, 4, generator=g)
    t = torch.tensor([60])
    out = torch.cat([noise - 3.0, torch.rand(1, 3, 4, 4, generator=g) * 2 - 1], dim=1)
    x_t = DIFF.q_sample(x0, t, noise)
    assert DIFF.predict_x0(x_t, t, out[:, :3]).abs().max() > 1.5  # clipping would change it
    vb = DIFF.training_losses(lambda x, tm: out, x0, t, noise).vb / (DIFF.lambda_vlb * 100)
    assert math.isclose(float(vb), _kl_reference(out, x0, x_t, 60), rel_tol=1e-4)
    # sampling still clips, and a clipped x0 would have given another VLB
    clipped = DIFF.p_mean_variance(out, x_t, t)
    assert clipped["pred_x0"].abs().max() <= 1.0
    unclipped = DIFF.p_mean_variance(out, x_t, t, clip=False)
    assert not torch.allclose(clipped["mean"], unclipped["mean"])


def _seq_case(seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2, 13, 4, 4, generator=g) * 2 - 1
    s2 = torch.rand(2, 3, 13, 4, 4, generator=g) * 2 - 1
    s1 = torch.rand(2, 3, 2, 4, 4, generator=g) * 2 - 1
    clear = (torch.rand(2, 3, 1, 4, 4, generator=g) > 0.6).float()
    clear[:, :, :, 0, 0] = 0.0  # at least one unknown pixel
    clear[:, 0, :, 3, 3] = 1.0  # at least one known pixel
    return x0, s2, s1, clear, torch.tensor([10, 70])


def _losses(out: torch.Tensor, region: LossRegion, shared: bool = False,
            unknown: UnknownState = UnknownState.TARGET) -> torch.Tensor:
    x0, s2, s1, clear, t = _seq_case()
    losses = loss_sequence(DIFF, lambda x, a, tm: out, x0, s2, s1, clear, t,
                           shared_noise=shared, region=region, unknown=unknown,
                           generator=torch.Generator().manual_seed(5))
    return torch.stack([losses.mse, losses.vb])


def test_unknown_region_loss_ignores_the_known_pixels() -> None:
    clear = _seq_case()[3]
    known = region_mask(clear).bool().expand(-1, 26, -1, -1)
    out = torch.randn(2, 26, 4, 4, generator=torch.Generator().manual_seed(2))
    changed_known = out.clone()
    changed_known[known] += 1.0
    changed_unknown = out.clone()
    changed_unknown[~known] += 1.0
    base = _losses(out, LossRegion.UNKNOWN)
    torch.testing.assert_close(_losses(changed_known, LossRegion.UNKNOWN), base)
    assert (_losses(changed_unknown, LossRegion.UNKNOWN) != base).all()
    assert (_losses(changed_known, LossRegion.ALL) != _losses(out, LossRegion.ALL)).all()


def test_shared_noise_vlb_is_taken_against_the_composite_image() -> None:
    x0, s2, _, clear, t = _seq_case()
    eps = torch.randn(2, 13, 4, 4, generator=torch.Generator().manual_seed(3))
    x_t = fused_training_state(DIFF, x0, s2, clear, t, eps, fusion=Fusion.NOISE_THEN_FUSE,
                               shared_noise=True, s=1e-8)
    known = region_mask(clear)
    composite = known * fuse_clean(s2, clear, 1e-8) + (1 - known) * x0
    # with one noise draw for every date the state is exactly q(x_t | composite)
    torch.testing.assert_close(x_t, DIFF.q_sample(composite, t, eps), atol=1e-6, rtol=0)
    out = torch.cat([eps, torch.zeros_like(eps)], dim=1)  # the exact noise, mid variance
    x0_s, s2_s, s1_s, clear_s, t_s = _seq_case()
    gen = torch.Generator().manual_seed(5)
    vb = loss_sequence(DIFF, lambda x, a, tm: out, x0_s, s2_s, s1_s, clear_s, t_s,
                       shared_noise=True, generator=gen).vb
    gen = torch.Generator().manual_seed(5)
    eps_hat = torch.randn(x0.shape, generator=gen)
    state = fused_training_state(DIFF, x0, s2, clear, t, eps_hat,
                                 fusion=Fusion.NOISE_THEN_FUSE, shared_noise=True, s=1e-8)
    want = DIFF.vb_terms(out, composite, state, t) * DIFF.lambda_vlb * 100
    torch.testing.assert_close(vb, want)


def test_literal_unknown_state_is_noise_independent_of_the_target() -> None:
    x0, s2, _, clear, t = _seq_case()
    eps = torch.randn(2, 13, 4, 4, generator=torch.Generator().manual_seed(4))
    unknown = ~region_mask(clear).bool().expand_as(x0)

    def state(target: torch.Tensor, kind: UnknownState) -> torch.Tensor:
        return fused_training_state(DIFF, target, s2, clear, t, eps, fusion=Fusion.NOISE_THEN_FUSE,
                                    shared_noise=False, s=1e-8, unknown=kind,
                                    generator=torch.Generator().manual_seed(6))

    assert torch.equal(state(x0, UnknownState.NOISE)[unknown],
                       state(-x0, UnknownState.NOISE)[unknown])
    assert not torch.equal(state(x0, UnknownState.TARGET)[unknown],
                           state(-x0, UnknownState.TARGET)[unknown])


def test_eq27_pairs_the_target_with_its_own_s1(synth_root: Path) -> None:
    ds = SEN12MSCRTS(synth_root, split="train", L=3, sampler="random", seed=0, target_s1=True)
    sample = ds[0]
    rec = next(r for r in ds.records if r.roi == sample.meta.roi and r.patch == sample.meta.patch)
    want = scale_s1(read_s1(rec.s1[sample.meta.target_idx]).array)
    assert sample.target_s1 is not None
    np.testing.assert_array_equal(sample.target_s1.numpy(), want)
    batch = prepare_batch(collate([sample, ds[1]]), torch.device("cpu"))
    torch.testing.assert_close(batch.a0[0], sample.target_s1 * 2 - 1)
    plain = SEN12MSCRTS(synth_root, split="train", L=3, sampler="random", seed=0)
    assert plain[0].target_s1 is None and collate([plain[0]]).target_s1 is None


def test_ema_warms_up_then_keeps_its_decay() -> None:
    m = SeqDM(preset="tiny", ema_decay=0.99)
    trainer = Trainer(m.net, m.diffusion, m.config, torch.device("cpu"))
    rates = []
    for n in (0, 10, 100, 10_000):
        trainer.optimizer_steps = n
        rates.append(trainer.ema_rate())
    assert rates[0] == pytest.approx(0.1) and rates[1] == pytest.approx(11 / 20)
    assert rates[2] == pytest.approx(101 / 110) and rates[3] == 0.99
    m.config["ema_warmup"] = False
    assert Trainer(m.net, m.diffusion, m.config, torch.device("cpu")).ema_rate() == 0.99


def test_paper_preset_is_the_full_network_with_batch_1_for_10_epochs() -> None:
    paper, full = PRESETS["paper"], PRESETS["full"]
    assert paper["batch_size"] == 1 and paper["epochs"] == 10 and paper["train_steps"] is None
    assert {k: v for k, v in paper.items() if k not in ("batch_size", "epochs", "train_steps")} \
        == {k: v for k, v in full.items() if k not in ("batch_size", "epochs", "train_steps")}


def _history(path: Path) -> list[dict[str, str]]:
    with (path / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_epochs_set_the_iterations_and_validation_is_logged(synth_root: Path,
                                                            tmp_path: Path) -> None:
    n_train = len(SEN12MSCRTS(synth_root, split="train", L=3, sampler="random"))
    m = SeqDM(preset="tiny", train_steps=None, epochs=2, batch_size=2, ckpt_every=1,
              val_sample_steps=2)
    m.fit(synth_root, tmp_path, crop=16, progress=False)
    rows = _history(tmp_path)
    iterations = 2 * math.ceil(n_train / 2)
    assert [int(r["iteration"]) for r in rows] == list(range(iterations + 1))
    for r in rows:  # a validation at the start and after every iteration
        assert 0 < float(r["val_nrmse_cloudy"]) < 1 and math.isfinite(float(r["val_psnr"]))
        # mean over samples of PSNR: at least the PSNR of the mean NRMSE (Jensen)
        assert float(r["val_psnr_cloudy"]) >= -20 * math.log10(float(r["val_nrmse_cloudy"]))
        assert all(float(r[f"val_eps_q{k}"]) > 0 for k in range(1, 5))
    with pytest.raises(Exception, match="epochs"):
        SeqDM(preset="tiny", train_steps=None, epochs=0).fit(synth_root, tmp_path / "x",
                                                              crop=16, progress=False)


def test_sampling_clips_x0_to_the_training_range_and_keeps_the_known_pixels() -> None:
    low, high = [-0.9 + 0.01 * k for k in range(13)], [-0.5 + 0.02 * k for k in range(13)]
    diff = GaussianDiffusion.from_schedule("linear", 100, clip_bounds=(low, high))
    x_t = torch.randn(2, 13, 4, 4) * 3
    out = torch.randn(2, 26, 4, 4, generator=torch.Generator().manual_seed(0)) * 5
    x0 = diff.p_mean_variance(out, x_t, torch.tensor([50, 99]))["pred_x0"]
    lo, hi = torch.tensor(low).reshape(1, -1, 1, 1), torch.tensor(high).reshape(1, -1, 1, 1)
    assert (x0 >= lo).all() and (x0 <= hi).all()
    assert (x0 == lo.expand_as(x0)).any() and (x0 == hi.expand_as(x0)).any()
    assert diff.respaced(10).clip_bounds == diff.clip_bounds
    full = GaussianDiffusion.from_schedule("linear", 100)
    assert full.p_mean_variance(out, x_t, torch.tensor([50, 99]))["pred_x0"].max() == 1.0
    # the training VLB never clips
    unclipped = diff.p_mean_variance(out, x_t, torch.tensor([50, 99]), clip=False)["pred_x0"]
    assert unclipped.abs().max() > 1.0
    # a model with a data range still copies the known pixels and returns [0, 1]
    m = SeqDM(preset="tiny", sample_steps=3)
    m.set_band_range(low, high)
    g = torch.Generator().manual_seed(3)
    masks = (torch.rand(1, 3, 16, 16, generator=g) > 0.5).float()
    inputs = Inputs(s2=torch.rand(1, 3, 13, 16, 16, generator=g),
                    s1=torch.rand(1, 3, 2, 16, 16, generator=g), masks=masks,
                    coverage=masks.mean(dim=(-2, -1)), days=torch.zeros(1, 3, dtype=torch.long))
    pred = m.predict(inputs)
    clear = (1 - masks.double()).unsqueeze(2)
    avg = (inputs.s2.double() * clear).sum(1) / clear.sum(1).clamp(min=1)
    known = (clear.sum(1) > 0).expand_as(avg)
    assert torch.allclose(pred.double()[known], avg[known], atol=1e-6)
    assert (~known).any() and pred.min() >= 0 and pred.max() <= 1
    # the last reverse step returns the clipped x0 estimate where no date is clear
    fill = pred.double().permute(1, 0, 2, 3)[~known.permute(1, 0, 2, 3)].reshape(13, -1)
    assert (fill >= (lo.reshape(13, 1).double() + 1) / 2 - 1e-6).all()
    assert (fill <= (hi.reshape(13, 1).double() + 1) / 2 + 1e-6).all()


def test_fit_sets_the_range_from_the_train_split_and_loads_old_checkpoints(
        synth_root: Path, tmp_path: Path) -> None:
    m = SeqDM(preset="tiny", val_batches=0)
    m.fit(synth_root, tmp_path / "a", steps=1, crop=16, progress=False)
    ds = SEN12MSCRTS(synth_root, split="train", L=3, sampler="random", seed=0, crop=16)
    assert len(ds) < 64  # so the statistics take 64 draws over several epochs
    draws = []
    for k in range(64):
        ds.set_epoch(k // len(ds))
        draws.append(ds[k % len(ds)].target)
    x = torch.stack(draws) * 2 - 1
    first = torch.stack([draws[i] for i in range(len(ds))]) * 2 - 1
    assert (x.mean(dim=(0, 2, 3)) - first.mean(dim=(0, 2, 3))).abs().max() > 1e-3
    low = (x.amin(dim=(0, 2, 3)) - 0.05).clamp(min=-1)
    high = (x.amax(dim=(0, 2, 3)) + 0.05).clamp(max=1)
    np.testing.assert_allclose(m.config["band_range"], [low.numpy(), high.numpy()], atol=1e-4)
    # the EDM estimate's mu: the per-band mean of the same targets
    np.testing.assert_allclose(m.config["band_mean"], x.mean(dim=(0, 2, 3)).numpy(), atol=1e-4)
    loaded = SeqDM.load(tmp_path / "a")
    assert loaded.diffusion.clip_bounds == tuple(m.config["band_range"])
    assert loaded.diffusion.data_mean == m.config["band_mean"]
    assert loaded.diffusion.prediction is Prediction.EDM  # the tiny preset's
    cfg_path = tmp_path / "a" / "config.json"
    old = {k: v for k, v in json.loads(cfg_path.read_text()).items()
           if k not in ("clip_range", "band_range")}
    cfg_path.write_text(json.dumps(old))  # a checkpoint from before the data range
    assert SeqDM.load(tmp_path / "a").diffusion.clip_bounds is None


def test_posterior_sample_variance_ignores_the_learned_interpolation() -> None:
    from crbench_methods.seqdm.diffusion import SampleVariance

    x_t = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    out = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(8))
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    t = torch.tensor([40, 70])
    learned = DIFF.p_sample(out, x_t, t, noise)
    post = GaussianDiffusion.from_schedule("linear", 100,
                                           sample_variance=SampleVariance.POSTERIOR)
    fixed = post.p_sample(out, x_t, t, noise)
    torch.testing.assert_close(fixed["mean"], learned["mean"])  # same mean, other sigma
    sigma = torch.as_tensor(np.sqrt(DIFF.posterior_variance[[40, 70]]),
                            dtype=torch.float32).reshape(2, 1, 1, 1)
    torch.testing.assert_close(fixed["sample"], fixed["mean"] + sigma * noise)
    assert not torch.allclose(learned["sample"], fixed["sample"])
    assert post.respaced(10).sample_variance is SampleVariance.POSTERIOR
    assert SeqDM(preset="tiny").diffusion.sample_variance is SampleVariance.POSTERIOR
    assert PRESETS["full"]["sample_variance"] == PRESETS["paper"]["sample_variance"] == "learned"


def test_clean_aux_condition_gives_the_network_s1_undiffused() -> None:
    from crbench_methods.seqdm.seqtis import AuxCondition, fuse_aux, loss_clear

    g = torch.Generator().manual_seed(3)
    s1 = torch.rand(2, 3, 2, 4, 4, generator=g) * 2 - 1  # (B, L, 2, H, W)
    t = torch.tensor([90, 99])
    clean = fuse_aux(DIFF, s1, t, Fusion.NOISE_THEN_FUSE, g, AuxCondition.CLEAN)
    torch.testing.assert_close(clean, s1.mean(dim=1))
    diffused = fuse_aux(DIFF, s1, t, Fusion.NOISE_THEN_FUSE, g)
    assert (diffused - s1.mean(dim=1)).abs().mean() > 0.3  # near noise at t = 90, 99
    seen: list[torch.Tensor] = []

    def net(x: torch.Tensor, a: torch.Tensor, tm: torch.Tensor) -> torch.Tensor:
        seen.append(a)
        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

    x0, a0 = torch.rand(2, 3, 4, 4, generator=g), s1[:, 0]
    loss_clear(DIFF, net, x0, a0, t, g, AuxCondition.CLEAN)
    loss_clear(DIFF, net, x0, a0, t, g)
    torch.testing.assert_close(seen[0], a0)
    assert (seen[1] - a0).abs().mean() > 0.3
    # the paper's MmDM for the full-size presets; the CPU preset conditions on clean S1
    assert PRESETS["full"]["aux_condition"] == PRESETS["paper"]["aux_condition"] == "diffused"
    assert PRESETS["tiny"]["aux_condition"] == "clean"


def test_band_stats_spread_draws_over_a_long_split() -> None:
    """A split longer than n_samples: the draws are spread over all of it, not its head (on
    real data the head would be the first ROIs only)."""
    from types import SimpleNamespace

    from crbench_methods.seqdm.train import band_stats

    ds = [SimpleNamespace(target=torch.full((13, 2, 2), i / 100)) for i in range(100)]
    low, high, mean = band_stats(ds, n_samples=4, margin=0.0)  # type: ignore[arg-type]
    # items 0, 25, 50 and 75, in [-1, 1] units
    np.testing.assert_allclose(mean, [2 * 0.375 - 1] * 13, atol=1e-4)
    np.testing.assert_allclose(low, [-1.0] * 13, atol=1e-4)
    np.testing.assert_allclose(high, [0.5] * 13, atol=1e-4)
