"""Shared fixtures: one tiny synthetic SEN12MS-CR-TS tree per test session, made by the
project's own generator (crbench.synth) in the real layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic tree: 4 ROIs (test, train, val, train), 2 patches, 64x64, seed 0."""
    from crbench.synth import synthesize

    root = tmp_path_factory.mktemp("sen12mscrts")
    synthesize(root, rois=4, patches=2, size=64, seed=0)
    return root


@pytest.fixture(scope="session")
def train_batch(synth_root: Path):  # -> crbench.api.Batch
    """One real sample of the synthetic train split (random sampler, 32 px crop, seed 0)."""
    from crbench.api import collate
    from crbench.data.dataset import SEN12MSCRTS

    ds = SEN12MSCRTS(synth_root, split="train", L=3, sampler="random", seed=0, crop=32)
    return collate([ds[0]])
