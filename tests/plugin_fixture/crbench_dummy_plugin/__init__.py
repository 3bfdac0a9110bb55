"""Third-party-style crbench plugin used by the tests (not a real method).

``DummyMean``: per-pixel mean of the inputs. ``DummyTrained``: the same plus a learned scalar
offset stored in a crbench checkpoint. Environment variables for the runner tests:
``CRBENCH_DUMMY_DELAY`` (seconds to sleep per batch) and ``CRBENCH_DUMMY_LOG`` (file to which
each predict call appends its batch size, one line per call).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

import torch

from crbench.api import Inputs, Method, TrainableMethod
from crbench.torchutil import load_checkpoint, save_checkpoint


def _trace(batch: int) -> None:
    delay = float(os.environ.get("CRBENCH_DUMMY_DELAY", "0") or 0)
    if delay > 0:
        time.sleep(delay)
    log = os.environ.get("CRBENCH_DUMMY_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{batch}\n")


class DummyMean(Method):
    """Mean of the input dates."""

    name: ClassVar[str] = "dummy_mean"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def predict(self, inputs: Inputs) -> torch.Tensor:
        _trace(inputs.s2.shape[0])
        return (inputs.s2.mean(dim=1) * self.scale).clamp(0, 1)


class DummyTrained(TrainableMethod):
    """Mean of the inputs plus a stored offset."""

    name: ClassVar[str] = "dummy_trained"

    def __init__(self, seq_len: int | None = None, offset: float = 0.0) -> None:
        self.config: dict[str, Any] = {"seq_len": seq_len, "offset": offset}

    def fit(self, data_root: Path, out: Path, **options: Any) -> Path:
        self.save(out)
        return Path(out)

    def save(self, path: Path) -> None:
        save_checkpoint(path, {"offset": torch.tensor([self.config["offset"]])}, self.config)

    @classmethod
    def load(cls, path: Path, **expect: Any) -> DummyTrained:
        state, config = load_checkpoint(path, **expect)
        return cls(seq_len=config["seq_len"], offset=float(state["offset"][0]))

    def predict(self, inputs: Inputs) -> torch.Tensor:
        _trace(inputs.s2.shape[0])
        return (inputs.s2.mean(dim=1) + self.config["offset"]).clamp(0, 1)


class NotAMethod:
    """Registered by a test to check that non-Method objects are refused."""
