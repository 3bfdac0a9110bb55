"""STGAN's networks as the SEN12MS-CR-TS toolbox builds them (``--model temporal_branched``).

Written from the toolbox's published structure (``models/networks_branched.py``:
``ResnetGenerator``, ``IndependentResnetGenerator``, ``ResnetBlock``, ``NLayerDiscriminator``,
``init_weights``), with the same module names, so a toolbox ``net_G`` state dict maps onto
:class:`ToolboxGenerator` key for key (``model_initial.*``, ``model_intermediate.*``,
``model_final.*``) and ``net_D`` onto :class:`ToolboxDiscriminator` (``model.*``).

Generator: a shared per-date encoder (reflect pad 3, conv 7x7 -> ngf, norm, ReLU); for every
pair of dates (0, 1), (0, 2), (1, 2) the two feature maps are concatenated (2 ngf channels)
and run through one shared trunk (``n_down`` stride-2 convs doubling the width, then
``n_blocks`` residual blocks at 2 ngf 2^n_down channels); the pair outputs are concatenated
(3 x 2 ngf 2^n_down channels) and decoded (``n_down`` transposed convs halving the width,
reflect pad 3, conv 7x7 with bias, tanh). ``resnet_9blocks``: n_down = 3 (trunk 1,024 channels
at ngf = 64); ``independent_resnet_9blocks``: n_down = 2 (512 channels). The toolbox's
"independent" generator builds its three encoders and three trunks from one list of layer
objects each, so they share their weights (its ``net.parameters()`` lists them once): it
differs from ``resnet_9blocks`` only in the number of downsamplings, and it is built here
that way. Convolutions followed by batch norm have no bias (instance norm: with bias).

Residual block: reflect pad, conv 3x3, norm, ReLU, dropout (when enabled), reflect pad,
conv 3x3, norm, **ReLU** (the toolbox's block ends with a ReLU before the skip addition).

Discriminator: the pix2pix PatchGAN (``netD basic``: 3 layers, 70x70 receptive field), no conv
bias before batch norm. Initialisation (``init_type normal``): conv and linear weights
N(0, 0.02), biases 0; batch-norm weights N(1, 0.02), biases 0.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

TRUNK_DOWNSAMPLINGS: dict[str, int] = {"resnet_9blocks": 3, "independent_resnet_9blocks": 2}
"""Toolbox generator name -> number of stride-2 downsamplings of its trunk."""
TOOLBOX_DATES = 3
"""The toolbox's generator reads exactly the first three dates (``input[0..2]``)."""


def toolbox_norm(kind: str, ch: int) -> nn.Module:
    """The toolbox's ``get_norm_layer``: batch (affine, running stats), instance (neither)."""
    if kind == "batch":
        return nn.BatchNorm2d(ch, affine=True, track_running_stats=True)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)
    return nn.Identity()


class ToolboxResnetBlock(nn.Module):
    """The toolbox's ``ResnetBlock`` (reflect padding): x + conv_block(x)."""

    def __init__(self, ch: int, norm: str, dropout: float, bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=bias),
                                   toolbox_norm(norm, ch), nn.ReLU(True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=bias),
                   toolbox_norm(norm, ch), nn.ReLU(True)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ToolboxGenerator(nn.Module):
    """The toolbox's pairwise ResNet generator: (B, L, C_in, H, W) -> (B, C_out, H, W).

    Args:
        in_ch: channels of one date (bands, + 2 with S1).
        out_ch: predicted bands.
        ngf: width of the encoder (64 in the toolbox).
        n_down: trunk downsamplings (:data:`TRUNK_DOWNSAMPLINGS`).
        n_blocks: residual blocks of the trunk (9).
        norm: "batch" (the toolbox's choice for this model), "instance" or "none".
        dropout: dropout rate inside each residual block (0.5 unless ``--no_dropout``).
        n_dates: dates the generator is built for (the toolbox: 3); H, W % 2^n_down == 0.
    """

    def __init__(self, in_ch: int, out_ch: int, ngf: int, n_down: int, n_blocks: int,
                 norm: str, dropout: float, n_dates: int = TOOLBOX_DATES) -> None:
        super().__init__()
        bias = norm != "batch"
        self.n_dates = n_dates
        self.stride = 2 ** n_down
        n_pairs = math.comb(n_dates, 2)
        self.model_initial = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7, bias=bias), toolbox_norm(norm, ngf),
            nn.ReLU(True))
        trunk: list[nn.Module] = []
        for i in range(n_down):
            ch = 2 * ngf * 2 ** i
            trunk += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1, bias=bias),
                      toolbox_norm(norm, 2 * ch), nn.ReLU(True)]
        width = 2 * ngf * 2 ** n_down
        trunk += [ToolboxResnetBlock(width, norm, dropout, bias) for _ in range(n_blocks)]
        self.model_intermediate = nn.Sequential(*trunk)
        final: list[nn.Module] = []
        for i in range(n_down):
            ch = 2 * n_pairs * ngf * 2 ** (n_down - i)
            final += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1,
                                         bias=bias),
                      toolbox_norm(norm, ch // 2), nn.ReLU(True)]
        final += [nn.ReflectionPad2d(3), nn.Conv2d(2 * n_pairs * ngf, out_ch, 7), nn.Tanh()]
        self.model_final = nn.Sequential(*final)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each date and each pair is its own call, as in the toolbox: in training, batch norm
        takes its statistics per date and per pair, not over all of them at once."""
        n = x.shape[1]
        if n != self.n_dates:
            raise ValueError(f"x: {n} dates but the generator is built for {self.n_dates}")
        feats = [self.model_initial(x[:, t]) for t in range(n)]
        trunk = [self.model_intermediate(torch.cat([feats[i], feats[j]], 1))
                 for i, j in itertools.combinations(range(n), 2)]
        return self.model_final(torch.cat(trunk, 1))


class ToolboxDiscriminator(nn.Module):
    """The toolbox's ``NLayerDiscriminator`` (PatchGAN); raw scores, no sigmoid."""

    def __init__(self, in_ch: int, ndf: int, norm: str, n_layers: int = 3) -> None:
        super().__init__()
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, True)]
        mult = 1
        for k in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** k, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2 if k < n_layers else 1,
                                 padding=1, bias=bias),
                       toolbox_norm(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
