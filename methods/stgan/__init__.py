"""STGAN: spatiotemporal generator networks for multi-temporal cloud removal.

Paper: V. Sarukkai, A. Jain, B. Uzkent, S. Ermon, "Cloud Removal from Satellite Images using
Spatiotemporal Generator Networks", IEEE/CVF Winter Conference on Applications of Computer
Vision (WACV) 2020, doi:10.1109/WACV45572.2020.9093564; used as a baseline in the
SEN12MS-CR-TS benchmark (Ebel et al. 2022, doi:10.1109/TGRS.2022.3146246).

Bands: by default (``bands="rgbn"``) the network sees and predicts B04, B03, B02, B08
(``crbench.constants.RGBN_IDX``) of each date, as in the benchmark; the 13-band prediction takes
the other 9 bands from the mosaicing estimate (``crbench_methods.mosaicing.mosaic``), so only
the 4 RGBN bands are STGAN's own (``self.bands`` says so) and ``crbench run`` scores only
those 4 (the manifest's ``scored_bands``; ``crbench report`` marks the rows, "stgan†: scored on
B04, B03, B02, B08 only"), as the toolbox scores its 4-band STGAN. ``bands="nbgr"``
is the same 4 bands in the toolbox's channel order B08, B02, B03, B04 (its ``[7, 1, 2, 3]``),
the default of the ``toolbox`` preset. ``bands="all"`` is the 13-band
variant (13 in, 13 out), the default of the ``tiny`` preset: with ``"rgbn"`` the 9 mosaicing
bands dominate the 13-band cloudy-region error (on the demo tree a well-trained RGBN STGAN
scores nrmse_cloudy 0.32, above least cloudy's 0.26, although its own bands score 0.09 against
least cloudy's 0.32 there). ``use_s1=True`` appends VV, VH to every date's input.
Everything is mapped to [-1, 1] for the networks; predictions go back to [0, 1], clamped.

Generator (``generator="resnet"``, the branched ResNet, default): a shared per-date encoder
(reflect pad 3, conv 7x7 -> ngf, norm, ReLU); for every pair of dates (i < j, temporal order)
the two feature maps are concatenated and fused by a shared conv 3x3 (2 ngf -> ngf, norm, ReLU);
the pair features are **averaged over all L(L-1)/2 pairs**, so the generator's weights do not
depend on L (any L >= 2 works; L = 1 pairs the single date with itself). The trunk then has two
stride-2 downsamplings (ngf -> 2 ngf -> 4 ngf), ``n_blocks`` (9) residual blocks, two
transposed-conv upsamplings and a 7x7 conv with tanh. ``generator="unet"`` is the branched
U-Net: a shared per-date U-Net encoder (``unet_depth`` stride-2 4x4 convs), pair fusion (1x1 conv
on concatenated pairs, averaged over pairs) at every level, and a U-Net decoder with skips from
the fused features. Inputs are edge-padded to a multiple of the total stride and cropped back.

Discriminator: 70x70 PatchGAN (3 stride-2 layers, ndf = 64) on the concatenation of all input
dates and the output (or target); it is tied to the training L (``config["train_seq_len"]``) but
is only needed for training and lives in ``trainer.pt``, not in the model checkpoint.

Loss: LSGAN, ``lambda_gan * GAN + lambda_l1 * L1`` with lambda_l1 = 100 (L1 in [-1, 1]);
discriminator loss 0.5 (MSE(D(real), 1) + MSE(D(fake), 0)). Adam lr 2e-4, betas (0.5, 0.999)
for both networks, constant LR (``decay_start`` < 1 enables a linear decay from that fraction
of the steps on).

Toolbox preset (``--preset toolbox``): the SEN12MS-CR-TS toolbox's STGAN (``--model
temporal_branched(_ir_modified)``), networks in :mod:`.toolbox`: a shared per-date 7x7
encoder, one trunk run on each pair of dates, the 3 pair outputs **concatenated** before the
decoder; ``generator=independent_resnet_9blocks`` (default: 2 downsamplings, trunk 512
channels) or ``resnet_9blocks`` (3, 1,024); batch norm, dropout 0.5 in every residual block,
a ReLU after each block's second norm, N(0, 0.02) init of both networks, the toolbox's
PatchGAN (no conv bias before batch norm), LSGAN, lambda_L1 100, Adam 2e-4 (0.5, 0.999), batch
1, 200 epochs with the lr decaying linearly to 0 over the second half (per step; the toolbox
steps per epoch, from 1 - 1/101 down to 1/101). Widths can be reduced for tests
(``--set ngf=8``). Parameters (``STGAN.parameter_counts``, equal to the toolbox's
``print_networks`` for the same options, checked in tests/test_stgan_toolbox.py):

=============================================  ===========  =============
generator (bands, S1)                          generator    discriminator
=============================================  ===========  =============
independent_resnet_9blocks (nbgr, no S1)       57,323,140   2,778,945
independent_resnet_9blocks (all, S1)           57,520,717   2,815,809
resnet_9blocks (nbgr, no S1)                   231,934,596  2,778,945
crbench ``full`` (resnet, rgbn, no S1)         11,458,244   2,778,049
=============================================  ===========  =============

L: the toolbox's generator reads ``input[0]``, ``input[1]``, ``input[2]`` only: with
``--n_input_samples`` > 3 it silently ignores the later dates (while its discriminator, built
for ``n_input_samples * input_nc + output_nc`` channels, sees all of them) and with fewer than
3 it fails (IndexError). crbench's toolbox generators are fixed to L = 3: any other L is
refused in one line naming ``--L`` when the model is built (``crbench train``), when a
checkpoint is loaded for ``crbench run`` (CheckpointError) and by ``predict``. crbench's own
generators (``resnet``, ``unet``) take any L.

========================  =============================  ===================================
                          crbench ``full`` (default)     ``toolbox`` preset
========================  =============================  ===================================
bands (channel order)     rgbn: B04, B03, B02, B08       nbgr: B08, B02, B03, B04
scored bands (``run``)    the 4 own bands                the 4 own bands
pair fusion               conv 3x3, **mean** over pairs  trunk per pair, **concatenated**
trunk                     2 down, 256 ch, after fusion   2 down, 512 ch (or 3, 1,024)
L                         any                            3 only
norm / dropout            instance / none                batch / 0.5
residual block            ... conv, norm (no ReLU)       ... conv, norm, ReLU
init                      PyTorch default                N(0, 0.02), BN weights N(1, 0.02)
discriminator             PatchGAN 70x70, conv biases    PatchGAN 70x70, no bias before BN
batch / epochs / lr       4 / 20 / constant 2e-4         1 / 200 / linear decay, 2nd half
training samples          random (``train_sampler``)     fixed: the toolbox's rule
========================  =============================  ===================================

Not reproduced: the toolbox skips an optimizer step whose gradients hold NaN or inf; S1 is
clipped by crbench's data layer (DESIGN.md), as for every method.
"""

