"""Seq2point: the multi-temporal ResNet baseline of the SEN12MS-CR-TS benchmark.

Paper: P. Ebel, Y. Xu, M. Schmitt, X. X. Zhu, "SEN12MS-CR-TS: A Remote-Sensing Data Set for
Multimodal Multitemporal Cloud Removal", IEEE Transactions on Geoscience and Remote Sensing 60,
2022, doi:10.1109/TGRS.2022.3146246.

Architecture (preset "full"; "tiny" shrinks widths and depths for CPU tests and raises the
learning rate to 1e-3 so that a few dozen CPU steps learn):

- Per-date branch, shared across the L dates: 15 input channels (13 S2 bands + S1 VV, VH, all
  mapped to [-1, 1]), conv 3x3 -> 256, ReLU, 16 residual blocks (conv3x3, ReLU, conv3x3,
  output ``x + 0.1 f(x)``, no normalisation).
- Fusion: branch features stacked on a time axis (B, C, L, H, W); Conv3d 3x3x3 + ReLU, then 5
  residual 3D blocks (conv, ReLU, conv; ``relu(x + 0.1 f(x))``). Every 3x3x3 convolution is
  preceded by an explicit pad: reflect in space, replicate in time (Conv3d padding 0).
- Output: Conv3d with kernel (L, 3, 3) (space reflect-padded) collapses time -> 13 channels,
  tanh, mapped back to [0, 1] and clamped. The model is therefore tied to L: ``config["seq_len"]``
  records it and loading refuses another L (:class:`~crbench.errors.CheckpointError`).
  Unlike the toolbox's version, any batch size works.

Optimisation: L1 loss (in [-1, 1]), Adam lr 2e-4, betas (0.5, 0.999), LR constant for the first
half of the steps and decayed linearly to 0 in the second half. Optional branch pretraining
(``pretrain_steps`` > 0): the branch plus a 3x3 head (13 outputs, tanh) is trained as a
mono-temporal ResNet on one random input date of each sample, its weights are loaded into the
branch, and the branch stays frozen for the first ``freeze_steps`` steps of the main training.
The pretrained network is checkpointed under ``out/pretrain``.

crbench's default ("full") and the toolbox (PatrickTUM/SEN12MS-CR-TS, preset "toolbox";
"toolbox-tiny" is the same recipe at the tiny widths with 2 pretraining and 2 frozen steps):

=====================  =================================  ==================================
                       full (crbench)                     toolbox
=====================  =================================  ==================================
S2 input               [0, 10000] / 10000 -> [-1, 1]      [0, 10000] / 2000 -> [0, 5]
S1 input (dB)          VV, VH [-25, 0] -> [-1, 1]         VV [-25, 0], VH [-32.5, 0] -> [0, 2]
                                                          (``s1_db_range``, crbench.api)
first fusion Conv3d    reflect (space), replicate (time)  zero padding 1
other 3D convs         reflect / replicate                reflect / replicate (same)
output                 tanh -> (y + 1) / 2, clamped       tanh -> 5 (y + 1) / 2, scored / 5:
                                                          the same [0, 1] values
loss                   L1 in [-1, 1]                      100 x L1 in [0, 5]
init                   PyTorch default                    N(0, 0.02), biases 0
branch                 from scratch (``pretrain_steps``   pretrained single-date ResNet
                       0)                                 (head 3x3 -> 64, ReLU, 3x3 -> 13,
                                                          no tanh, L1 in [0, 5]) for
                                                          ``pretrain_steps`` 100,000, then
                                                          frozen 100,000 steps
batch, schedule        4; 20 epochs, constant LR for the  1; 200 epochs: 100 constant, 100
                       first half then linear decay       linear decay (``decay_start`` 0.5)
training samples       ``train_sampler`` "random": a      "fixed": the toolbox's rule, least
                       clear target drawn every epoch,    cloudy target, the first L dates as
                       other dates as inputs              inputs (the target may be one)
=====================  =================================  ==================================

Differences that remain: the toolbox loads a ResNet pretrained elsewhere (Meraner et al.
2020's ``baseline_resnet.pth``; its training is not in the toolbox), crbench trains it on the
same train split first (100,000 steps is crbench's choice); the toolbox decays the LR once per
epoch to 1/101 of its value (``1 - max(0, epoch + 1 - 100) / 101``), crbench per step to 0; the
toolbox's model runs at batch 1 only, crbench's at any batch. Toolbox checkpoints are converted
by :mod:`crbench_methods.seq2point_toolbox` (``crbench convert toolbox-seq2point``); with the
toolbox's weights the toolbox preset's outputs agree with a reference forward pass of the
toolbox's structure to 1e-5 (tests/test_seq2point_toolbox.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from crbench import distributed
from crbench.api import Batch, Inputs, Need, TrainableMethod
from crbench.constants import N_S1_BANDS, N_S2_BANDS
from crbench.errors import UsageError, check_choice
from crbench.torchutil import (
    autocast,
    eval_mode,
    init_normal,
    load_checkpoint,
    load_weights,
    pick_device,
    save_checkpoint,
)
from crbench.training import (
    StepContext,
    TrainOptions,
    TrainParts,
    check_train_s1,
    fit_on_dataset,
    from_network_range,
    linear_decay,
    resolve_config,
    to_network_range,
)

IN_CHANNELS = N_S2_BANDS + N_S1_BANDS  # 15


# ----------------------------------------------------------------------------- network
class ResBlock2d(nn.Module):
    """conv3x3, ReLU, conv3x3; ``x + scale * f(x)`` (no normalisation)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(True),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.body(x)


