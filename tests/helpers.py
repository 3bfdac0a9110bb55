"""Small builders shared by the method tests (imported as ``helpers``; tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import torch

from crbench.api import Inputs

_BESIDE = Path(__file__).resolve().parents[2] / "shared" / "realdata"
REALDATA = _BESIDE if _BESIDE.is_dir() else Path("/work/shared/realdata")
"""The shared real data (read in place, never copied): ``../shared/realdata`` beside the
repository, else the development machines' ``/work/shared/realdata`` (a CI clone elsewhere)."""


def random_inputs(b: int = 2, L: int = 3, h: int = 24, w: int = 20, seed: int = 0) -> Inputs:
    """A batch of uniform-random Inputs with random binary masks (seeded)."""
    g = torch.Generator().manual_seed(seed)
    return Inputs(s2=torch.rand(b, L, 13, h, w, generator=g),
                  s1=torch.rand(b, L, 2, h, w, generator=g),
                  masks=(torch.rand(b, L, h, w, generator=g) > 0.5).float(),
                  coverage=torch.rand(b, L, generator=g),
                  days=torch.arange(L).repeat(b, 1))
