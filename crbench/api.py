"""The method API: what a cloud-removal method receives and returns.

A method's ``predict`` gets an :class:`Inputs` batch and nothing else: the target image is
never part of it (the data layer keeps it in a separate field that the runner holds back).

Tensor conventions (batched; the dataset yields the same without the leading B):

- ``s2``:       (B, L, 13, H, W) float32 in [0, 1] (S2 clipped to [0, 10000] / 10000)
- ``s1``:       (B, L, 2, H, W) float32 in [0, 1]: VV, VH in dB, each clipped to the method's
  :attr:`Method.s1_db_range` and mapped linearly to [0, 1] (default [-25, 0] dB for both)
- ``masks``:    (B, L, H, W) float32, 1 = cloud (s2cloudless, DESIGN.md)
- ``coverage``: (B, L) float32, mean of each mask
- ``days``:     (B, L) int64, S2 acquisition day counted from the S1 launch (2014-04-03)

S1 range per method: a method declares the dB range of each S1 band in ``s1_db_range``
(``((vv_min, vv_max), (vh_min, vh_max))``, a class attribute or set per instance, e.g. by a
preset). The data layer (the datasets of the runner and of crbench.training) clips each band
to it and maps it to [0, 1], so a method that wants VH down to -32.5 dB (Seq2point's
``toolbox`` preset: ``((-25, 0), (-32.5, 0))``) gets it, while every method that keeps the
default ``((-25, 0), (-25, 0))`` receives bit-identical inputs.

Parameter counts: :meth:`TrainableMethod.parameter_counts` (``{"network": N}`` by default;
methods with several networks name each) is printed by ``crbench train`` at start.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from .constants import S1_DB_MAX, S1_DB_MIN, S2_BANDS

S1Range = tuple[tuple[float, float], tuple[float, float]]
"""dB clip range of (VV, VH): ``((vv_min, vv_max), (vh_min, vh_max))``."""
DEFAULT_S1_DB_RANGE: S1Range = ((S1_DB_MIN, S1_DB_MAX), (S1_DB_MIN, S1_DB_MAX))


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


@dataclass
class SampleMeta:
    """Identity and selection of one sample (what the result rows record)."""

    roi: str  # "ROIs1868/119"
    patch: int
    input_idx: list[int]  # date indices t (0..29) of the L inputs, in temporal order
    target_idx: int
    coverage_inputs: list[float]
    coverage_target: float
    match: bool  # L inputs qualified and the target is clear (DESIGN.md "fixed" sampler)
    target_path: str = ""  # S2 GeoTIFF of the target (for georeferenced prediction output)


@dataclass
class Sample:
    """One dataset item. The runner hands only ``inputs`` to a method; ``target`` stays back."""

    inputs: Inputs
    target: torch.Tensor  # (13, H, W) in [0, 1]; batched: (B, 13, H, W)
    meta: SampleMeta
    # (2, H, W) in [0, 1]: the S1 image of the target date, for training only (datasets give
    # it when asked with ``target_s1=True``; the runner never hands it to a method)
    target_s1: torch.Tensor | None = None


@dataclass
class Batch:
    """A collated list of samples."""

    inputs: Inputs
    target: torch.Tensor  # (B, 13, H, W)
    meta: list[SampleMeta]
    target_s1: torch.Tensor | None = None  # (B, 2, H, W) when every sample has one


def collate(samples: list[Sample]) -> Batch:
    """``collate_fn`` for torch DataLoader over crbench datasets."""
    s1 = [s.target_s1 for s in samples]
    return Batch(inputs=Inputs.stack([s.inputs for s in samples]),
                 target=torch.stack([s.target for s in samples]),
                 meta=[s.meta for s in samples],
                 target_s1=torch.stack(s1) if all(x is not None for x in s1) else None)


class Method(ABC):
    """A cloud-removal method. Subclasses set the class attributes and implement ``predict``.

    Attributes:
        name: registry key, e.g. ``"mosaicing"``.
        needs: extra inputs used besides S2 (for documentation and data loading).
        trains: True if the method has weights and must be trained before ``predict``.
        bands: S2 bands the method itself predicts (all 13 unless documented otherwise).
        runtime_options: options of ``crbench run`` the method accepts when it is created
            (``create_method(..., sample_steps=N, samples=K)``): ``"sample_steps"``
            (``--steps``) and ``"samples"`` (``--samples``, then :meth:`predict_samples`
            draws K outputs per input). Empty for deterministic methods.
        gives_variance: True if :meth:`predict_with_variance` returns a per-pixel variance
            of the prediction (a variance head, e.g. UnCRtainTS). Stochastic methods need not
            set it: with ``--samples K`` the runner takes the variance of the K draws.
        s1_db_range: dB clip range of (VV, VH) that the data layer maps to [0, 1] in
            ``Inputs.s1`` (see the module docstring); instances may set their own.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[Need]] = frozenset()
    trains: ClassVar[bool] = False
    bands: ClassVar[tuple[str, ...]] = S2_BANDS
    runtime_options: ClassVar[frozenset[str]] = frozenset()
    gives_variance: ClassVar[bool] = False
    s1_db_range: S1Range = DEFAULT_S1_DB_RANGE

    @abstractmethod
    def predict(self, inputs: Inputs) -> torch.Tensor:
        """Return the cloud-free estimate, shape (B, 13, H, W), values in [0, 1]."""

    def predict_samples(self, inputs: Inputs, k: int) -> torch.Tensor:
        """Return ``k`` independent draws, shape (k, B, 13, H, W), values in [0, 1].

        Stochastic methods that list ``"samples"`` in :attr:`runtime_options` override this;
        the default is :meth:`predict` stacked once (one draw, whatever ``k``).
        """
        return self.predict(inputs).unsqueeze(0)

    def predict_with_variance(self, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prediction and its per-pixel variance, both (B, 13, H, W) (variance in [0, 1]
        reflectance units squared, >= 0), or None for the variance of a method without one
        (the default: :meth:`predict` and None). Methods with :attr:`gives_variance` override
        it; the runner scores the variance with :mod:`crbench.metrics.uncertainty`."""
        return self.predict(inputs), None

    def to(self, device: torch.device | str) -> Method:
        """Move weights to ``device`` (no-op for methods without weights)."""
        return self

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

    def parameter_counts(self) -> dict[str, int]:
        """Number of parameters of each of the method's torch modules, e.g. ``{"network": N}``.

        The default counts every ``torch.nn.Module`` attribute of the instance (the name
        without a leading underscore; ``net`` is reported as ``network``). Methods that build
        their networks lazily or hold several override it.
        """
        from torch import nn

        counts: dict[str, int] = {}
        for attr, value in vars(self).items():
            if isinstance(value, nn.Module):
                name = attr.lstrip("_")
                counts["network" if name == "net" else name] = sum(
                    p.numel() for p in value.parameters())
        return counts