class Branch(nn.Module):
    """Per-date feature extractor: conv3x3 in -> C, ReLU, residual blocks."""

    def __init__(self, in_ch: int, channels: int, blocks: int, scale: float) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(in_ch, channels, 3, padding=1), nn.ReLU(True))
        self.blocks = nn.Sequential(*(ResBlock2d(channels, scale) for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.head(x))


def pad3d(x: torch.Tensor, space: int = 1, time: int = 1) -> torch.Tensor:
    """Pad (B, C, T, H, W): reflect by ``space`` in H, W and replicate by ``time`` in T."""
    if space:
        b, c, t, h, w = x.shape
        x = F.pad(x.reshape(b, c * t, h, w), (space,) * 4, mode="reflect")
        x = x.reshape(b, c, t, h + 2 * space, w + 2 * space)
    if time:
        x = F.pad(x, (0, 0, 0, 0, time, time), mode="replicate")
    return x


class PaddedConv3d(nn.Conv3d):
    """3x3x3 Conv3d (padding 0) after :func:`pad3d`: output has the input's shape."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(in_ch, out_ch, kernel_size=3, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(pad3d(x))


class ResBlock3d(nn.Module):
    """conv, ReLU, conv (padded 3x3x3); ``relu(x + scale * f(x))``."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(PaddedConv3d(channels, channels), nn.ReLU(True),
                                  PaddedConv3d(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.scale * self.body(x))


class Seq2PointNet(nn.Module):
    """(B, L, 15, H, W) in the network's input range -> (B, 13, H, W) in [-1, 1] (tanh).

    ``first_pad``: padding of the first fusion Conv3d, "reflect" (crbench: reflect in space,
    replicate in time) or "zero" (the toolbox: ``nn.Conv3d(..., padding=1)``).
    """

    def __init__(self, seq_len: int, channels: int, blocks: int, fusion_blocks: int,
                 res_scale: float, first_pad: str = "reflect") -> None:
        super().__init__()
        self.seq_len = seq_len
        self.branch = Branch(IN_CHANNELS, channels, blocks, res_scale)
        first = (nn.Conv3d(channels, channels, 3, padding=1) if first_pad == "zero"
                 else PaddedConv3d(channels, channels))
        self.fusion = nn.Sequential(
            first, nn.ReLU(True),
            *(ResBlock3d(channels, res_scale) for _ in range(fusion_blocks)))
        self.out = nn.Conv3d(channels, N_S2_BANDS, kernel_size=(seq_len, 3, 3), padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        feats = self.branch(x.reshape(b * t, c, h, w))
        feats = feats.reshape(b, t, -1, h, w).transpose(1, 2)  # (B, C, L, H, W)
        y = self.out(pad3d(self.fusion(feats), space=1, time=0))  # (B, 13, 1, H, W)
        return torch.tanh(y[:, :, 0])


class MonoTemporalNet(nn.Module):
    """Branch pretraining network: (B, 15, H, W) -> (B, 13, H, W) via the shared branch.

    ``toolbox=False``: a 3x3 head to 13 bands and tanh ([-1, 1]). ``toolbox=True``: the head of
    the toolbox's single-date ResNet (``ResnetStackedArchitecture``: 3x3 to 64, ReLU, 3x3 to 13,
    no tanh), whose output is S2 in the toolbox's [0, 5] range.
    """

    def __init__(self, branch: Branch, channels: int, toolbox: bool = False) -> None:
        super().__init__()
        self.branch = branch
        self.toolbox = toolbox
        self.head: nn.Module = (
            nn.Sequential(nn.Conv2d(channels, 64, 3, padding=1), nn.ReLU(True),
                          nn.Conv2d(64, N_S2_BANDS, 3, padding=1)) if toolbox
            else nn.Conv2d(channels, N_S2_BANDS, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.branch(x))
        return y if self.toolbox else torch.tanh(y)


TOOLBOX_S1_DB_RANGE = ((-25.0, 0.0), (-32.5, 0.0))
"""The toolbox's "resnet" S1 clip (data/dataLoader.py process_SAR): VV [-25, 0], VH [-32.5, 0]."""
S2_TOOLBOX_SCALE = 5.0  # the toolbox's "resnet" S2: clip [0, 10000] / 2000 = 5 x crbench's [0, 1]
S1_TOOLBOX_SCALE = 2.0  # and S1 over its dB range -> [0, 2]


def network_input(inputs: Inputs, scaling: str = "crbench") -> torch.Tensor:
    """(B, L, 15, H, W): S2 and S1 of each date, concatenated on channels, in the network's
    range: [-1, 1] (``scaling="crbench"``) or the toolbox's "resnet" scaling (S2 in [0, 5], S1
    in [0, 2]; ``inputs.s1`` then covers :data:`TOOLBOX_S1_DB_RANGE`)."""
    if scaling == "toolbox":
        return torch.cat([inputs.s2.float() * S2_TOOLBOX_SCALE,
                          inputs.s1.float() * S1_TOOLBOX_SCALE], dim=2)
    return to_network_range(torch.cat([inputs.s2, inputs.s1], dim=2).float())


def l1_loss(pred: torch.Tensor, target01: torch.Tensor, config: dict[str, Any],
            tanh_output: bool = True) -> torch.Tensor:
    """L1 of a prediction against the [0, 1] target in the preset's loss range, times
    ``lambda_l1``: [-1, 1] for crbench; the toolbox's [0, 5] (its tanh output mapped by
    ``5 (y + 1) / 2``, temporal_branched_model.py) with ``lambda_l1`` 100."""
    pred = pred.float()
    if config["scaling"] == "toolbox":
        pred = S2_TOOLBOX_SCALE * (pred + 1.0) / 2.0 if tanh_output else pred
        target = target01 * S2_TOOLBOX_SCALE
    else:
        target = to_network_range(target01)
    return F.l1_loss(pred, target) * config["lambda_l1"]


# ----------------------------------------------------------------------------- method
_FULL: dict[str, Any] = {
    "channels": 256, "blocks": 16, "fusion_blocks": 5, "res_scale": 0.1,
    "lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "decay_start": 0.5,
    "batch_size": 4, "epochs": 20, "pretrain_steps": 0, "freeze_steps": 0,
    "val_samples": 4, "val_every": 0,
    "scaling": "crbench", "first_pad": "reflect", "init": "default", "lambda_l1": 1.0,
    "train_sampler": "random",
}
# tiny: lr 1e-3 (5x the paper's) so that a CPU run of ~75 steps learns the fill (issue #16:
# nrmse_cloudy 0.037 vs 0.26 for least cloudy on the demo tree); validation every 25 steps
_TINY: dict[str, Any] = _FULL | {"channels": 16, "blocks": 2, "fusion_blocks": 1, "lr": 1e-3,
                                 "batch_size": 2, "epochs": 1, "val_samples": 2,
                                 "val_every": 25}
# toolbox (PatrickTUM/SEN12MS-CR-TS, README's seq2point command and options/*.py): "resnet"
# scaling, zero padding on the first fusion conv, N(0, 0.02) init, L1 x 100 in [0, 5],
# batch 1, niter 100 + niter_decay 100 epochs, pretrained branch frozen for 100,000 iterations
_TOOLBOX: dict[str, Any] = _FULL | {
    "scaling": "toolbox", "first_pad": "zero", "init": "normal", "lambda_l1": 100.0,
    "batch_size": 1, "epochs": 200, "decay_start": 0.5, "pretrain_steps": 100_000,
    "freeze_steps": 100_000, "train_sampler": "fixed"}
# toolbox-tiny: the toolbox recipe at the tiny preset's widths, for CPU tests
_TOOLBOX_TINY: dict[str, Any] = _TOOLBOX | {
    "channels": 16, "blocks": 2, "fusion_blocks": 1, "lr": 1e-3, "epochs": 1,
    "pretrain_steps": 2, "freeze_steps": 2, "val_samples": 2, "val_every": 25}
_CHOICES = {"scaling": ("crbench", "toolbox"), "first_pad": ("reflect", "zero"),
            "init": ("default", "normal")}


class Seq2Point(TrainableMethod):
    """Seq2point (Ebel et al. 2022). See the module docstring.

    Args:
        seq_len: L, the number of input dates the network is built for (required to train or
            predict; a checkpoint fixes it).
        preset: "full" (crbench's configuration), "tiny" (CPU tests), "toolbox" (the
            toolbox's recipe, see the module docstring) or "toolbox-tiny" (its CPU variant).
        **overrides: any key of the preset (e.g. ``lr=1e-3``, ``pretrain_steps=1000``).
    """

    name: ClassVar[str] = "seq2point"
    needs: ClassVar[frozenset[Need]] = frozenset({Need.S1})
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "full": _FULL, "tiny": _TINY, "toolbox": _TOOLBOX, "toolbox-tiny": _TOOLBOX_TINY}

    def __init__(self, seq_len: int | None = None, preset: str = "full",
                 **overrides: Any) -> None:
        if seq_len is not None and (not isinstance(seq_len, int) or seq_len < 1):
            raise UsageError(f"seq_len: bad value {seq_len!r}; expected an integer >= 1")
        self.config = resolve_config(self.presets, preset, overrides, self.name)
        for key, allowed in _CHOICES.items():
            check_choice(key, self.config[key], allowed)
        self.config["seq_len"] = seq_len
        if self.config["scaling"] == "toolbox":  # VH kept down to -32.5 dB (api docstring)
            self.s1_db_range = TOOLBOX_S1_DB_RANGE
        self.device = torch.device("cpu")
        self._net: Seq2PointNet | None = None

    def _seq_len(self) -> int:
        seq_len = self.config["seq_len"]
        if seq_len is None:
            raise UsageError("seq_len: missing; Seq2point is tied to L, pass seq_len "
                             "(crbench train --L N) or load a checkpoint")
        return int(seq_len)

    @property
    def net(self) -> Seq2PointNet:
        """The network, built on first use (so that ``fit`` seeds its initialisation)."""
        if self._net is None:
            self._net = self._build().to(self.device)
        return self._net

    def _build(self) -> Seq2PointNet:
        c = self.config
        net = Seq2PointNet(self._seq_len(), c["channels"], c["blocks"], c["fusion_blocks"],
                           c["res_scale"], c["first_pad"])
        if c["init"] == "normal":
            init_normal(net)
        return net

    def parameter_counts(self) -> dict[str, int]:
        """``{"network": N}`` (the multi-temporal network; built on the meta device, without
        touching the RNG, when it does not exist yet) and, with branch pretraining,
        ``"pretrain_head"``: the single-date head's parameters."""
        net = self._net
        if net is None:
            with torch.device("meta"):
                net = self._build()
        counts = {"network": sum(p.numel() for p in net.parameters())}
        if self.config["pretrain_steps"] > 0:
            with torch.device("meta"):
                mono = MonoTemporalNet(net.branch, self.config["channels"],
                                       self.config["scaling"] == "toolbox")
            counts["pretrain_head"] = sum(p.numel() for p in mono.head.parameters())
        return counts

    def to(self, device: torch.device | str) -> Seq2Point:
        self.device = torch.device(device)
        if self._net is not None:
            self._net.to(self.device)
        return self

    # -- inference
    def predict(self, inputs: Inputs) -> torch.Tensor:
        """(B, 13, H, W) in [0, 1] on the inputs' device."""
        net = self.net  # built here, so a missing seq_len is reported as such
        if inputs.seq_len != net.seq_len:
            raise UsageError(f"inputs: L={inputs.seq_len} but this Seq2point model is built for "
                             f"seq_len={self.config['seq_len']}; use a model trained for "
                             f"L={inputs.seq_len}")
        with eval_mode(net):
            pred = self._forward01(inputs.to(self.device))
        return pred.to(inputs.s2.device)

    def _forward01(self, inputs: Inputs) -> torch.Tensor:
        with autocast(self.device):
            y = self.net(network_input(inputs, self.config["scaling"]))
        # the toolbox maps tanh to [0, 5] by 5 (y + 1) / 2 and scores it / 5: the same map
        return from_network_range(y)

    # -- checkpoints
    def save(self, path: Path) -> None:
        save_checkpoint(Path(path), self.net.state_dict(), self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Seq2Point:
        """A fresh model from a stored config."""
        rest = {k: v for k, v in config.items() if k not in ("method", "preset", "seq_len")}
        return cls(seq_len=config.get("seq_len"), preset=config.get("preset", "full"), **rest)

    @classmethod
    def load(cls, path: Path, **expect: Any) -> Seq2Point:
        """Load a checkpoint directory; ``expect`` (e.g. ``seq_len=4``) must match its config."""
        state, config = load_checkpoint(Path(path), method=cls.name, **expect)
        model = cls.from_config(config)
        load_weights(model.net, state, Path(path))
        return model

    # -- training
    def training_parts(self, total_steps: int, device: torch.device) -> TrainParts:
        """Optimizer, LR schedule and L1 step function for :mod:`crbench.training`."""
        self.to(device)
        c, net = self.config, self.net
        opt = torch.optim.Adam(net.parameters(), lr=c["lr"], betas=(c["beta1"], c["beta2"]))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_decay(total_steps,
                                                                    c["decay_start"]))
        freeze = int(c["freeze_steps"])

        def step_fn(batch: Batch, ctx: StepContext) -> dict[str, float]:
            net.branch.requires_grad_(ctx.step >= freeze)
            inputs = batch.inputs.to(ctx.device, non_blocking=True)
            target = batch.target.to(ctx.device, non_blocking=True)
            with ctx.autocast():
                loss = l1_loss(ctx.ddp(net)(network_input(inputs, c["scaling"])), target, c)
            ctx.backward_step(loss, "model")
            return {"l1": float(loss.detach())}

        return TrainParts(model=net, config=self.config, step_fn=step_fn,
                          optimizers={"model": opt}, schedulers={"model": sched},
                          predict_fn=self._forward01, unused_parameters=freeze > 0)

    def pretrain_parts(self, total_steps: int, device: torch.device) -> TrainParts:
        """Parts for mono-temporal branch pretraining (one random input date per sample)."""
        self.to(device)
        c = self.config
        toolbox = c["scaling"] == "toolbox"
        mono = MonoTemporalNet(self.net.branch, c["channels"], toolbox).to(device)
        if c["init"] == "normal":
            init_normal(mono.head)
        opt = torch.optim.Adam(mono.parameters(), lr=c["lr"], betas=(c["beta1"], c["beta2"]))

        def step_fn(batch: Batch, ctx: StepContext) -> dict[str, float]:
            x = network_input(batch.inputs.to(ctx.device), c["scaling"])
            # one date per sample, drawn for the whole global batch (same under DDP)
            share = ctx.batch_share(x.shape[0])
            pick = share.take(torch.randint(x.shape[1], (share.global_size,), device=ctx.device))
            x = x[torch.arange(x.shape[0], device=ctx.device), pick]
            with ctx.autocast():
                loss = l1_loss(ctx.ddp(mono)(x), batch.target.to(ctx.device), c,
                               tanh_output=not toolbox)
            ctx.backward_step(loss, "mono")
            return {"l1_mono": float(loss.detach())}

        config = self.config | {"stage": "pretrain"}
        return TrainParts(model=mono, config=config, step_fn=step_fn, optimizers={"mono": opt})

    def fit(self, data_root: Path, out: Path, *, steps: int | None = None,
            batch_size: int | None = None, device: str | None = None, resume: bool = False,
            seed: int = 0, progress: bool = True, workers: int = 0, region: str = "all",
            crop: int | None = None) -> Path:
        """Train on the train split (``train_sampler``: random, or the toolbox's fixed rule in the
        toolbox preset); checkpoints and history.csv in ``out``.
        A tree without S1 for the train split is refused (UsageError naming ``data_root``)."""
        check_train_s1(self.name, self.needs, data_root, region)
        c = self.config
        opts = TrainOptions.from_config(
            c, self._seq_len(), batch_size, self.s1_db_range, steps=steps, device=device,
            resume=resume, seed=seed, progress=progress, workers=workers, region=region,
            crop=crop)
        with distributed.session(pick_device(device)):  # one process group for both stages
            if c["pretrain_steps"] > 0:
                pre = TrainOptions(**{**opts.__dict__, "steps": c["pretrain_steps"],
                                      "val_samples": 0})
                fit_on_dataset(data_root, Path(out) / "pretrain", pre, self.pretrain_parts)
            return fit_on_dataset(data_root, out, opts, self.training_parts)
