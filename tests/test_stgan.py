"""STGAN: generators for any L, PatchGAN receptive field, overfitting, checkpoints, bands."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import random_inputs

from crbench.api import Batch
from crbench.constants import RGBN_IDX
from crbench.errors import CheckpointError, UsageError
from crbench.training import RepeatSource, Trainer
from crbench_methods.mosaicing import mosaic
from crbench_methods.seq2point import Seq2Point
from crbench_methods.stgan import STGAN, patch_discriminator


@pytest.mark.parametrize("generator", ["resnet", "unet"])
@pytest.mark.parametrize("bands", ["rgbn", "all"])
def test_one_generator_serves_any_L_and_odd_sizes(generator: str, bands: str) -> None:
    model = STGAN(3, "tiny", generator=generator, bands=bands, use_s1=True)
    n = 4 if bands == "rgbn" else 13
    for L in (2, 3, 5):
        own = model.predict_bands(random_inputs(L=L, h=30, w=27))
        assert own.shape == (2, n, 30, 27)
        assert float(own.min()) >= 0.0 and float(own.max()) <= 1.0
    assert model.predict(random_inputs(L=4, h=30, w=27)).shape == (2, 13, 30, 27)


def test_rgbn_variant_fills_other_bands_from_mosaic() -> None:
    assert STGAN(3).config["bands"] == "rgbn" and STGAN(3, "tiny").config["bands"] == "all"
    model = STGAN(3, "tiny", bands="rgbn")
    inputs = random_inputs()
    pred = model.predict(inputs)
    other = [i for i in range(13) if i not in RGBN_IDX]
    assert torch.equal(pred[:, other], mosaic(inputs.s2, inputs.masks)[:, other])
    assert torch.equal(pred[:, list(RGBN_IDX)], model.predict_bands(inputs))
    assert model.bands == ("B04", "B03", "B02", "B08")
    assert STGAN(3, "tiny", bands="all").bands[0] == "B01"


def test_patch_discriminator_sees_70x70() -> None:
    disc = patch_discriminator(5, 8, "none")
    x = torch.zeros(1, 5, 128, 128, requires_grad=True)
    y = disc(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)))
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)))
    assert int(rows.max() - rows.min()) + 1 == 70
    assert int(cols.max() - cols.min()) + 1 == 70


def test_full_preset_generator_layout() -> None:
    net = STGAN(3).generator.net
    convs = [m for m in net.trunk if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs[:2]] == [(2, 2), (2, 2)]
    assert sum(1 for m in net.trunk if m.__class__.__name__ == "ResnetBlock") == 9
    assert sum(1 for m in net.trunk if isinstance(m, torch.nn.ConvTranspose2d)) == 2
    assert isinstance(net.trunk[-1], torch.nn.Tanh)
    cfg = STGAN(3).config
    assert (cfg["lambda_l1"], cfg["lr"], cfg["beta1"], cfg["beta2"]) == (100.0, 2e-4, 0.5, 0.999)


def test_overfits_one_sample(train_batch: Batch) -> None:
    torch.manual_seed(0)
    steps = 60
    model = STGAN(3, "tiny", bands="rgbn")
    parts = model.training_parts(steps, torch.device("cpu"))
    trainer = Trainer(None, steps, torch.device("cpu"), log_every=1, progress=False)
    trainer.run(parts, RepeatSource(train_batch, steps))
    l1 = [row["g_l1"] for row in trainer.history]
    assert {"g_gan", "d"} <= set(trainer.history[0])
    best_late = min(l1[-10:])
    assert best_late < l1[0] / 10
    target = train_batch.target[:, list(RGBN_IDX)] * 2 - 1
    const = float((target - target.flatten(2).median(-1).values[..., None, None]).abs().mean())
    assert best_late < const


def test_save_load_predicts_identically_and_any_L(tmp_path: Path) -> None:
    model = STGAN(3, "tiny", generator="unet")
    model.save(tmp_path / "ck")
    loaded = STGAN.load(tmp_path / "ck", seq_len=4)  # generator not tied to L
    inputs = random_inputs(L=4, seed=5)
    assert loaded.config == model.config
    assert torch.equal(model.predict(inputs), loaded.predict(inputs))


def test_checkpoint_of_another_method_refused(tmp_path: Path) -> None:
    Seq2Point(3, "tiny").save(tmp_path / "s2p")
    with pytest.raises(CheckpointError, match=r"method='seq2point'.*method='stgan'"):
        STGAN.load(tmp_path / "s2p")
    STGAN(3, "tiny").save(tmp_path / "st")
    with pytest.raises(CheckpointError, match="method='stgan'"):
        Seq2Point.load(tmp_path / "st", seq_len=3)


@pytest.mark.parametrize(("key", "value"), [("bands", "rgb"), ("generator", "vit"),
                                            ("norm", "layer")])
def test_bad_choices_named(key: str, value: str) -> None:
    with pytest.raises(UsageError, match=f"{key}: unknown value '{value}'"):
        STGAN(3, "tiny", **{key: value})


def test_fit_writes_checkpoint_with_discriminator(synth_root: Path, tmp_path: Path) -> None:
    from crbench.torchutil import load_trainer_state

    with pytest.raises(UsageError, match="crop: 16 px is too small"):
        STGAN(3, "tiny").fit(synth_root, tmp_path / "bad", steps=1, crop=16)
    out = STGAN(3, "tiny", bands="all").fit(synth_root, tmp_path / "run", steps=2, crop=32,
                                            progress=False)
    state = load_trainer_state(out)
    assert state is not None and state["step"] == 2
    assert set(state["optimizers"]) == {"gen", "disc"} and "disc" in state["extra"]
    model = STGAN.load(out)
    assert model.predict(random_inputs(L=2, h=16, w=16)).shape == (2, 13, 16, 16)
