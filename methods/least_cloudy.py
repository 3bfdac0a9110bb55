"""Least-cloudy baseline: return the input date with the smallest cloud coverage.

Baseline of the SEN12MS-CR-TS paper: P. Ebel, Y. Xu, M. Schmitt, X. X. Zhu, "SEN12MS-CR-TS:
A Remote-Sensing Data Set for Multimodal Multitemporal Cloud Removal", IEEE Transactions on
Geoscience and Remote Sensing 60, 2022, doi:10.1109/TGRS.2022.3146246.

Ties (several inputs equally clear) go to the earliest input, as everywhere in crbench (the
toolbox's test.py takes ``np.argsort(...)[0]`` over the inputs' mask sums, which may pick
another tied input). Coverage comes from the data layer, so the protocol's blank rule applies:
under ``--protocol parity`` a blank input has coverage 0.0 and may be the one returned, as in
the toolbox; otherwise it counts as fully cloudy (README "Conventions").
"""

from __future__ import annotations

from typing import ClassVar

import torch

from crbench.api import Inputs, Method, Need


def least_cloudy(s2: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Pick, per sample, the input with the smallest coverage (ties: the earliest).

    Args:
        s2: (B, L, C, H, W) input sequence.
        coverage: (B, L) cloud coverage of each input.

    Returns:
        (B, C, H, W), the chosen input of each sample.

    Raises:
        ValueError: shapes that do not fit together.
    """
    if s2.dim() != 5 or coverage.dim() != 2 or tuple(coverage.shape) != tuple(s2.shape[:2]):
        raise ValueError(f"least_cloudy: expected s2 (B, L, C, H, W) and coverage (B, L); got "
                         f"{tuple(s2.shape)} and {tuple(coverage.shape)}")
    # torch.argmin returns the first minimal index, so ties go to the earliest date.
    idx = torch.argmin(coverage.to(s2.device), dim=1)
    return s2[torch.arange(s2.shape[0], device=s2.device), idx]


class LeastCloudy(Method):
    """The input date with the least cloud coverage, unchanged."""

    name: ClassVar[str] = "least_cloudy"
    needs: ClassVar[frozenset[Need]] = frozenset({Need.MASKS})

    def predict(self, inputs: Inputs) -> torch.Tensor:
        """Least cloudy input of each sample, (B, 13, H, W) in [0, 1]."""
        return least_cloudy(inputs.s2, inputs.coverage).float().clamp(0.0, 1.0)
