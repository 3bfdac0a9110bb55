"""SeqDMs: sequential-based diffusion models for cloud removal.

Zhao, X.; Jia, K. "Cloud Removal in Remote Sensing Using Sequential-Based Diffusion Models".
Remote Sensing 2023, 15(11), 2861. doi:10.3390/rs15112861.

Two parts, kept in separate modules:

- MmDM (:mod:`.network`, :mod:`.diffusion`): an ADM U-Net predicts the noise (and the
  learned-range variance) of the main modality X (13 S2 bands) from the noisy X_t and the noisy
  auxiliary modality A_t (2 S1 bands); improved-DDPM diffusion with the hybrid loss.
- SeqTIS (:mod:`.seqtis`, :mod:`.train`): sequential data fusion (Eq. 19-23), conditional
  inference for any sequence length L (Algorithm 1) and the temporal training strategy
  (Algorithm 2: a step on a cloud-free image, Eq. 27, then a step on the fused cloudy sequence,
  Eq. 28). One checkpoint serves every L.

Registered variants: ``seqdm`` (the paper) and ``seqdm_no_tts`` (trained with Eq. 27 only,
``temporal_training=False``: the ablation of the paper's Table 4).

Where the paper is loose or unsound, the alternatives offered. The defaults are the paper's
reading except where it measurably fails; README "SeqDMs" has the measured comparison
(``scripts/compare_seqdm_variants.py``):

- Fusion order (config ``fusion``). The paper diffuses each date and then averages
  (``"noise-then-fuse"``, default): a pixel clear on k dates then carries noise variance
  (1 - abar_t) / k, not the 1 - abar_t of q(x_t | x_0), and the averaged S1 condition has
  variance (1 - abar_t) / L at inference although Eq. 27 trains on one noised S1.
  ``"fuse-then-noise"`` averages the clean dates first and diffuses once, so every state
  matches q(x_t | x_0) exactly.
- Where Eq. 28's loss is taken (config ``seq_loss_region``; a deviation by default).
  Algorithm 2 regresses the cloudy-sequence step onto eps_hat, the noise of the clear target,
  over every pixel, while the known region M was noised with other, independent draws
  (``"all"``, the literal reading): there the noise in the input is uncorrelated with the
  target (measured correlation 0.00), the squared error has a floor of 1 and its optimum is
  eps = 0, and the network, which has no mask input, learns to shrink its estimate
  everywhere; the VLB, taken against the target while M holds other dates, reads their
  temporal change as variance and pushes the learned variance far outside [posterior, beta],
  so respaced sampling fills clouds with noise. ``"unknown"`` (default) takes both terms over
  the pixels outside M only, where X~_t is exactly the target diffused with eps_hat: the pixels
  Algorithm 1 asks the network for.
- Noise of Eq. 28 (config ``shared_noise``, default ``False``). ``True`` noises every date's
  known region with eps_hat, so the regression target is the noise actually present
  everywhere (X~_t is then q(x_t | composite) for the composite of the fused clear dates and
  the target, which the VLB is taken against); at inference one draw is shared by all dates.
- Unknown region of Eq. 28's input (config ``seq_unknown``). ``"target"`` (default): the clear
  target diffused with eps_hat, the state Algorithm 1 meets with its own trajectory replaced by
  the truth, the only reading with an informative target there (a deviation from the text).
  ``"noise"``: pure N(0, I) as the paper writes it.
- Clipping of the x0 estimate while sampling (config ``clip_range``). ADM clips to [-1, 1]
  (``"full"``). Early in the reverse process the estimate is mostly noise, and clipping it to a
  range centred on reflectance 0.5, far from clear land (near 0.1), biases the fill towards
  bright, cloud-like values. ``"data"`` (default) clips each band to the range of the clear
  training targets (``band_range``, set by ``fit`` from up to 64 training samples, 0.05
  margin). The training VLB never clips (as improved-diffusion).
- Variance of the reverse steps (config ``sample_variance``, a runtime key). ``"learned"``
  (the paper, improved DDPM; the ``full`` and ``paper`` presets) interpolates between the
  posterior variance and beta with the network's v, which only the VLB term (weight 0.001)
  trains: a briefly trained model keeps v near its initial 0, and at respaced steps that
  injects more noise than the next step removes. ``"posterior"`` (the ``tiny`` preset) uses the
  posterior variance; on the demo's tree it turns a per-pixel-noise fill into a smooth one.
- The S1 condition (config ``aux_condition``). MmDM diffuses S1 to the same step as X_t
  (``"diffused"``, the paper; the ``full`` and ``paper`` presets), so near pure noise the
  network sees almost nothing of S1. ``"clean"`` (the ``tiny`` preset) hands it the clean S1
  (averaged over the L dates at inference), as conditional diffusion models usually do; on
  the demo's tree after 350 tiny iterations it scores nrmse_cloudy 0.063 against 0.070
  (README "SeqDMs").
- What the network estimates (config ``prediction``): the noise (``"eps"``, the paper; the
  ``full`` and ``paper`` presets), the clean image (``"x0"``) or an EDM-preconditioned
  output (``"edm"``, Karras et al. 2022; the ``tiny`` preset). The noise loss weighs a step by
  its signal-to-noise ratio, and clear reflectances vary little (std about 0.16 in [-1, 1]),
  so the steps where S1 must set the layout of a region no date sees barely count: an eps
  model fills such a region with a mottled texture. An x0 model follows the S1 layout but
  leaves blob and stripe artefacts, and its scores vary widely with the initial weights.
  ``"edm"`` estimates x0 = mu + c_skip (x_t - sqrt(abar) mu) + c_out F, with mu the
  per-band mean of the clear training targets (``band_mean``, set by ``fit`` with
  ``band_range``) and the scale ``precond_sigma`` (0.05): x0-like at high noise, eps-like at
  low noise. On the demo's tree after 500 tiny iterations it scores as eps does (nrmse_cloudy
  0.057 to 0.065 over three initial seeds, eps 0.060 to 0.066) but draws water and land where
  S1 shows them (README "SeqDMs"). ``precond_sigma`` 0.164 (the targets' own std, as EDM
  sets it) leaves per-pixel colour noise, 0.02 blob artefacts.
- Eq. 27's S1 image A_0 is the target date's own S1 (SEN12MS-CR-TS has S1 for every date;
  the dataset reads it only for training, with ``target_s1=True``).
- Hybrid loss: L_vlb = T * E_t[L_t] (bits/dim), so lambda * L_vlb = lambda * T * L_t, i.e.
  L_simple + L_t at T = 1000, as in improved DDPM.
- Presets: ``paper`` is the recipe of Section 4.4 (the ADM network, batch 1, 10 epochs of the
  train split); ``full`` the same network with batch 4 for 300k iterations (our choice for
  multi-GPU runs; the paper states no iteration count); ``tiny`` a CPU configuration for tests
  and the demo (500 iterations of batch 4 on 32 px crops: on 2 cores that learns more per
  second than whole 64 px patches, although fewer crops hold a region no date sees; clean S1
  condition; no attention layers: with them the demo's tree scored worse and a network pass
  cost a third more). The EMA
  warms up (``ema_warmup``: decay min(ema_decay, (1 + n) / (10 + n)) after n steps). The t = 0
  decoder uses ADM's 8-bit bin width (1/255 in [-1, 1]).

Runtime options (config keys, also accepted by :meth:`SeqDM.load`): ``sample_steps`` (respaced
sampling steps; 1000 as in the paper), ``samples`` (K draws per input; ``predict`` returns their
mean and keeps the per-pixel standard deviation in ``last_std``), ``sample_seed`` (each predict
call seeds its generator with it; ``last_seed`` records it), ``sample_batch_size`` (0 = all at
once) and ``progress`` (tqdm over diffusion steps).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from crbench import distributed
from crbench.api import Inputs, Need, TrainableMethod
from crbench.constants import N_S1_BANDS, N_S2_BANDS
from crbench.errors import CheckpointError, UsageError, parse_enum
from crbench.torchutil import (
    autocast,
    check_config,
    load_checkpoint,
    load_weights,
    pad_to_multiple,
    pick_device,
    save_checkpoint,
)

from .diffusion import BetaSchedule, ClipRange, GaussianDiffusion, Prediction, SampleVariance
from .network import NET_KEYS, MmDMNet
from .seqtis import AuxCondition, Fusion, LossRegion, RowDraws, UnknownState
from .seqtis import sample as seqtis_sample

__all__ = ["PRESETS", "SeqDM", "SeqDMNoTTS"]

_COMMON: dict[str, Any] = {
    "dropout": 0.0, "noise_schedule": "linear", "diffusion_steps": 1000, "lambda_vlb": 0.001,
    "clip_denoised": True, "fusion": Fusion.NOISE_THEN_FUSE.value, "shared_noise": False,
    "seq_loss_region": LossRegion.UNKNOWN.value, "seq_unknown": UnknownState.TARGET.value,
    "ema_warmup": True, "epochs": None, "clip_range": "data", "sample_variance": "learned",
    "band_range": None, "aux_condition": AuxCondition.DIFFUSED.value,
    "fusion_offset": 1e-8, "temporal_training": True, "train_L": 3, "lr": 1e-4,
    "weight_decay": 0.0, "grad_clip": 1.0, "samples": 1, "sample_seed": 0,
    "sample_batch_size": 0, "progress": True, "init_seed": 0, "crop": None,
    "prediction": Prediction.EPS.value, "precond_sigma": 0.05, "band_mean": None,
}
_FULL: dict[str, Any] = {
    **_COMMON, "image_size": 256, "base_channels": 128, "channel_mult": [1, 1, 2, 2, 4, 4],
    "num_res_blocks": 2, "attention_resolutions": [32, 16, 8], "num_heads": 4,
    "sample_steps": 1000, "ema_decay": 0.9999, "batch_size": 4, "train_steps": 300_000,
    "ckpt_every": 5000, "val_batches": 4, "val_sample_steps": 50}
PRESETS: dict[str, dict[str, Any]] = {
    # the ADM configuration for 256 x 256 patches
    "full": _FULL,
    # the paper's recipe (Section 4.4): the full network, batch 1, 10 epochs of the train split
    "paper": {**_FULL, "batch_size": 1, "train_steps": None, "epochs": 10},
    # CPU tests and the demo: learns the demo's 64 x 64 tree in about 90 s on 2 cores
    # (500 iterations of batch 4 on 32 px crops at lr 4e-3; README "SeqDMs" has the
    # measurements: per second of training, crops beat whole patches; clean S1 and no
    # attention score better than the paper's diffused S1 with attention, and are faster;
    # the EDM-preconditioned estimate draws the layout S1 shows where no date is clear)
    "tiny": {**_COMMON, "image_size": 64, "base_channels": 32, "channel_mult": [1, 2],
             "num_res_blocks": 1, "attention_resolutions": [], "num_heads": 4,
             "aux_condition": AuxCondition.CLEAN.value, "prediction": Prediction.EDM.value,
             "sample_steps": 25, "ema_decay": 0.99, "batch_size": 4, "train_steps": 500,
             "lr": 4e-3, "crop": 32, "ckpt_every": 50, "val_batches": 1,
             "sample_variance": SampleVariance.POSTERIOR.value,
             "val_sample_steps": 10, "progress": False},
}
RUNTIME_KEYS = frozenset({"sample_steps", "samples", "sample_seed", "sample_batch_size",
                          "progress", "sample_variance", "clip_range"})
_ARCH_KEYS = (*NET_KEYS, "noise_schedule", "diffusion_steps", "aux_condition", "prediction",
              "precond_sigma")
_META_KEYS = ("method", "preset", "train_seed")


def _check_config(cfg: dict[str, Any]) -> None:
    """One clear UsageError for a bad option value."""
    for key, enum_type in (("fusion", Fusion), ("noise_schedule", BetaSchedule),
                           ("seq_loss_region", LossRegion), ("seq_unknown", UnknownState),
                           ("clip_range", ClipRange), ("sample_variance", SampleVariance),
                           ("aux_condition", AuxCondition), ("prediction", Prediction)):
        parse_enum(enum_type, cfg[key], key)
    for key in ("samples", "sample_steps", "diffusion_steps", "train_L", "batch_size"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise UsageError(f"{key}: got {cfg[key]!r}, expected an integer >= 1")
    if cfg["sample_steps"] > cfg["diffusion_steps"]:
        raise UsageError(f"sample_steps: got {cfg['sample_steps']!r}, expected at most "
                         f"diffusion_steps={cfg['diffusion_steps']}")
    sigma = cfg["precond_sigma"]
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma > 0:
        raise UsageError(f"precond_sigma: got {sigma!r}, expected a number > 0")
    for key in ("temporal_training", "shared_noise", "clip_denoised", "progress", "ema_warmup"):
        if not isinstance(cfg[key], bool):
            raise UsageError(f"{key}: got {cfg[key]!r}, expected true or false")


def _digest(x: np.ndarray) -> bytes:
    """First 8 bytes of the sha256 of ``x``'s values in C order (as ``x.tobytes()``)."""
    return hashlib.sha256(np.ascontiguousarray(x)).digest()[:8]