from __future__ import annotations

import enum
import itertools
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from crbench.api import Batch, Inputs, Need, TrainableMethod
from crbench.constants import N_S1_BANDS, N_S2_BANDS, RGBN_IDX, S2_BANDS
from crbench.errors import CheckpointError, UsageError, check_choice
from crbench.torchutil import (
    autocast,
    check_config,
    crop_to,
    eval_mode,
    init_normal,
    load_checkpoint,
    load_weights,
    pad_to_multiple,
    read_config,
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

from .toolbox import (
    TOOLBOX_DATES,
    TRUNK_DOWNSAMPLINGS,
    ToolboxDiscriminator,
    ToolboxGenerator,
)


class Bands(enum.Enum):
    """Which S2 bands STGAN sees and predicts (and in which channel order)."""

    RGBN = "rgbn"  # B04, B03, B02, B08
    NBGR = "nbgr"  # B08, B02, B03, B04: the toolbox's 4-band STGAN (bands [7, 1, 2, 3])
    ALL = "all"


BAND_IDX: dict[str, list[int]] = {Bands.RGBN.value: list(RGBN_IDX),
                                  Bands.NBGR.value: [7, 1, 2, 3],
                                  Bands.ALL.value: list(range(N_S2_BANDS))}
"""Band choice -> S2 band indices in the network's channel order."""


class Generator(enum.Enum):
    """Generator variants: crbench's (``resnet``, ``unet``) and the toolbox's two."""

    RESNET = "resnet"
    UNET = "unet"
    RESNET_9BLOCKS = "resnet_9blocks"
    INDEPENDENT_RESNET_9BLOCKS = "independent_resnet_9blocks"


def is_toolbox_generator(name: str) -> bool:
    """True for the toolbox's generators (:mod:`.toolbox`), which are fixed to 3 dates."""
    return name in TRUNK_DOWNSAMPLINGS


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(ch)
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    return nn.Identity()


def _pairs(n: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(n), 2)) if n > 1 else [(0, 0)]


