"""Gaussian diffusion with a learned-range variance (improved DDPM, Nichol & Dhariwal 2021).

The process object holds the schedule and the closed forms; the network is handed in as a
callable ``model(x_t, t_model) -> (B, 2C, H, W)`` (epsilon and the variance interpolation v).
Indices ``t`` run over ``0 .. num_timesteps - 1``; index ``t`` is the paper's step ``t + 1``.

Schedule arrays are float64 numpy (as in improved-diffusion) and are gathered per batch element
into float32 tensors. :meth:`GaussianDiffusion.respaced` keeps a subset of the steps and
recomputes the betas from the kept ``alphas_cumprod`` (improved-diffusion's SpacedDiffusion), so
the learned variance is interpolated between the respaced beta and posterior variance.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from crbench.errors import UsageError

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BIN = 1.0 / 255.0  # half-width of the discretisation bin of the t=0 decoder (ADM's choice)


class BetaSchedule(enum.Enum):
    """Noise schedules: DDPM's linear one (the paper) and improved DDPM's cosine one."""

    LINEAR = "linear"
    COSINE = "cosine"


def make_betas(schedule: BetaSchedule | str, num_steps: int) -> np.ndarray:
    """Betas of ``schedule`` over ``num_steps`` steps (float64)."""
    schedule = BetaSchedule(schedule)
    if num_steps < 1:
        raise UsageError(f"diffusion_steps: got {num_steps!r}, expected an integer >= 1")
    if schedule is BetaSchedule.LINEAR:
        scale = 1000.0 / num_steps  # keeps the endpoints of T=1000 for any T
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)

    def abar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), 0.999)
                     for i in range(num_steps)], dtype=np.float64)


def space_timesteps(num_steps: int, keep: int) -> list[int]:
    """``keep`` evenly strided step indices of ``0..num_steps-1`` incl. both ends (rounded)."""
    if not 1 <= keep <= num_steps:
        raise UsageError(f"sample_steps: got {keep!r}, expected an integer in [1, {num_steps}]")
    if keep == 1:
        return [num_steps - 1]
    stride = (num_steps - 1) / (keep - 1)
    return sorted({round(i * stride) for i in range(keep)})


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor,
              logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor,
                                        log_scales: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of ``x`` in [-1, 1] under a Gaussian integrated over bins of width
    2 * BIN; the outermost bins extend to +-infinity (DDPM's decoder)."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + BIN))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - BIN))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-batch-element mean, or the ``weight``-weighted mean (``weight`` broadcasts to
    ``x``; an element whose weights are all zero gives 0)."""
    dims = tuple(range(1, x.ndim))
    if weight is None:
        return x.mean(dim=dims)
    weight = weight.expand_as(x).to(x.dtype)
    return (x * weight).sum(dim=dims) / weight.sum(dim=dims).clamp(min=1e-12)


class ClipRange(enum.Enum):
    """What sampling clips the x0 estimate to.

    FULL: [-1, 1], the whole reflectance range [0, 1] (ADM's clip).
    DATA: the per-band range of the clear training targets. Early in the reverse process the
        x0 estimate is mostly noise; clipped to a range whose centre (reflectance 0.5) lies far
        from the data (clear land near 0.1), it is biased towards bright, cloud-like values.
    """

    FULL = "full"
    DATA = "data"


class Prediction(enum.Enum):
    """What the first half of the network's output estimates (its parameterisation).

    EPS: the noise epsilon of x_t (DDPM, improved DDPM and the paper); L_simple is the noise
        MSE, which in x0 units weighs a step by its signal-to-noise ratio abar / (1 - abar),
        so the high-noise steps, where the layout of a region no date sees must come from S1,
        carry almost no weight.
    X0: the clean image x_0 itself (DDPM's other parameterisation, Ho et al. 2020 Sec. 3.2);
        L_simple is the x0 MSE, the same weight at every step.
    EDM: a preconditioned output F (Karras et al. 2022, "Elucidating the Design Space of
        Diffusion-Based Generative Models", Table 1, written for this variance-preserving
        process): x0 = mu + c_skip (x_t - sqrt(abar) mu) + c_out F with c_skip =
        sqrt(abar) s^2 / (abar s^2 + 1 - abar) and c_out = sqrt(1 - abar) s / sqrt(abar s^2 +
        1 - abar), ``mu`` the per-band data mean and ``s`` the scale ``precond_sigma``. L_simple
        is the MSE of F, whose target has unit variance at every step: the estimate is x0's
        where the noise exceeds s and the noise's where it is below, so both the steps that
        set a region's layout and the last denoising steps are trained.
    """

    EPS = "eps"
    X0 = "x0"
    EDM = "edm"