def _row_seeds(s2: torch.Tensor, k: int, seed: int) -> list[int]:
    """Seeds of the k x B sampling rows (draw-major, as ``repeat`` orders them): from the
    sampling seed, the draw index and a digest of the sample's own input pixels, so a sample
    gets the same noise whatever batch, shard or rank it is evaluated in."""
    host = s2.detach().float().cpu().numpy()  # one copy off the device for the whole batch
    # sha256 releases the GIL: the samples' digests are computed in parallel (hashing a
    # batch of 32 256 px sequences takes about 1 s on one core, next to 50 sampling steps
    # of about 3 s on a fast GPU)
    with ThreadPoolExecutor(max_workers=max(1, min(len(host), os.cpu_count() or 1))) as pool:
        digests = list(pool.map(_digest, host))
    return [int.from_bytes(hashlib.sha256(f"{seed}|{j}|".encode() + d).digest()[:8],
                           "little") >> 1 for j in range(k) for d in digests]


class SeqDM(TrainableMethod):
    """SeqDMs (MmDM + SeqTIS). Not tied to L: one checkpoint serves every sequence length;
    ``seq_len`` given to the constructor is the L used for training (config ``train_L``)."""

    name: ClassVar[str] = "seqdm"
    needs: ClassVar[frozenset[Need]] = frozenset({Need.S1, Need.MASKS})
    runtime_options: ClassVar[frozenset[str]] = frozenset({"sample_steps", "samples",
                                                           "sample_seed"})
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, seq_len: int | None = None, preset: str = "full", **overrides: Any) -> None:
        if preset not in self.presets:
            raise UsageError(f"preset: got {preset!r}, expected one of {', '.join(self.presets)}")
        cfg = {**self.presets[preset], **self.defaults}
        unknown = sorted(set(overrides) - set(cfg) - set(_META_KEYS))
        if unknown:
            raise UsageError(f"{self.name}: unknown option {unknown[0]!r}; expected one of "
                             f"{', '.join(sorted(cfg))}")
        if seq_len is not None:
            if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
                raise UsageError(f"seq_len: got {seq_len!r}, expected an integer >= 1")
            cfg["train_L"] = seq_len  # the L to train with; predict accepts any L
        cfg.update(overrides)
        cfg.update(method=self.name, preset=preset)
        _check_config(cfg)
        self.config = cfg
        self.device = torch.device("cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg["init_seed"]))
            self.net = MmDMNet(cfg)
        self.net.eval().requires_grad_(False)
        self._build_diffusion()
        self.last_std: torch.Tensor | None = None
        self.last_seed: int | None = None

    def _build_diffusion(self) -> None:
        cfg = self.config
        self.diffusion = GaussianDiffusion.from_schedule(
            cfg["noise_schedule"], cfg["diffusion_steps"], lambda_vlb=cfg["lambda_vlb"],
            clip_denoised=cfg["clip_denoised"],
            clip_bounds=(tuple(cfg["band_range"]) if cfg["clip_range"] == ClipRange.DATA.value
                         and cfg["band_range"] is not None else None),
            sample_variance=cfg["sample_variance"], prediction=cfg["prediction"],
            data_mean=cfg["band_mean"], precond_sigma=cfg["precond_sigma"])
        self._spaced: dict[int, GaussianDiffusion] = {}

    def set_band_range(self, low: list[float], high: list[float]) -> None:
        """The per-band range ([-1, 1] units) of the clear training targets, which sampling
        clips its x0 estimates to under ``clip_range="data"`` (fit sets it)."""
        if len(low) != N_S2_BANDS or len(high) != N_S2_BANDS:
            raise UsageError(f"band_range: expected {N_S2_BANDS} low and high values")
        self.config["band_range"] = [[float(v) for v in low], [float(v) for v in high]]
        self._build_diffusion()

    def set_band_mean(self, mean: list[float]) -> None:
        """The per-band mean ([-1, 1] units) of the clear training targets: the mu of
        ``prediction="edm"`` (fit sets it; under ``"eps"`` and ``"x0"`` it is unused)."""
        if len(mean) != N_S2_BANDS:
            raise UsageError(f"band_mean: expected {N_S2_BANDS} values, got {len(mean)}")
        self.config["band_mean"] = [float(v) for v in mean]
        self._build_diffusion()

    # ---- weights -------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> SeqDM:
        """Move the network to ``device``."""
        self.device = torch.device(device)
        self.net.to(self.device)
        return self

    def save(self, path: Path, trainer_state: dict[str, Any] | None = None) -> None:
        """Write the sampling (EMA) weights and config.json into directory ``path``."""
        save_checkpoint(Path(path), self.net.state_dict(), self.config, trainer_state)

    @classmethod
    def load(cls, path: Path, **expect: Any) -> SeqDM:
        """Load a checkpoint directory. ``seq_len`` is accepted for any L (the model is not
        tied to L); runtime keys (``sample_steps``, ``samples``, ...) override the stored
        values; any other key must equal the stored one."""
        seq_len = expect.pop("seq_len", None)
        if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int)
                                    or seq_len < 1):
            raise UsageError(f"seq_len: got {seq_len!r}, expected an integer >= 1")
        runtime = {k: expect.pop(k) for k in list(expect) if k in RUNTIME_KEYS}
        state, cfg = load_checkpoint(Path(path), **expect)
        cls._check_checkpoint(cfg, Path(path))
        options = {k: v for k, v in cfg.items() if k not in ("method", "preset")}
        options.setdefault("clip_range", ClipRange.FULL.value)  # written before they existed
        options.setdefault("aux_condition", AuxCondition.DIFFUSED.value)
        options.setdefault("prediction", Prediction.EPS.value)
        preset = cfg.get("preset", "full")
        if preset not in cls.presets:
            raise CheckpointError(f"checkpoint: {path} names unknown preset {preset!r}")
        method = cls(preset=preset, **{**options, **runtime})
        load_weights(method.net, state, Path(path))
        return method

    @classmethod
    def _check_checkpoint(cls, cfg: dict[str, Any], path: Path) -> None:
        if cfg.get("method") not in ("seqdm", "seqdm_no_tts"):
            raise CheckpointError(f"checkpoint: {path} holds method {cfg.get('method')!r}, "
                                  f"expected a seqdm checkpoint")

    # ---- training ------------------------------------------------------------------------
    def fit(self, data_root: Path, out: Path, *, steps: int | None = None,
            batch_size: int | None = None, device: str | None = None, resume: bool = False,
            seed: int = 0, progress: bool = True, workers: int = 0, region: str = "all",
            crop: int | None = None) -> Path:
        """Train with Algorithm 2 (or Eq. 27 alone without temporal training) on the train
        split at L = ``train_L``; checkpoints, trainer.pt and history.csv go to ``out``.
        ``steps`` counts iterations of Algorithm 2 (default: the preset's ``train_steps``, or
        where that is None, ``epochs`` passes over the train split). A tree without S1 for
        the train split is refused (UsageError naming ``data_root``)."""
        from crbench.training import check_train_s1

        from .train import run_training

        check_train_s1(self.name, self.needs, data_root, region)
        out = Path(out)
        self.to(distributed.device_for_rank(pick_device(device)))
        if resume:
            self._resume_weights(out)
        self.config["train_seed"] = int(seed)
        steps = steps if steps is not None else self.config["train_steps"]
        batch = int(batch_size if batch_size is not None else self.config["batch_size"])
        for key, value in (("steps", steps), ("batch_size", batch)):
            if value is not None and value < 1:
                raise UsageError(f"{key}: got {value!r}, expected an integer >= 1")
        crop = crop if crop is not None else self.config["crop"]
        path = run_training(self, Path(data_root), out, steps=steps, batch_size=batch,
                            device=self.device, resume=resume, seed=seed, progress=progress,
                            workers=workers, region=region, crop=crop)
        self.net.eval().requires_grad_(False)
        return path

    def _resume_weights(self, out: Path) -> None:
        state, cfg = load_checkpoint(out)
        for key in _ARCH_KEYS:
            check_config(cfg, out, **{key: self.config[key]})
        self.net.load_state_dict(state)

    # ---- inference -----------------------------------------------------------------------
    def _spaced_diffusion(self, steps: int) -> GaussianDiffusion:
        if steps not in self._spaced:
            self._spaced[steps] = self.diffusion.respaced(steps)
        return self._spaced[steps]

    def _net_fn(self, x: torch.Tensor, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast(self.device):
            return self.net(x, a, t).float()

    @torch.no_grad()
    def sample(self, inputs: Inputs, *, steps: int | None = None, samples: int | None = None,
               seed: int | None = None, progress: bool | None = None) -> torch.Tensor:
        """Draw K samples per input with Algorithm 1: (K, B, 13, H, W) in [0, 1], on the
        inputs' device. Defaults come from the config."""
        cfg = self.config
        steps = int(cfg["sample_steps"] if steps is None else steps)
        k = int(cfg["samples"] if samples is None else samples)
        seed = int(cfg["sample_seed"] if seed is None else seed)
        self._check_inputs(inputs)
        if k < 1:
            raise UsageError(f"samples: got {k!r}, expected an integer >= 1")
        diff = self._spaced_diffusion(steps)
        s2, s1, clear, crop = self._network_inputs(inputs)
        row_seeds = _row_seeds(inputs.s2, k, seed)
        self.last_seed = seed
        b = s2.shape[0]
        reps = [x.repeat(k, *([1] * (x.ndim - 1))) for x in (s2, s1, clear)]
        chunk = int(cfg["sample_batch_size"]) or k * b
        outs = []
        self.net.eval()
        for i in range(0, k * b, chunk):
            x = seqtis_sample(diff, self._net_fn, *(r[i:i + chunk] for r in reps),
                              fusion=Fusion(cfg["fusion"]), shared_noise=cfg["shared_noise"],
                              s=float(cfg["fusion_offset"]), aux=AuxCondition(cfg["aux_condition"]),
                              generator=RowDraws(row_seeds[i:i + chunk], self.device),
                              progress=bool(cfg["progress"] if progress is None else progress))
            outs.append(x)
        x = torch.cat(outs)[..., :crop[0], :crop[1]]
        x = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
        return x.reshape(k, b, *x.shape[1:]).to(inputs.s2.device)

    def predict(self, inputs: Inputs) -> torch.Tensor:
        """Mean of ``samples`` draws, (B, 13, H, W) in [0, 1]; the per-pixel standard
        deviation of the draws is kept in ``last_std`` (zeros for one draw)."""
        draws = self.sample(inputs)
        self.last_std = draws.std(dim=0, unbiased=False)
        return draws.mean(dim=0)

    def predict_samples(self, inputs: Inputs, k: int) -> torch.Tensor:
        """``k`` draws of Algorithm 1 per input, (k, B, 13, H, W) in [0, 1] (``crbench run
        --samples K`` scores each draw); same seed and steps as :meth:`predict`."""
        return self.sample(inputs, samples=k)

    def _check_inputs(self, inputs: Inputs) -> None:
        s2, s1, masks = inputs.s2, inputs.s1, inputs.masks
        if s2.ndim != 5 or s2.shape[2] != N_S2_BANDS:
            raise UsageError(f"inputs.s2: got shape {tuple(s2.shape)}, expected "
                             f"(B, L, {N_S2_BANDS}, H, W)")
        want_s1 = (*s2.shape[:2], N_S1_BANDS, *s2.shape[3:])
        if tuple(s1.shape) != want_s1:
            raise UsageError(f"inputs.s1: got shape {tuple(s1.shape)}, expected {want_s1}")
        if tuple(masks.shape) != (*s2.shape[:2], *s2.shape[3:]):
            raise UsageError(f"inputs.masks: got shape {tuple(masks.shape)}, expected "
                             f"{(*s2.shape[:2], *s2.shape[3:])}")

    def _network_inputs(self, inputs: Inputs
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Network-unit tensors on the model's device, edge-padded once for the whole
        sampling trajectory to a multiple of the U-Net's downsampling factor, and the
        original (H, W) for cropping the result."""
        from .train import to_network

        s2, s1, clear = to_network(inputs.to(self.device))
        m = self.net.multiple
        (s2, size), (s1, _), (clear, _) = (pad_to_multiple(x, m) for x in (s2, s1, clear))
        return s2.float(), s1.float(), clear.float(), size

    def describe(self) -> dict[str, Any]:
        """Summary for run manifests, with the full config and the last sampling seed."""
        return {**super().describe(), "config": dict(self.config), "last_seed": self.last_seed}


class SeqDMNoTTS(SeqDM):
    """SeqDMs trained without the temporal training strategy (Eq. 27 only): Table 4's ablation."""

    name: ClassVar[str] = "seqdm_no_tts"
    defaults: ClassVar[dict[str, Any]] = {"temporal_training": False}

    @classmethod
    def _check_checkpoint(cls, cfg: dict[str, Any], path: Path) -> None:
        super()._check_checkpoint(cfg, path)
        if cfg.get("temporal_training", True):
            raise CheckpointError(f"checkpoint: {path} was trained with temporal_training=True; "
                                  f"seqdm_no_tts needs a model trained without it")
