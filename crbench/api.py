"""The method API: what a cloud-removal method receives and returns.

A method's ``predict`` gets an :class:`Inputs` batch and nothing else: the target image is
never part of it (the data layer keeps it in a separate field that the runner holds back).

Tensor conventions (batched; the dataset yields the same without the leading B):

- ``s2``:       (B, L, 13, H, W) float32 in [0, 1] (S2 clipped to [0, 10000] / 10000)
- ``s1``:       (B, L, 2, H, W) float32 in [0, 1] (VV, VH clipped to [-25, 0] dB)
- ``masks``:    (B, L, H, W) float32, 1 = cloud (s2cloudless, DESIGN.md)
- ``coverage``: (B, L) float32, mean of each mask
- ``days``:     (B, L) int64, S2 acquisition day counted from the S1 launch (2014-04-03)
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from .constants import S2_BANDS


class Need(enum.Enum):
    """Inputs a method may ask for besides the cloudy S2 sequence."""

    S1 = "s1"
    MASKS = "masks"
    DATES = "dates"


@dataclass
class Inputs:
    """A batch (or one sample) of what a method may see. Never holds the target."""

    s2: torch.Tensor
    s1: torch.Tensor
    masks: torch.Tensor
    coverage: torch.Tensor
    days: torch.Tensor

    @property
    def seq_len(self) -> int:
        """L, the number of input dates."""
        return int(self.s2.shape[-4])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Inputs:
        """Copy every tensor to ``device``."""
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                 for f in fields(self)}
        return replace(self, **moved)

    def pin_memory(self) -> Inputs:
        """Pinned-memory copy (DataLoader's ``pin_memory=True`` calls this)."""
        return replace(self, **{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    @staticmethod
    def stack(items: list[Inputs]) -> Inputs:
        """Stack per-sample Inputs into a batch along a new first axis."""
        return Inputs(**{f.name: torch.stack([getattr(i, f.name) for i in items])
                         for f in fields(Inputs)})


class Method(ABC):
    """A cloud-removal method. Subclasses set the class attributes and implement ``predict``.

    Attributes:
        name: registry key, e.g. ``"mosaicing"``.
        needs: extra inputs used besides S2 (for documentation and data loading).
        trains: True if the method has weights and must be trained before ``predict``.
        bands: S2 bands the method itself predicts (all 13 unless documented otherwise).
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[Need]] = frozenset()
    trains: ClassVar[bool] = False
    bands: ClassVar[tuple[str, ...]] = S2_BANDS

    @abstractmethod
    def predict(self, inputs: Inputs) -> torch.Tensor:
        """Return the cloud-free estimate, shape (B, 13, H, W), values in [0, 1]."""

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for run manifests."""
        return {"name": self.name, "needs": sorted(n.value for n in self.needs),
                "trains": self.trains, "bands": list(self.bands)}


class TrainableMethod(Method):
    """A method with weights: adds training, saving and loading.

    ``config`` is a JSON-able dict; it is stored beside the weights and checked on load
    (e.g. a model tied to L=3 is refused at L=4 with a :class:`~crbench.errors.CheckpointError`).
    """

    trains: ClassVar[bool] = True
    config: dict[str, Any]

    @abstractmethod
    def fit(self, data_root: Path, out: Path, **options: Any) -> Path:
        """Train on ``data_root``'s train split, checkpointing under ``out``; return the final
        checkpoint directory."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write weights (safetensors) and ``config.json`` into directory ``path``."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, **expect: Any) -> TrainableMethod:
        """Load from directory ``path``; ``expect`` (e.g. ``seq_len=4``) must match the config."""