def fuse_pairs(feats: torch.Tensor, fusion: nn.Module) -> torch.Tensor:
    """(B, L, C, H, W) -> (B, C', H, W): ``fusion`` of each concatenated pair, mean over pairs."""
    b, n = feats.shape[:2]
    pairs = _pairs(n)
    i, j = zip(*pairs, strict=True)
    cat = torch.cat([feats[:, list(i)], feats[:, list(j)]], dim=2)  # (B, P, 2C, H, W)
    fused = fusion(cat.flatten(0, 1))
    return fused.reshape(b, len(pairs), *fused.shape[1:]).mean(1)


# ----------------------------------------------------------------------------- generators
class ResnetBlock(nn.Module):
    """pix2pix residual block: reflect pad, conv3x3, norm, ReLU, reflect pad, conv3x3, norm."""

    def __init__(self, ch: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(norm, ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(norm, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class BranchedResnet(nn.Module):
    """Branched ResNet generator: (B, L, C_in, H, W) -> (B, C_out, H, W), H, W % 4 == 0."""

    stride = 4

    def __init__(self, in_ch: int, out_ch: int, ngf: int, n_blocks: int, norm: str) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7),
                                     _norm(norm, ngf), nn.ReLU(True))
        self.fusion = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(2 * ngf, ngf, 3),
                                    _norm(norm, ngf), nn.ReLU(True))
        layers: list[nn.Module] = []
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                       _norm(norm, ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1),
                       _norm(norm, ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh()]
        self.trunk = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = x.shape
        feats = self.encoder(x.reshape(b * n, c, h, w))
        return self.trunk(fuse_pairs(feats.reshape(b, n, *feats.shape[1:]), self.fusion))


class BranchedUnet(nn.Module):
    """Branched U-Net generator: shared per-date encoder, pair fusion at every level."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int, depth: int, norm: str) -> None:
        super().__init__()
        self.stride = 2 ** depth
        chs = [ngf * min(2 ** k, 8) for k in range(depth)]
        self.down = nn.ModuleList()
        self.fuse = nn.ModuleList()
        prev = in_ch
        for k, ch in enumerate(chs):
            block: list[nn.Module] = [nn.Conv2d(prev, ch, 4, stride=2, padding=1)]
            if 0 < k < depth - 1:
                block.append(_norm(norm, ch))
            block.append(nn.LeakyReLU(0.2, True))
            self.down.append(nn.Sequential(*block))
            self.fuse.append(nn.Sequential(nn.Conv2d(2 * ch, ch, 1), nn.LeakyReLU(0.2, True)))
            prev = ch
        self.up = nn.ModuleList()
        for k in range(depth - 1, 0, -1):
            in_up = chs[k] if k == depth - 1 else 2 * chs[k]
            self.up.append(nn.Sequential(
                nn.ConvTranspose2d(in_up, chs[k - 1], 4, stride=2, padding=1),
                _norm(norm, chs[k - 1]), nn.ReLU(True)))
        last_in = 2 * chs[0] if depth > 1 else chs[0]
        self.final = nn.Sequential(nn.ConvTranspose2d(last_in, out_ch, 4, stride=2, padding=1),
                                   nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = x.shape
        feats = x.reshape(b * n, c, h, w)
        skips = []
        for down, fuse in zip(self.down, self.fuse, strict=True):
            feats = down(feats)
            skips.append(fuse_pairs(feats.reshape(b, n, *feats.shape[1:]), fuse))
        y = skips.pop()
        for up in self.up:
            y = torch.cat([up(y), skips.pop()], dim=1)
        return self.final(y)


class PaddedGenerator(nn.Module):
    """Edge-pads (B, L, C, H, W) to a multiple of the generator's stride, crops the output."""

    def __init__(self, net: BranchedResnet | BranchedUnet | ToolboxGenerator) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, int(self.net.stride))
        return crop_to(self.net(x), size)