class SampleVariance(enum.Enum):
    """The variance of each reverse step while sampling.

    LEARNED: improved DDPM's interpolation between the posterior variance and beta (the
        paper); it is trained by the VLB term alone (weight lambda = 0.001), so a briefly
        trained model keeps its initial midpoint, which at respaced steps injects far more
        noise than the next step removes (the fill turns to per-pixel noise).
    POSTERIOR: the posterior variance beta-tilde_t (DDPM's lower bound), whatever the model
        predicts.
    """

    LEARNED = "learned"
    POSTERIOR = "posterior"


@dataclass
class Losses:
    """Per-element training losses: ``loss = mse + vb_weight * vb``."""

    loss: torch.Tensor
    mse: torch.Tensor
    vb: torch.Tensor


class GaussianDiffusion:
    """Closed forms of a diffusion process with learned-range variance and epsilon prediction.

    Args:
        betas: the per-step betas (float64).
        timestep_map: the original step index of each step (respaced processes); the network
            is called with these. Defaults to ``0..len(betas)-1``.
        lambda_vlb: weight of L_vlb in the hybrid loss (improved DDPM: 0.001).
        clip_denoised: clip the predicted x0 to the data range in the reverse process.
        clip_bounds: per-channel (low, high) in data units ([-1, 1]) that ``clip_denoised``
            clips the x0 estimate to; None: [-1, 1].
        sample_variance: the variance of a reverse step (:class:`SampleVariance`).
        prediction: what the network estimates (:class:`Prediction`).
        data_mean: per-channel data mean ``mu`` of ``Prediction.EDM`` (None: 0).
        precond_sigma: the scale ``s`` of ``Prediction.EDM`` (> 0).
    """

    def __init__(self, betas: np.ndarray, timestep_map: list[int] | None = None,
                 lambda_vlb: float = 0.001, clip_denoised: bool = True,
                 clip_bounds: tuple[list[float], list[float]] | None = None,
                 sample_variance: SampleVariance | str = SampleVariance.LEARNED,
                 prediction: Prediction | str = Prediction.EPS,
                 data_mean: list[float] | None = None, precond_sigma: float = 0.05) -> None:
        b = np.asarray(betas, dtype=np.float64)
        if b.ndim != 1 or not ((b > 0) & (b <= 1)).all():
            raise UsageError("betas: expected a 1-D array with values in (0, 1]")
        self.betas = b
        self.num_timesteps = len(b)
        self.timestep_map = list(range(len(b))) if timestep_map is None else list(timestep_map)
        self.lambda_vlb = float(lambda_vlb)
        self.clip_denoised = clip_denoised
        self.sample_variance = SampleVariance(sample_variance)
        self.prediction = Prediction(prediction)
        self.data_mean = None if data_mean is None else [float(v) for v in data_mean]
        if not precond_sigma > 0:
            raise UsageError(f"precond_sigma: got {precond_sigma!r}, expected a number > 0")
        self.precond_sigma = float(precond_sigma)
        self.clip_bounds = None if clip_bounds is None else (
            [float(v) for v in clip_bounds[0]], [float(v) for v in clip_bounds[1]])
        alphas = 1.0 - b
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        self.posterior_variance = b * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # the posterior variance is 0 at t=0; its log is clipped to the value at t=1
        pv1 = self.posterior_variance[1] if len(b) > 1 else b[0]
        self.posterior_log_variance_clipped = np.log(np.append(pv1, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = (b * np.sqrt(self.alphas_cumprod_prev)
                                     / (1.0 - self.alphas_cumprod))
        self.posterior_mean_coef2 = ((1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas)
                                     / (1.0 - self.alphas_cumprod))
        self.log_betas = np.log(b)
        self._tables: dict[tuple[object, torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def from_schedule(cls, schedule: BetaSchedule | str, num_steps: int,
                      **kwargs: float | bool) -> GaussianDiffusion:
        """A process with ``num_steps`` steps of ``schedule``."""
        return cls(make_betas(schedule, num_steps), **kwargs)  # type: ignore[arg-type]

    def respaced(self, steps: int) -> GaussianDiffusion:
        """The process restricted to ``steps`` evenly spaced steps (SpacedDiffusion)."""
        keep = set(space_timesteps(self.num_timesteps, int(steps)))
        betas, tmap, last = [], [], 1.0
        for i, abar in enumerate(self.alphas_cumprod):
            if i in keep:
                betas.append(1.0 - abar / last)
                last = abar
                tmap.append(self.timestep_map[i])
        return GaussianDiffusion(np.array(betas), tmap, self.lambda_vlb, self.clip_denoised,
                                 self.clip_bounds, self.sample_variance, self.prediction,
                                 self.data_mean, self.precond_sigma)

    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0`` clipped to the data range: ``clip_bounds`` per channel, else [-1, 1]."""
        if self.clip_bounds is None:
            return x0.clamp(-1.0, 1.0)
        shape = (1, -1, *([1] * (x0.ndim - 2)))
        lo, hi = (self._table(key, b, x0.device, x0.dtype).reshape(shape)
                  for key, b in zip(("clip_low", "clip_high"), self.clip_bounds, strict=True))
        return torch.minimum(torch.maximum(x0, lo), hi)

    # ---- helpers -------------------------------------------------------------------------
    def _table(self, key: object, values: np.ndarray | list[float] | list[int],
               device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``values`` as a tensor on ``device``, built once per (key, device, dtype): a tensor
        made from host data inside the sampling loop would be a host-to-device copy, and a
        stream synchronisation, at every step on CUDA."""
        cache_key = (key, device, dtype)
        table = self._tables.get(cache_key)
        if table is None:
            table = self._tables[cache_key] = torch.as_tensor(values, device=device).to(dtype)
        return table

    def _gather(self, arr: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``arr[t]`` as a (B, 1, ..., 1) tensor of ``like``'s dtype (tables cached per device)."""
        table = self._table(id(arr), arr, t.device, like.dtype)
        return table[t].reshape(-1, *([1] * (like.ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The original step indices the network is conditioned on."""
        return self._table("timestep_map", self.timestep_map, t.device, torch.long)[t]

    # ---- forward process -----------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) with the given standard-normal ``noise``."""
        return (self._gather(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (self._gather(self.posterior_mean_coef1, t, x_t) * x0
                + self._gather(self.posterior_mean_coef2, t, x_t) * x_t)
        return (mean, self._gather(self.posterior_variance, t, x_t),
                self._gather(self.posterior_log_variance_clipped, t, x_t))

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 implied by x_t and the noise estimate ``eps``."""
        return (self._gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                - self._gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The noise implied by x_t and the estimate ``x0``."""
        return ((self._gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0)
                / self._gather(self.sqrt_recipm1_alphas_cumprod, t, x_t))

    def _precond(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``Prediction.EDM``'s skipped part of the x0 estimate, mu + c_skip (x_t -
        sqrt(abar) mu), and c_out at steps ``t``."""
        a = self._gather(self.sqrt_alphas_cumprod, t, x_t)
        s = self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_t)
        sig = self.precond_sigma
        mu = (torch.zeros((), device=x_t.device, dtype=x_t.dtype) if self.data_mean is None
              else self._table("data_mean", self.data_mean, x_t.device, x_t.dtype)
              .reshape(1, -1, *([1] * (x_t.ndim - 2))))
        den2 = a * a * sig**2 + s * s
        skip = mu + a * sig**2 / den2 * (x_t - a * mu)
        return skip, s * sig / den2.sqrt()

    def x0_from_head(self, head: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (unclipped) x0 estimate and the noise it implies, from the network's first
        output half under ``prediction``."""
        if self.prediction is Prediction.EPS:
            return self.predict_x0(x_t, t, head), head
        if self.prediction is Prediction.X0:
            return head, self.predict_eps(x_t, t, head)
        skip, c_out = self._precond(x_t, t)
        x0 = skip + c_out * head
        return x0, self.predict_eps(x_t, t, x0)

    def regression_target(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                          noise: torch.Tensor) -> torch.Tensor:
        """What L_simple regresses the first output half onto under ``prediction``."""
        if self.prediction is Prediction.EPS:
            return noise
        if self.prediction is Prediction.X0:
            return x0
        skip, c_out = self._precond(x_t, t)
        return (x0 - skip) / c_out

    # ---- reverse process -----------------------------------------------------------------
    def p_mean_variance(self, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        clip: bool | None = None) -> dict[str, torch.Tensor]:
        """Mean, log-variance and x_0 estimate of p(x_{t-1} | x_t) from the network output.

        ``clip`` (default: ``clip_denoised``) clips the x_0 estimate to [-1, 1]; sampling
        clips, the training VLB does not (improved-diffusion trains its VLB unclipped). ``eps``
        is the noise estimate before any clipping (under ``Prediction.X0`` and ``EDM`` the one
        implied by the unclipped x_0 estimate)."""
        head, v = model_out.float().chunk(2, dim=1)
        min_log = self._gather(self.posterior_log_variance_clipped, t, x_t)
        max_log = self._gather(self.log_betas, t, x_t)
        frac = (v + 1.0) / 2.0
        log_var = frac * max_log + (1.0 - frac) * min_log
        x0, eps = self.x0_from_head(head, x_t, t)
        if self.clip_denoised if clip is None else clip:
            x0 = self._clip(x0)
        mean, _, _ = self.q_posterior(x0, x_t, t)
        return {"mean": mean, "log_variance": log_var, "pred_x0": x0, "eps": eps}

    def p_sample(self, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """One reverse step: x_{t-1} = mean + sigma * noise (no noise at t = 0); sigma^2 as
        ``sample_variance`` says."""
        out = self.p_mean_variance(model_out, x_t, t)
        nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        log_var = out["log_variance"]
        if self.sample_variance is SampleVariance.POSTERIOR:
            log_var = self._gather(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
        out["sample"] = out["mean"] + nonzero * torch.exp(0.5 * log_var) * noise
        return out

    # ---- losses --------------------------------------------------------------------------
    def vb_terms(self, model_out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
                 t: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """L_t in bits per dimension: KL to the true posterior (t > 0) or the discretised
        decoder NLL (t = 0); per batch element (``weight``: per-pixel weights of the mean).
        The x_0 estimate is not clipped here (only sampling clips)."""
        true_mean, _, true_logvar = self.q_posterior(x0, x_t, t)
        out = self.p_mean_variance(model_out, x_t, t, clip=False)
        kl = _mean_flat(normal_kl(true_mean, true_logvar, out["mean"], out["log_variance"]),
                        weight)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(
            x0, out["mean"], 0.5 * out["log_variance"]), weight)
        return torch.where(t == 0, nll, kl) / math.log(2.0)

    def training_losses(self, model: Model, x0: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor, x_t: torch.Tensor | None = None,
                        weight: torch.Tensor | None = None) -> Losses:
        """Hybrid loss L_simple + lambda * L_vlb (per batch element).

        L_vlb = T * E_t[L_t]; its gradient reaches only the variance (the predicted mean is
        detached), as in improved DDPM. ``x_t`` overrides ``q_sample(x0, t, noise)`` (SeqTIS
        trains on fused states); the regression target is ``noise`` (``Prediction.X0``:
        ``x0``; ``EDM``: the F that gives ``x0`` from ``x_t``). ``weight`` ((B, 1, H, W),
        broadcast over channels) restricts both terms to a region: each is the weighted mean
        over the pixels, 0 for an element with no weight.
        """
        if x_t is None:
            x_t = self.q_sample(x0, t, noise)
        out = model(x_t, self.model_timesteps(t)).float()
        head, v = out.chunk(2, dim=1)
        mse = _mean_flat((self.regression_target(x0, x_t, t, noise) - head) ** 2, weight)
        vb = self.vb_terms(torch.cat([head.detach(), v], dim=1), x0, x_t, t, weight)
        vb = vb * (self.lambda_vlb * self.num_timesteps)
        return Losses(loss=mse + vb, mse=mse, vb=vb)

    def sample_t(self, batch: int, device: torch.device,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform training time steps."""
        return torch.randint(0, self.num_timesteps, (batch,), device=device, generator=generator)
