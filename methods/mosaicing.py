"""Mosaicing baseline: per pixel, the mean of the inputs that are clear there.

Baseline of the SEN12MS-CR-TS paper: P. Ebel, Y. Xu, M. Schmitt, X. X. Zhu, "SEN12MS-CR-TS:
A Remote-Sensing Data Set for Multimodal Multitemporal Cloud Removal", IEEE Transactions on
Geoscience and Remote Sensing 60, 2022, doi:10.1109/TGRS.2022.3146246.

A pixel is clear in an input where its cloud mask is 0; pixels clear in no input get the
constant 0.5 in every band, as in the paper's baseline.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from crbench.api import Inputs, Method, Need

NO_CLEAR_VALUE = 0.5


def mosaic(s2: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean over the inputs where ``masks == 0``; 0.5 where no input is clear.

    Args:
        s2: (B, L, C, H, W) input sequence.
        masks: (B, L, H, W) cloud masks, 1 (or any non-zero value) = cloud.

    Returns:
        (B, C, H, W) float32 mosaic.

    Raises:
        ValueError: shapes that do not fit together.
    """
    if s2.dim() != 5 or masks.dim() != 4 or tuple(masks.shape) != (*s2.shape[:2], *s2.shape[3:]):
        raise ValueError(f"mosaic: expected s2 (B, L, C, H, W) and masks (B, L, H, W); got "
                         f"{tuple(s2.shape)} and {tuple(masks.shape)}")
    clear = (masks.to(s2.device) == 0).unsqueeze(2).to(torch.float32)  # (B, L, 1, H, W)
    total = (s2.to(torch.float32) * clear).sum(dim=1)
    count = clear.sum(dim=1)  # (B, 1, H, W)
    mean = total / count.clamp_min(1.0)
    return torch.where(count > 0, mean, torch.full_like(mean, NO_CLEAR_VALUE))


class Mosaicing(Method):
    """Mean of the clear observations of each pixel; 0.5 where none is clear."""

    name: ClassVar[str] = "mosaicing"
    needs: ClassVar[frozenset[Need]] = frozenset({Need.MASKS})

    def predict(self, inputs: Inputs) -> torch.Tensor:
        """Mosaic of each sample, (B, 13, H, W) in [0, 1]."""
        return mosaic(inputs.s2, inputs.masks).clamp(0.0, 1.0)
