"""The MmDM noise predictor: an ADM U-Net ("Diffusion Models Beat GANs", Dhariwal & Nichol 2021)
expressed with diffusers' :class:`~diffusers.UNet2DModel`.

Input: the noisy main modality X_t (13 S2 bands) stacked with the noisy auxiliary modality A_t
(2 S1 bands); output: 2 x 13 channels, the noise estimate and the learned-range variance
interpolation ``v`` of improved DDPM. Levels whose resolution is listed in
``attention_resolutions`` use attention blocks, the others plain residual blocks; up/downsampling
is residual (BigGAN style), the time embedding enters through adaptive group norm
(scale-shift), and the output convolutions of every residual block, attention block and of the
network are zero-initialised as in ADM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from diffusers import UNet2DModel
from torch import nn

from crbench.constants import N_S1_BANDS, N_S2_BANDS
from crbench.errors import UsageError
from crbench.torchutil import crop_to, pad_to_multiple

NET_KEYS = ("image_size", "base_channels", "channel_mult", "num_res_blocks",
            "attention_resolutions", "num_heads", "dropout")


def _block_types(image_size: int, n_levels: int, attention_resolutions: list[int]
                 ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Down/up block type names: attention where the level's resolution is listed."""
    attn = [image_size // 2**i in set(attention_resolutions) for i in range(n_levels)]
    down = tuple("AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attn))
    return down, up


def _check(cfg: Mapping[str, Any]) -> None:
    base = int(cfg["base_channels"])
    if base <= 0 or base % 32:
        raise UsageError(f"base_channels: got {base!r}, expected a positive multiple of 32 "
                         f"(group norm uses 32 groups)")
    if not cfg["channel_mult"]:
        raise UsageError("channel_mult: got an empty list, expected e.g. [1, 1, 2, 2, 4, 4]")
    for m in cfg["channel_mult"]:
        if base * int(m) % int(cfg["num_heads"]):
            raise UsageError(f"num_heads: {cfg['num_heads']!r} does not divide the "
                             f"{base * int(m)} channels of a level")


def build_unet(cfg: Mapping[str, Any]) -> UNet2DModel:
    """Build the ADM-style U-Net described by ``cfg`` (keys in :data:`NET_KEYS`)."""
    _check(cfg)
    mult = [int(m) for m in cfg["channel_mult"]]
    channels = tuple(int(cfg["base_channels"]) * m for m in mult)
    down, up = _block_types(int(cfg["image_size"]), len(mult),
                            [int(r) for r in cfg["attention_resolutions"]])
    net = UNet2DModel(
        sample_size=int(cfg["image_size"]), in_channels=N_S2_BANDS + N_S1_BANDS,
        out_channels=2 * N_S2_BANDS, block_out_channels=channels,
        down_block_types=down, up_block_types=up, layers_per_block=int(cfg["num_res_blocks"]),
        downsample_type="resnet", upsample_type="resnet", resnet_time_scale_shift="scale_shift",
        attention_head_dim=channels[0] // int(cfg["num_heads"]), attn_norm_num_groups=32,
        dropout=float(cfg["dropout"]), flip_sin_to_cos=True, freq_shift=0)
    _set_heads(net, int(cfg["num_heads"]))
    zero_init_outputs(net)
    return net


def _set_heads(net: nn.Module, heads: int) -> None:
    """Give every attention layer ``heads`` heads (ADM: a fixed head count per layer)."""
    from diffusers.models.attention_processor import Attention

    for mod in net.modules():
        if isinstance(mod, Attention):
            mod.heads = heads
            mod.scale = (mod.inner_dim // heads) ** -0.5


def zero_init_outputs(net: nn.Module) -> None:
    """Zero the last layer of each residual branch, each attention output and the network
    output, as ADM's ``zero_module`` does; the skip paths carry the signal at initialisation."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    for mod in net.modules():
        if isinstance(mod, ResnetBlock2D):
            _zero(mod.conv2)
        elif isinstance(mod, Attention) and mod.to_out is not None:
            _zero(mod.to_out[0])
    _zero(net.conv_out)


def _zero(layer: nn.Module) -> None:
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()


class MmDMNet(nn.Module):
    """Wraps the U-Net: ``forward(x_t, a_t, t)`` -> (B, 26, H, W) (epsilon, v)."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.unet = build_unet(cfg)
        self.multiple = 2 ** (len(cfg["channel_mult"]) - 1)

    def forward(self, x_t: torch.Tensor, a_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict (epsilon, v) for the main modality from both noisy modalities; images of
        any size (edge-padded to a multiple of the U-Net's downsampling factor, the output
        cropped back), e.g. training on whole 37 x 50 patches."""
        x, size = pad_to_multiple(torch.cat([x_t, a_t], dim=1), self.multiple)
        return crop_to(self.unet(x, t, return_dict=False)[0], size)
