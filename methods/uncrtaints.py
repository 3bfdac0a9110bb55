"""UnCRtainTS: attention-based multi-temporal cloud removal with a per-pixel variance head.

Paper: P. Ebel, V. Sainte Fare Garnot, M. Schmitt, J. D. Wegner, X. X. Zhu, "UnCRtainTS:
Uncertainty Quantification for Cloud Removal in Optical Satellite Time Series", Proceedings of
the IEEE/CVF Conference on Computer Vision and Pattern Recognition Workshops (EarthVision),
2023; preprint doi:10.48550/arXiv.2304.05464 (arXiv:2304.05464; the workshop version's IEEE
DOI could not be checked offline, and the code's README cites the CVF open-access address).
Public code: github.com/PatrickTUM/UnCRtainTS. This module is written for
crbench from the paper and the code's defaults (model/parse_args.py and the README's training
command); no code is copied.

Architecture (preset "full" = the published configuration: ``--model uncrtaints --input_t 3
--lr 0.001 --batch_size 4 --epochs 20 --gamma 1.0 --scale_by 10.0 --loss MGNLL --covmode diag
--var_nonLinearity softplus --use_sar --block_type mbconv --n_head 16``, with the parser's
defaults encoder_widths [128], decoder_widths [128] x 5, d_model 256, d_k 4, encoder norm
group, decoder norm batch, aggregation "att_group", positional encoding, sigmoid mean):

- Input per date: S1 (VV, VH; if ``use_sar``) then the 13 S2 bands, all in [0, 1], times
  ``scale_by`` (10).
- Encoder, shared over dates: 1x1 conv -> ``width``, GroupNorm(4), ReLU, then
  ``encoder_blocks`` MBConv blocks (pre-norm, 1x1 expansion x2, depthwise 3x3 (reflect),
  squeeze-excitation, 1x1 projection, residual; GELU).
- L-TAE ("tiny": attention masks only): the features are max-pooled to ``att_size`` (32) x 32,
  GroupNorm(n_head), a linear map to ``d_model``, plus a sinusoidal encoding (period 1000) of
  the acquisition day (``Inputs.days``, days since 2014-04-03, the code's ``ref_date``); one
  learnt query per head against keys from a linear layer gives softmax attention over the L
  dates per head and low-resolution pixel.
- Aggregation: the attention masks are upsampled (bilinear) to the patch size (dropout 0.1 in
  training) and each head weights its group of ``width / n_head`` channels over the dates.
  Attention pools over time, so one checkpoint serves any L (``config["seq_len"]`` is None;
  the training L is ``train_seq_len``). The code's pad mask for zero-padded dates is not
  needed here: crbench never pads dates.
- Decoder: ``decoder_blocks`` MBConv blocks (BatchNorm), 1x1 conv to 26 channels: 13 means
  (``scale_by * sigmoid``) and 13 variances (``softplus + 1e-3``; in (scale_by)^2 units).

Outputs: the mean divided by ``scale_by`` is the prediction in [0, 1]; the variance divided
by ``scale_by ** 2`` is the per-pixel variance in [0, 1] reflectance units squared
(:meth:`UnCRtainTS.predict_with_variance`). No layer downsamples the full-resolution maps
(only the attention is computed at 32 x 32), so any patch size works without padding.

Loss: ``loss="nll"`` (default, the code's MGNLL with diagonal covariance): per pixel
``0.5 * sum_b (log var_b + (y_b - mu_b)^2 / var_b) + 6.5 log(2 pi)``, averaged over pixels, in
the scaled units. ``loss="mse"``: mean squared error of the mean only; the variance head is
then untrained, so such a model gives no variance (``predict_with_variance`` returns None and
the instance's ``gives_variance`` is False). Optimiser: Adam, constant LR (the code's
ExponentialLR with gamma 1.0).

S1: ``use_sar`` (default True, as published) adds Need.S1 to the instance's ``needs``, which
``fit`` and ``crbench train`` check (``--set use_sar=false`` trains on a tree without S1). The
class attribute keeps Need.S1 because ``crbench run`` decides on the class before loading a
checkpoint: it refuses uncrtaints on a tree without S1, and skips samples lacking S1, even for
a ``use_sar=false`` checkpoint.

Parameters: the full preset has 570,010 (569,754 without S1), the count of the public code's
``UNCRTAINTS`` module in this configuration (tests/test_uncrtaints.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from crbench.api import Batch, Inputs, Need, TrainableMethod
from crbench.constants import N_S1_BANDS, N_S2_BANDS
from crbench.errors import UsageError, check_choice
from crbench.torchutil import (
    autocast,
    eval_mode,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from crbench.training import (
    StepContext,
    TrainOptions,
    TrainParts,
    check_train_s1,
    fit_on_dataset,
    resolve_config,
)

PE_PERIOD = 1000.0  # the positional encoding's T


# ----------------------------------------------------------------------------- network
def norm_layer(kind: str, channels: int) -> nn.Module:
    """GroupNorm with 4 groups ("group") or BatchNorm2d ("batch")."""
    return nn.GroupNorm(4, channels) if kind == "group" else nn.BatchNorm2d(channels)


class SqueezeExcite(nn.Module):
    """Channel gating: global average, Linear to ``squeeze``, GELU, Linear back, sigmoid."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, squeeze, bias=False), nn.GELU(),
                                nn.Linear(squeeze, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class MBConv(nn.Module):
    """Residual inverted bottleneck: ``x + f(norm(x))`` with f = 1x1 expand, norm, GELU,
    depthwise 3x3 (reflect), norm, GELU, squeeze-excite, 1x1 project, norm (no biases)."""

    def __init__(self, channels: int, norm: str, expansion: int = 2) -> None:
        super().__init__()
        hidden = channels * expansion
        self.pre = norm_layer(norm, channels)
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), norm_layer(norm, hidden), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, padding_mode="reflect", groups=hidden,
                      bias=False),
            norm_layer(norm, hidden), nn.GELU(), SqueezeExcite(hidden, channels // 4),
            nn.Conv2d(hidden, channels, 1, bias=False), norm_layer(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(self.pre(x))


def day_encoding(days: torch.Tensor, dim: int, repeat: int) -> torch.Tensor:
    """Sinusoidal encoding of ``days`` (B, L) -> (B, L, dim * repeat): sin on even, cos on odd
    channels, frequencies ``PE_PERIOD ** (2 (i // 2) / dim)``, repeated for every head."""
    i = torch.arange(dim, device=days.device, dtype=torch.float32)
    angle = days.float()[..., None] / PE_PERIOD ** (2 * torch.div(i, 2, rounding_mode="floor")
                                                    / dim)
    table = torch.where(i.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.repeat(1, 1, repeat)


class TemporalAttention(nn.Module):
    """L-TAE without values: (B, L, C, h, w) features and (B, L) days -> attention
    (n_head, B, L, h, w), softmax over L."""

    def __init__(self, channels: int, n_head: int, d_model: int, d_k: int) -> None:
        super().__init__()
        self.n_head, self.d_k, self.d_model = n_head, d_k, d_model
        self.in_norm = nn.GroupNorm(n_head, channels)
        self.inproj = nn.Linear(channels, d_model)
        self.query = nn.Parameter(torch.randn(n_head, d_k) * math.sqrt(2.0 / d_k))
        self.keys = nn.Linear(d_model, n_head * d_k)
        nn.init.normal_(self.keys.weight, 0.0, math.sqrt(2.0 / d_k))

    def forward(self, x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        seq = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)
        seq = self.in_norm(seq.transpose(1, 2)).transpose(1, 2)
        seq = self.inproj(seq)
        pe = day_encoding(days, self.d_model // self.n_head, self.n_head)  # (B, L, d_model)
        seq = seq + pe[:, None, None].expand(b, h, w, t, self.d_model).reshape(b * h * w, t, -1)
        k = self.keys(seq).reshape(b * h * w, t, self.n_head, self.d_k)
        score = torch.einsum("nthd,hd->nht", k, self.query.to(k.dtype)) / math.sqrt(self.d_k)
        attn = score.float().softmax(dim=-1)  # (B h w, n_head, L)
        return attn.reshape(b, h, w, self.n_head, t).permute(3, 0, 4, 1, 2)


class UnCRtainTSNet(nn.Module):
    """(B, L, C_in, H, W) scaled inputs and (B, L) days -> (mean, variance), each
    (B, 13, H, W) in scaled units."""

    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        width, self.n_head = c["width"], c["n_head"]
        self.scale_by, self.att_size = c["scale_by"], c["att_size"]
        in_ch = N_S2_BANDS + (N_S1_BANDS if c["use_sar"] else 0)
        self.in_conv = nn.Sequential(nn.Conv2d(in_ch, width, 1), nn.GroupNorm(4, width),
                                     nn.ReLU())
        self.encoder = nn.Sequential(*(MBConv(width, "group")
                                       for _ in range(c["encoder_blocks"])))
        self.attention = TemporalAttention(width, c["n_head"], c["d_model"], c["d_k"])
        self.att_dropout = nn.Dropout(c["att_dropout"])
        self.decoder = nn.Sequential(*(MBConv(width, "batch")
                                       for _ in range(c["decoder_blocks"])))
        self.out_conv = nn.Conv2d(width, 2 * N_S2_BANDS, 1)
        self.var_eps = 1e-3 if self.scale_by != 1.0 else 1e-9

    def forward(self, x: torch.Tensor, days: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _, h, w = x.shape
        feats = self.encoder(self.in_conv(x.reshape(b * t, -1, h, w)))
        low = F.adaptive_max_pool2d(feats, self.att_size).reshape(b, t, -1, self.att_size,
                                                                   self.att_size)
        attn = self.attention(low, days)  # (n_head, B, L, a, a)
        attn = F.interpolate(attn.reshape(-1, t, self.att_size, self.att_size), size=(h, w),
                             mode="bilinear", align_corners=False)
        attn = self.att_dropout(attn).reshape(self.n_head, b, t, 1, h, w)
        groups = feats.reshape(b, t, self.n_head, -1, h, w).permute(2, 0, 1, 3, 4, 5)
        pooled = (attn.to(groups.dtype) * groups).sum(dim=2)  # (n_head, B, C/n_head, H, W)
        out = self.out_conv(self.decoder(pooled.permute(1, 0, 2, 3, 4).reshape(b, -1, h, w)))
        out = out.float()
        mean = self.scale_by * torch.sigmoid(out[:, :N_S2_BANDS])
        var = F.softplus(out[:, N_S2_BANDS:]) + self.var_eps
        return mean, var


def gaussian_nll(mean: torch.Tensor, var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Diagonal multivariate Gaussian NLL per pixel (summed over bands, constant included),
    averaged over pixels: the code's MGNLL with ``covmode diag``."""
    per_band = 0.5 * (torch.log(var) + (target - mean) ** 2 / var + math.log(2 * math.pi))
    return per_band.sum(dim=1).mean()


# ----------------------------------------------------------------------------- method
_FULL: dict[str, Any] = {
    "width": 128, "encoder_blocks": 1, "decoder_blocks": 5, "n_head": 16, "d_model": 256,
    "d_k": 4, "att_size": 32, "att_dropout": 0.1, "scale_by": 10.0, "use_sar": True,
    "loss": "nll", "lr": 1e-3, "batch_size": 4, "epochs": 20, "val_samples": 4,
    "val_every": 0,
}
# tiny: widths 16, 2 decoder blocks, 4 heads; lr 1e-2 (the code's parse_args default) so that
# ~100 CPU steps on 32 px crops learn; validation every 50 steps
_TINY: dict[str, Any] = _FULL | {
    "width": 16, "decoder_blocks": 2, "n_head": 4, "d_model": 32, "att_size": 8,
    "lr": 1e-2, "batch_size": 2, "epochs": 1, "val_samples": 2, "val_every": 50}
_LOSSES = ("nll", "mse")


class UnCRtainTS(TrainableMethod):
    """UnCRtainTS (Ebel et al. 2023). See the module docstring.

    Args:
        seq_len: the L to train with (``train_seq_len``); prediction takes any L.
        preset: "full" (the published configuration) or "tiny" (CPU tests, the demo).
        **overrides: any key of the preset (e.g. ``use_sar=False``, ``loss="mse"``).
    """

    name: ClassVar[str] = "uncrtaints"
    needs: ClassVar[frozenset[Need]] = frozenset({Need.S1, Need.DATES})
    gives_variance: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {"full": _FULL, "tiny": _TINY}

    def __init__(self, seq_len: int | None = None, preset: str = "full",
                 **overrides: Any) -> None:
        if seq_len is not None and (not isinstance(seq_len, int) or seq_len < 1):
            raise UsageError(f"seq_len: bad value {seq_len!r}; expected an integer >= 1")
        overrides.pop("seq_len", None)  # stored as None: any L
        self.config = resolve_config(self.presets, preset, overrides, self.name)
        self._check_config()
        self.config["seq_len"] = None
        self.config["train_seq_len"] = 3 if seq_len is None else seq_len
        self.needs = frozenset({Need.DATES} | ({Need.S1} if self.config["use_sar"] else set()))
        self.gives_variance = self.config["loss"] == "nll"
        self.device = torch.device("cpu")
        self._net: UnCRtainTSNet | None = None

    def _check_config(self) -> None:
        c = self.config
        check_choice("loss", c["loss"], _LOSSES)
        for key in ("width", "n_head", "d_model", "d_k", "att_size", "decoder_blocks"):
            if c[key] < 1:
                raise UsageError(f"{key}: bad value {c[key]!r}; expected an integer >= 1")
        if c["width"] % 4:
            raise UsageError(f"width: bad value {c['width']!r}; expected a multiple of 4")
        if c["width"] % c["n_head"] or c["d_model"] % c["n_head"]:
            raise UsageError(f"n_head: bad value {c['n_head']!r}; expected a divisor of width "
                             f"{c['width']} and d_model {c['d_model']}")
        if c["scale_by"] <= 0:
            raise UsageError(f"scale_by: bad value {c['scale_by']!r}; expected a value > 0")
        if not 0.0 <= c["att_dropout"] < 1.0:
            raise UsageError(f"att_dropout: bad value {c['att_dropout']!r}; expected a value "
                             "in [0, 1)")

    @property
    def net(self) -> UnCRtainTSNet:
        """The network, built on first use (so that ``fit`` seeds its initialisation)."""
        if self._net is None:
            self._net = UnCRtainTSNet(self.config).to(self.device)
        return self._net

    def parameter_counts(self) -> dict[str, int]:
        """``{"network": N}``, built on the meta device when the network does not exist yet."""
        net = self._net
        if net is None:
            with torch.device("meta"):
                net = UnCRtainTSNet(self.config)
        return {"network": sum(p.numel() for p in net.parameters())}

    def to(self, device: torch.device | str) -> UnCRtainTS:
        self.device = torch.device(device)
        if self._net is not None:
            self._net.to(self.device)
        return self

    # -- inference
    def network_input(self, inputs: Inputs) -> torch.Tensor:
        """(B, L, 15 or 13, H, W): S1 (when used) then S2, times ``scale_by``."""
        x = torch.cat([inputs.s1, inputs.s2], dim=2) if self.config["use_sar"] else inputs.s2
        return x.float() * self.config["scale_by"]

    def _forward(self, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean in [0, 1] and variance in [0, 1] units squared, float32."""
        s = self.config["scale_by"]
        with autocast(self.device):
            mean, var = self.net(self.network_input(inputs), inputs.days)
        return (mean.float() / s).clamp_(0.0, 1.0), var.float() / s ** 2

    def _forward01(self, inputs: Inputs) -> torch.Tensor:
        return self._forward(inputs)[0]

    def predict_with_variance(self, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 13, H, W) mean in [0, 1] and its per-pixel variance ([0, 1] units squared,
        > 0), on the inputs' device; the variance is None for a model trained with MSE."""
        with eval_mode(self.net):
            mean, var = self._forward(inputs.to(self.device))
        dev = inputs.s2.device
        return mean.to(dev), (var.to(dev) if self.gives_variance else None)

    def predict(self, inputs: Inputs) -> torch.Tensor:
        """(B, 13, H, W) in [0, 1] on the inputs' device, for any L."""
        return self.predict_with_variance(inputs)[0]

    # -- checkpoints
    def save(self, path: Path) -> None:
        save_checkpoint(Path(path), self.net.state_dict(), self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UnCRtainTS:
        """A fresh model from a stored config."""
        skip = ("method", "preset", "seq_len", "train_seq_len")
        rest = {k: v for k, v in config.items() if k not in skip}
        return cls(seq_len=config.get("train_seq_len"), preset=config.get("preset", "full"),
                   **rest)

    @classmethod
    def load(cls, path: Path, **expect: Any) -> UnCRtainTS:
        """Load a checkpoint directory; ``expect`` must match its config (``seq_len`` is
        accepted for any L: the network pools over time)."""
        expect.pop("seq_len", None)
        state, config = load_checkpoint(Path(path), method=cls.name, **expect)
        model = cls.from_config(config)
        load_weights(model.net, state, Path(path))
        return model

    # -- training
    def loss(self, inputs: Inputs, target: torch.Tensor, net: nn.Module) -> torch.Tensor:
        """The configured loss (NLL or MSE) in the scaled units."""
        s = self.config["scale_by"]
        mean, var = net(self.network_input(inputs), inputs.days)
        target = target.float() * s
        if self.config["loss"] == "mse":
            return F.mse_loss(mean, target)
        return gaussian_nll(mean, var, target)

    def training_parts(self, total_steps: int, device: torch.device) -> TrainParts:
        """Adam (constant LR) and the NLL or MSE step for :mod:`crbench.training`."""
        self.to(device)
        net = self.net
        opt = torch.optim.Adam(net.parameters(), lr=self.config["lr"])

        def step_fn(batch: Batch, ctx: StepContext) -> dict[str, float]:
            inputs = batch.inputs.to(ctx.device, non_blocking=True)
            target = batch.target.to(ctx.device, non_blocking=True)
            with ctx.autocast():
                loss = self.loss(inputs, target, ctx.ddp(net))
            ctx.backward_step(loss, "model")
            return {self.config["loss"]: float(loss.detach())}

        return TrainParts(model=net, config=self.config, step_fn=step_fn,
                          optimizers={"model": opt}, predict_fn=self._forward01)

    def fit(self, data_root: Path, out: Path, *, steps: int | None = None,
            batch_size: int | None = None, device: str | None = None, resume: bool = False,
            seed: int = 0, progress: bool = True, workers: int = 0, region: str = "all",
            crop: int | None = None) -> Path:
        """Train on the train split (random sampler) at ``train_seq_len``; checkpoints and
        history.csv in ``out``. With ``use_sar``, a tree without S1 is refused (UsageError
        naming ``data_root``)."""
        check_train_s1(self.name, self.needs, data_root, region)
        c = self.config
        opts = TrainOptions.from_config(
            c, c["train_seq_len"], batch_size, self.s1_db_range, steps=steps, device=device,
            resume=resume, seed=seed, progress=progress, workers=workers, region=region,
            crop=crop)
        return fit_on_dataset(data_root, out, opts, self.training_parts)