def patch_discriminator(in_ch: int, ndf: int, norm: str, n_layers: int = 3) -> nn.Sequential:
    """pix2pix PatchGAN (70x70 receptive field for n_layers=3); outputs raw scores."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1),
                               nn.LeakyReLU(0.2, True)]
    ch = ndf
    for k in range(1, n_layers + 1):
        nxt = ndf * min(2 ** k, 8)
        stride = 2 if k < n_layers else 1
        layers += [nn.Conv2d(ch, nxt, 4, stride=stride, padding=1), _norm(norm, nxt),
                   nn.LeakyReLU(0.2, True)]
        ch = nxt
    layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- method
_FULL: dict[str, Any] = {
    "bands": Bands.RGBN.value, "generator": Generator.RESNET.value, "use_s1": False,
    "ngf": 64, "n_blocks": 9, "unet_depth": 6, "ndf": 64, "norm": "instance",
    "dropout": 0.0, "init": "default",
    "lambda_gan": 1.0, "lambda_l1": 100.0, "lr": 2e-4, "beta1": 0.5, "beta2": 0.999,
    "decay_start": 1.0, "batch_size": 4, "epochs": 20, "val_samples": 4, "val_every": 0,
    "train_sampler": "random",
}
# tiny predicts all 13 bands: with "rgbn", 9 of the 13 bands scored by nrmse_cloudy are the
# mosaicing estimate's, so even a perfect RGBN fill cannot get clearly below least cloudy
# tiny: batch norm (as the toolbox) instead of instance norm: on the demo tree after 100 steps
# nrmse_cloudy 0.067 against 0.090, and recognisable shapes in Figure 3 (instance norm
# normalises away each image's brightness, which the decoder must then relearn)
_TINY: dict[str, Any] = _FULL | {"bands": Bands.ALL.value, "ngf": 16, "n_blocks": 2,
                                 "unet_depth": 3, "ndf": 16, "norm": "batch", "batch_size": 2,
                                 "epochs": 1, "val_samples": 2, "val_every": 25}
# the toolbox's options for `--model temporal_branched(_ir_modified) --netG
# independent_resnet_9blocks`: batch norm, dropout 0.5, init normal 0.02, lsgan, lambda_L1 100,
# lambda_GAN 1, Adam 2e-4 (0.5, 0.999), batch 1, niter 100 + niter_decay 100 (linear decay
# over the second half)
_TOOLBOX: dict[str, Any] = _FULL | {
    "bands": Bands.NBGR.value, "generator": Generator.INDEPENDENT_RESNET_9BLOCKS.value,
    "norm": "batch", "dropout": 0.5, "init": "normal", "decay_start": 0.5, "batch_size": 1,
    "epochs": 200, "train_sampler": "fixed"}
_NORMS = ("instance", "batch", "none")
_INITS = ("default", "normal")
INIT_GAIN = 0.02  # std of the toolbox's normal initialisation
MIN_CROP = 32  # smallest training crop: the discriminator's last maps must exceed 1x1


class STGAN(TrainableMethod):
    """STGAN (Sarukkai et al. 2020). See the module docstring.

    Args:
        seq_len: L used for training (the discriminator's input); crbench's generators
            accept any L, the toolbox's only 3 (other values: UsageError). Defaults to 3.
        preset: "full" (crbench's configuration), "tiny" (CPU tests) or "toolbox" (the
            SEN12MS-CR-TS toolbox's networks and recipe, L = 3 only; module docstring).
        **overrides: any preset key, e.g. ``bands="all"``, ``generator="unet"``,
            ``generator="resnet_9blocks"`` (toolbox preset), ``ngf=8`` (small widths).

    Parameter counts (:meth:`parameter_counts`, L = 3): toolbox preset 57,323,140 (generator)
    and 2,778,945 (discriminator), with ``generator=resnet_9blocks`` 231,934,596 and
    2,778,945; full preset 11,458,244 and 2,778,049 (more in the module docstring).
    """

    name: ClassVar[str] = "stgan"
    needs: ClassVar[frozenset[Need]] = frozenset({Need.MASKS, Need.S1})
    presets: ClassVar[dict[str, dict[str, Any]]] = {"full": _FULL, "tiny": _TINY,
                                                    "toolbox": _TOOLBOX}

    def __init__(self, seq_len: int | None = None, preset: str = "full",
                 **overrides: Any) -> None:
        if seq_len is not None and (not isinstance(seq_len, int) or seq_len < 1):
            raise UsageError(f"seq_len: bad value {seq_len!r}; expected an integer >= 1")
        cfg = resolve_config(self.presets, preset, overrides, self.name)
        check_choice("bands", cfg["bands"], [b.value for b in Bands])
        check_choice("generator", cfg["generator"], [g.value for g in Generator])
        check_choice("norm", cfg["norm"], list(_NORMS))
        check_choice("init", cfg["init"], list(_INITS))
        _check_toolbox(cfg, seq_len)
        cfg["train_seq_len"] = 3 if seq_len is None else seq_len
        self.config = cfg
        self.band_idx = list(BAND_IDX[cfg["bands"]])
        self.bands = tuple(S2_BANDS[i] for i in self.band_idx)
        self.device = torch.device("cpu")
        self._generator: PaddedGenerator | None = None

    @property
    def generator(self) -> PaddedGenerator:
        """The generator, built on first use (so that ``fit`` seeds its initialisation)."""
        if self._generator is None:
            self._generator = PaddedGenerator(self._build_generator()).to(self.device)
        return self._generator

    @property
    def n_in(self) -> int:
        """Channels of one input date: the chosen bands, + VV, VH with ``use_s1``."""
        return len(self.band_idx) + (N_S1_BANDS if self.config["use_s1"] else 0)

    def _build_generator(self) -> BranchedResnet | BranchedUnet | ToolboxGenerator:
        c, n_out = self.config, len(self.band_idx)
        net: BranchedResnet | BranchedUnet | ToolboxGenerator
        if is_toolbox_generator(c["generator"]):
            net = ToolboxGenerator(self.n_in, n_out, c["ngf"], TRUNK_DOWNSAMPLINGS[c["generator"]],
                                   c["n_blocks"], c["norm"], c["dropout"], TOOLBOX_DATES)
        elif c["generator"] == Generator.UNET.value:
            net = BranchedUnet(self.n_in, n_out, c["ngf"], c["unet_depth"], c["norm"])
        else:
            net = BranchedResnet(self.n_in, n_out, c["ngf"], c["n_blocks"], c["norm"])
        return init_normal(net, INIT_GAIN) if c["init"] == "normal" else net

    def _build_discriminator(self) -> nn.Module:
        """The PatchGAN on all ``train_seq_len`` input dates and the output: the toolbox's
        (no conv bias before batch norm) with a toolbox generator, else crbench's."""
        c = self.config
        in_ch = c["train_seq_len"] * self.n_in + len(self.band_idx)
        disc = (ToolboxDiscriminator(in_ch, c["ndf"], c["norm"])
                if is_toolbox_generator(c["generator"])
                else patch_discriminator(in_ch, c["ndf"], c["norm"]))
        return init_normal(disc, INIT_GAIN) if c["init"] == "normal" else disc

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters of the generator and the discriminator (each shared tensor
        once, as the toolbox's ``print_networks`` counts). Builds the networks on torch's
        current default device when the generator does not exist yet, so under
        ``with torch.device("meta")`` nothing is allocated."""
        gen = self._generator if self._generator is not None else self._build_generator()
        return {"generator": _count(gen), "discriminator": _count(self._build_discriminator())}

    def network_input(self, inputs: Inputs) -> torch.Tensor:
        """(B, L, C, H, W) in [-1, 1]: the chosen S2 bands (+ S1) of every date."""
        if is_toolbox_generator(self.config["generator"]) and inputs.seq_len != TOOLBOX_DATES:
            raise UsageError(f"inputs: L={inputs.seq_len} but the toolbox generator "
                             f"{self.config['generator']!r} is built for L={TOOLBOX_DATES}")
        x = inputs.s2[:, :, self.band_idx]
        if self.config["use_s1"]:
            x = torch.cat([x, inputs.s1], dim=2)
        return to_network_range(x.float())

    def to(self, device: torch.device | str) -> STGAN:
        self.device = torch.device(device)
        if self._generator is not None:
            self._generator.to(self.device)
        return self

    # -- inference
    def predict_bands(self, inputs: Inputs) -> torch.Tensor:
        """STGAN's own bands (``self.bands``), (B, 4 or 13, H, W) in [0, 1], model device."""
        with eval_mode(self.generator):
            return self._forward01(inputs.to(self.device))

    def _forward01(self, inputs: Inputs) -> torch.Tensor:
        with autocast(self.device):
            y = self.generator(self.network_input(inputs))
        return from_network_range(y)

    def predict(self, inputs: Inputs) -> torch.Tensor:
        """(B, 13, H, W) in [0, 1]; for the 4-band variants the 9 other bands come from
        mosaicing (``crbench run`` scores only ``self.bands``)."""
        moved = inputs.to(self.device)
        own = self.predict_bands(moved)
        if self.config["bands"] == Bands.ALL.value:
            return own.to(inputs.s2.device)
        from crbench_methods.mosaicing import mosaic

        full = mosaic(moved.s2.float(), moved.masks.float()).float().clone()
        full[:, self.band_idx] = own
        return full.to(inputs.s2.device)

    # -- checkpoints
    def save(self, path: Path) -> None:
        save_checkpoint(Path(path), self.generator.state_dict(), self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> STGAN:
        """A fresh model from a stored config."""
        skip = ("method", "preset", "train_seq_len")
        rest = {k: v for k, v in config.items() if k not in skip}
        return cls(seq_len=config.get("train_seq_len"), preset=config.get("preset", "full"),
                   **rest)

    @classmethod
    def load(cls, path: Path, **expect: Any) -> STGAN:
        """Load a checkpoint. ``seq_len`` in ``expect`` is accepted for any L >= 1 (crbench's
        generators are not tied to L; the toolbox's only to L = 3); other keys must match the
        stored config.

        Raises:
            CheckpointError: another method's checkpoint, a config mismatch, or a toolbox
                generator asked for L != 3.
        """
        seq_len = expect.pop("seq_len", None)
        if seq_len is not None and (not isinstance(seq_len, int) or seq_len < 1):
            raise UsageError(f"seq_len: bad value {seq_len!r}; expected an integer >= 1")
        stored = read_config(Path(path))
        check_config(stored, Path(path), method=cls.name)
        gen = str(stored.get("generator"))
        if is_toolbox_generator(gen) and seq_len not in (None, TOOLBOX_DATES):
            raise CheckpointError(f"checkpoint: {path} holds the toolbox generator {gen!r}, "
                                  f"built for L={TOOLBOX_DATES}, but L={seq_len} was asked "
                                  f"for; evaluate it with --L {TOOLBOX_DATES}")
        state, config = load_checkpoint(Path(path), **expect)
        model = cls.from_config(config)
        load_weights(model.generator, state, Path(path))
        return model

    # -- training
    def training_parts(self, total_steps: int, device: torch.device) -> TrainParts:
        """Generator/discriminator optimizers and the LSGAN + L1 step for crbench.training."""
        self.to(device)
        c, gen = self.config, self.generator
        disc = self._build_discriminator().to(device)
        betas = (c["beta1"], c["beta2"])
        opts = {"gen": torch.optim.Adam(gen.parameters(), lr=c["lr"], betas=betas),
                "disc": torch.optim.Adam(disc.parameters(), lr=c["lr"], betas=betas)}
        scheds = {k: torch.optim.lr_scheduler.LambdaLR(o, linear_decay(total_steps,
                                                                       c["decay_start"]))
                  for k, o in opts.items()}

        def step_fn(batch: Batch, ctx: StepContext) -> dict[str, float]:
            return self._gan_step(batch, ctx, disc)

        return TrainParts(model=gen, config=self.config, step_fn=step_fn, optimizers=opts,
                          schedulers=scheds, extra_modules={"disc": disc},
                          predict_fn=self._forward01, target_bands=self.band_idx)

    def _gan_step(self, batch: Batch, ctx: StepContext, disc: nn.Module) -> dict[str, float]:
        c = self.config
        x = self.network_input(batch.inputs.to(ctx.device, non_blocking=True))
        real = to_network_range(batch.target[:, self.band_idx].to(ctx.device).float())
        cond = x.flatten(1, 2)
        with ctx.autocast():  # through DDP under torchrun: gradients averaged over ranks
            fake = ctx.ddp(self.generator)(x)
            d_real = ctx.ddp(disc)(torch.cat([cond, real], 1)).float()
            d_fake = ctx.ddp(disc)(torch.cat([cond, fake.detach()], 1)).float()
            loss_d = 0.5 * (F.mse_loss(d_real, torch.ones_like(d_real))
                            + F.mse_loss(d_fake, torch.zeros_like(d_fake)))
        ctx.backward_step(loss_d, "disc")
        disc.requires_grad_(False)
        try:  # the frozen discriminator needs no gradient sync: called unwrapped
            with ctx.autocast():
                d_fake = disc(torch.cat([cond, fake], 1)).float()
                loss_gan = F.mse_loss(d_fake, torch.ones_like(d_fake))
                loss_l1 = F.l1_loss(fake.float(), real)
                loss_g = c["lambda_gan"] * loss_gan + c["lambda_l1"] * loss_l1
            ctx.backward_step(loss_g, "gen")
        finally:
            disc.requires_grad_(True)
        return {"g_l1": float(loss_l1.detach()), "g_gan": float(loss_gan.detach()),
                "d": float(loss_d.detach())}

    def fit(self, data_root: Path, out: Path, *, steps: int | None = None,
            batch_size: int | None = None, device: str | None = None, resume: bool = False,
            seed: int = 0, progress: bool = True, workers: int = 0, region: str = "all",
            crop: int | None = None) -> Path:
        """Train on the train split (``train_sampler``: random, or the toolbox's fixed rule in the
        toolbox preset); checkpoints and history.csv in ``out``.
        A tree without S1 for the train split is refused (UsageError naming ``data_root``)."""
        if crop is not None and crop < MIN_CROP:
            raise UsageError(f"crop: {crop} px is too small for the 70x70 PatchGAN "
                             f"discriminator; expected at least {MIN_CROP}")
        check_train_s1(self.name, self.needs, data_root, region)
        c = self.config
        opts = TrainOptions.from_config(
            c, c["train_seq_len"], batch_size, self.s1_db_range, steps=steps, device=device,
            resume=resume, seed=seed, progress=progress, workers=workers, region=region,
            crop=crop)
        return fit_on_dataset(data_root, out, opts, self.training_parts)


def _check_toolbox(cfg: dict[str, Any], seq_len: int | None) -> None:
    """The toolbox generators take exactly 3 dates; dropout exists only in them."""
    if is_toolbox_generator(cfg["generator"]):
        if seq_len is not None and seq_len != TOOLBOX_DATES:
            raise UsageError(
                f"seq_len: {seq_len} is not possible with the toolbox generator "
                f"{cfg['generator']!r}; it is fixed to L={TOOLBOX_DATES} as in the toolbox "
                "(crbench's generator=resnet or unet takes any L)")
    elif cfg["dropout"]:
        raise UsageError(f"dropout: {cfg['dropout']!r} needs a toolbox generator "
                         f"({', '.join(TRUNK_DOWNSAMPLINGS)}), not "
                         f"generator={cfg['generator']!r}; expected dropout=0 with it")
    if not 0 <= cfg["dropout"] < 1:
        raise UsageError(f"dropout: bad value {cfg['dropout']!r}; expected a rate in [0, 1)")


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
