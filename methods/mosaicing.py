"""Mosaicing baseline: per pixel, the mean of the inputs that are clear there.

Baseline of the SEN12MS-CR-TS paper: P. Ebel, Y. Xu, M. Schmitt, X. X. Zhu, "SEN12MS-CR-TS:
A Remote-Sensing Data Set for Multimodal Multitemporal Cloud Removal", IEEE Transactions on
Geoscience and Remote Sensing 60, 2022, doi:10.1109/TGRS.2022.3146246.

A pixel is clear in an input where its cloud mask is 0. Pixels clear in no input get the
constant 0.1 in every band, under every protocol (README "Conventions"): the toolbox's test.py
writes 0.5 in the network's range after mosaicing; its documented test command (README,
``--alter_initial_model``) and every run that also benchmarks its ResNet models use the
"resnet" scaling, S2 in [0, 5], so 0.5 there is 0.1 in [0, 1]. (Under its "default" scaling,
[-1, 1], it would be 0.75.) The literal "0.5 in [0, 1]", crbench's value before, is
``fill=0.5``; 0.1 is also the better estimate of a land surface's reflectance: on the CI tree
mosaicing's nrmse_cloudy at L = 3 is 0.099 with 0.1 against 0.374 with 0.5.

Under ``parity`` the toolbox's mosaic is reproduced exactly: it marks an observation missing
where ``S2 * (1 - mask)`` is exactly 0, band by band, so a clear band whose value is 0 (a blank
date, which that protocol counts as clear, or a zero pixel) is left out of the mean as well.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from crbench.api import Inputs, Method, Need
from crbench.data.sampler import Protocol
from crbench.errors import UsageError

TOOLBOX_FILL = 0.1  # the toolbox's 0.5 in its "resnet" range [0, 5]; every protocol's fill
NO_CLEAR_VALUE = 0.5  # the literal "0.5 in [0, 1]" (``fill=0.5``), crbench's fill before


def mosaic(s2: torch.Tensor, masks: torch.Tensor, fill: float = TOOLBOX_FILL,
           skip_zero: bool = False) -> torch.Tensor:
    """Per-pixel mean over the inputs where ``masks == 0``; ``fill`` where no input is clear.

    Args:
        s2: (B, L, C, H, W) input sequence.
        masks: (B, L, H, W) cloud masks, 1 (or any non-zero value) = cloud.
        fill: value of pixels clear in no input.
        skip_zero: also leave out observations whose value is exactly 0, per band (the
            toolbox's rule; the fill then applies per band).

    Returns:
        (B, C, H, W) float32 mosaic.

    Raises:
        ValueError: shapes that do not fit together.
    """
    if s2.dim() != 5 or masks.dim() != 4 or tuple(masks.shape) != (*s2.shape[:2], *s2.shape[3:]):
        raise ValueError(f"mosaic: expected s2 (B, L, C, H, W) and masks (B, L, H, W); got "
                         f"{tuple(s2.shape)} and {tuple(masks.shape)}")
    values = s2.to(torch.float32)
    clear = (masks.to(s2.device) == 0).unsqueeze(2).to(torch.float32)  # (B, L, 1, H, W)
    if skip_zero:
        clear = clear * (values != 0).to(torch.float32)  # (B, L, C, H, W)
    total = (values * clear).sum(dim=1)
    count = clear.sum(dim=1)  # (B, 1 or C, H, W)
    mean = total / count.clamp_min(1.0)
    return torch.where(count > 0, mean, torch.full_like(mean, float(fill)))


def check_fill(fill: float) -> float:
    """``fill`` as a float.

    Raises:
        UsageError: not a number in [0, 1].
    """
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or \
            not math.isfinite(fill) or not 0.0 <= fill <= 1.0:
        raise UsageError(f"fill: bad value {fill!r}; expected a number in [0, 1] (the value "
                         "of pixels clear in no input)")
    return float(fill)


class Mosaicing(Method):
    """Mean of the clear observations of each pixel; 0.1 (``fill``) where none is clear.

    Args:
        protocol: "toolbox" (default, as ``crbench run``), "strict" or "parity"; ``crbench
            run`` passes its ``--protocol``. Parity adds the toolbox's exact-zero rule
            (module docstring).
        fill: the value of pixels clear in no input (default 0.1, the toolbox's; 0.5 for
            the literal reading).

    Raises:
        UsageError: unknown protocol or a fill outside [0, 1].
    """

    name: ClassVar[str] = "mosaicing"
    needs: ClassVar[frozenset[Need]] = frozenset({Need.MASKS})
    runtime_options: ClassVar[frozenset[str]] = frozenset({"protocol"})

    def __init__(self, protocol: Protocol | str = Protocol.TOOLBOX,
                 fill: float | None = None) -> None:
        self.protocol = Protocol.parse(protocol)
        self.fill = TOOLBOX_FILL if fill is None else check_fill(fill)
        self.skip_zero = self.protocol is Protocol.PARITY

    def predict(self, inputs: Inputs) -> torch.Tensor:
        """Mosaic of each sample, (B, 13, H, W) in [0, 1]."""
        return mosaic(inputs.s2, inputs.masks, self.fill, self.skip_zero).clamp(0.0, 1.0)
