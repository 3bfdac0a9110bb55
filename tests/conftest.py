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
def cr_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic SEN12MS-CR tree: 3 scenes (test, train, val), 2 patches, 64x64,
    seed 1."""
    from crbench.synth import synthesize_cr

    root = tmp_path_factory.mktemp("sen12mscr")
    synthesize_cr(root, scenes=3, patches=2, size=64, seed=1)
    return root


@pytest.fixture(scope="session")
def train_batch(synth_root: Path):  # -> crbench.api.Batch
    """One real sample of the synthetic train split (random sampler, 32 px crop, seed 0)."""
    from crbench.api import collate
    from crbench.data.dataset import SEN12MSCRTS

    ds = SEN12MSCRTS(synth_root, split="train", L=3, sampler="random", seed=0, crop=32)
    return collate([ds[0]])



def require_native_kernel() -> None:
    """Skip the test when crbench's C kernel was not built (no C compiler at install time),
    or fail it when the environment sets CRBENCH_REQUIRE_NATIVE=1 (CI does)."""
    from crbench.metrics import native as metrics_native

    if metrics_native.available():
        return
    if os.environ.get("CRBENCH_REQUIRE_NATIVE") == "1":
        pytest.fail("crbench.metrics._kernel is not built but CRBENCH_REQUIRE_NATIVE=1")
    pytest.skip("crbench.metrics._kernel not built (no C compiler at install time)")


@pytest.fixture
def native_kernel() -> None:
    """The test needs crbench's C kernel (see :func:`require_native_kernel`)."""
    require_native_kernel()


@pytest.fixture(params=("native", "opencv", "torch"))
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Run the test with one back end of crbench.metrics forced on CPU: crbench's C kernel,
    OpenCV, or torch convolutions (crbench.metrics.ssim.FilterBackend); returns it. A back
    end that is not installed is skipped (the C kernel: see :func:`require_native_kernel`).
    """
    import torch

    from crbench.metrics import native as metrics_native
    from crbench.metrics import ssim as metrics_ssim
    from crbench.metrics.ssim import FilterBackend

    chosen = FilterBackend(request.param)
    if chosen is FilterBackend.NATIVE:
        require_native_kernel()
    if chosen is FilterBackend.OPENCV and metrics_ssim.cv2 is None:
        pytest.skip("OpenCV not installed")
    if chosen is not FilterBackend.NATIVE:
        monkeypatch.setattr(metrics_native, "_kernel", None)
    if chosen is FilterBackend.TORCH:
        monkeypatch.setattr(metrics_ssim, "cv2", None)
    if metrics_ssim.filter_backend(torch.device("cpu")) is not chosen:
        pytest.fail(f"could not force the {chosen.value} back end")
    return chosen
