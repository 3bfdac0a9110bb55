"""Seq2point: architecture, overfitting one real synthetic sample, checkpoints tied to L."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import random_inputs

from crbench.api import Batch, Inputs
from crbench.errors import CheckpointError, UsageError
from crbench.training import RepeatSource, StepContext, Trainer
from crbench_methods.seq2point import Seq2Point, Seq2PointNet, pad3d


def constant_l1(target: torch.Tensor) -> float:
    """L1 (in [-1, 1]) of the best constant-per-band prediction: the per-band median."""
    t = target * 2 - 1
    med = t.flatten(2).median(-1).values[..., None, None]
    return float((t - med).abs().mean())


def test_pad3d_reflects_space_and_replicates_time() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(1, 2, 3, 4, 5)
    y = pad3d(x)
    assert y.shape == (1, 2, 5, 6, 7)
    core = y[:, :, 1:-1]
    assert torch.equal(core[..., 1:-1, 1:-1], x)
    assert torch.equal(core[..., 0, 1:-1], x[..., 1, :])  # reflect: row -1 is row 1
    assert torch.equal(core[..., 1:-1, -1], x[..., :, -2])
    assert torch.equal(y[:, :, 0], y[:, :, 1]) and torch.equal(y[:, :, -1], y[:, :, -2])


@pytest.mark.parametrize("L", [1, 2, 4])
def test_batched_prediction_shape_range_and_independence(L: int) -> None:
    model = Seq2Point(L, "tiny")
    inputs = random_inputs(b=3, L=L)
    pred = model.predict(inputs)
    assert pred.shape == (3, 13, 24, 20) and pred.dtype == torch.float32
    assert float(pred.min()) >= 0.0 and float(pred.max()) <= 1.0
    # batch > 1 works: each sample's prediction equals its prediction alone
    single = model.predict(Inputs(**{k: v[1:2] for k, v in vars(inputs).items()}))
    torch.testing.assert_close(pred[1:2], single, rtol=1e-5, atol=1e-6)


def test_full_preset_is_the_paper_architecture() -> None:
    model = Seq2Point(3)
    net = model.net
    assert isinstance(net, Seq2PointNet)
    assert net.branch.head[0].in_channels == 15 and net.branch.head[0].out_channels == 256
    assert len(net.branch.blocks) == 16
    assert sum(1 for m in net.fusion if m.__class__.__name__ == "ResBlock3d") == 5
    assert net.out.kernel_size == (3, 3, 3) and net.out.out_channels == 13
    assert Seq2Point(5, "tiny").net.out.kernel_size == (5, 3, 3)
    assert model.config["seq_len"] == 3 and model.config["lr"] == 2e-4


def test_overfits_one_sample(train_batch: Batch) -> None:
    torch.manual_seed(0)
    steps = 60
    model = Seq2Point(3, "tiny", lr=2e-3, decay_start=1.0)
    parts = model.training_parts(steps, torch.device("cpu"))
    trainer = Trainer(None, steps, torch.device("cpu"), log_every=1, progress=False)
    trainer.run(parts, RepeatSource(train_batch, steps))
    losses = [row["l1"] for row in trainer.history]
    assert len(losses) == steps
    best_late = min(losses[-10:])
    assert best_late < losses[0] / 10
    assert best_late < constant_l1(train_batch.target)  # fits spatial detail, not just means


def test_branch_frozen_for_freeze_steps(train_batch: Batch) -> None:
    model = Seq2Point(3, "tiny", freeze_steps=1)
    parts = model.training_parts(4, torch.device("cpu"))
    ctx = StepContext(torch.device("cpu"), parts.optimizers, 4)
    branch0 = {k: v.clone() for k, v in model.net.branch.state_dict().items()}
    out0 = model.net.out.weight.clone()
    parts.step_fn(train_batch, ctx)  # step 0 < freeze_steps: branch frozen
    assert all(torch.equal(v, model.net.branch.state_dict()[k]) for k, v in branch0.items())
    assert not torch.equal(out0, model.net.out.weight)
    ctx.step = 1
    parts.step_fn(train_batch, ctx)
    assert not torch.equal(branch0["head.0.weight"], model.net.branch.head[0].weight)


def test_save_load_predicts_identically(tmp_path: Path) -> None:
    model = Seq2Point(3, "tiny", blocks=1)
    inputs = random_inputs(seed=3)
    model.save(tmp_path / "ck")
    loaded = Seq2Point.load(tmp_path / "ck", seq_len=3)
    assert loaded.config == model.config
    assert torch.equal(model.predict(inputs), loaded.predict(inputs))


def test_checkpoint_for_L3_refused_at_L4(tmp_path: Path) -> None:
    from crbench.registry import create_method

    Seq2Point(3, "tiny").save(tmp_path / "ck")
    with pytest.raises(CheckpointError, match=r"seq_len=3.*seq_len=4"):
        Seq2Point.load(tmp_path / "ck", seq_len=4)
    with pytest.raises(CheckpointError, match="seq_len=4"):
        create_method("seq2point", checkpoint=tmp_path / "ck", seq_len=4)
    assert create_method("seq2point", checkpoint=tmp_path / "ck", seq_len=3).config[
        "seq_len"] == 3


def test_inputs_of_another_L_rejected() -> None:
    with pytest.raises(UsageError, match=r"L=4.*seq_len=3"):
        Seq2Point(3, "tiny").predict(random_inputs(L=4))


@pytest.mark.parametrize(("args", "match"), [
    ({"chanels": 8}, "chanels: unknown setting"),
    ({"channels": "many"}, "channels: bad value 'many'"),
    ({"preset": "huge"}, "preset: unknown value 'huge'"),
])
def test_bad_settings_named(args: dict, match: str) -> None:
    kwargs = {"preset": "tiny", **args}
    with pytest.raises(UsageError, match=match):
        Seq2Point(3, **kwargs)


def test_missing_seq_len_explained() -> None:
    with pytest.raises(UsageError, match="seq_len: missing"):
        Seq2Point(None, "tiny").predict(random_inputs())


def test_pretrained_branch_loaded_and_frozen(synth_root: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = Seq2Point(3, "tiny", pretrain_steps=2, freeze_steps=10, val_samples=0)
    init = model.net.branch.head[0].weight.clone()
    out = model.fit(synth_root, tmp_path / "run", steps=2, crop=16, progress=False)
    pre = load_file(str(out / "pretrain" / "model.safetensors"))
    final = load_file(str(out / "model.safetensors"))
    branch_keys = [k for k in final if k.startswith("branch.")]
    assert branch_keys and all(torch.equal(final[k], pre[k]) for k in branch_keys)
    assert not torch.equal(pre["branch.head.0.weight"], init)  # pretraining did train it
    assert "head.weight" in pre  # the mono-temporal 13-band head
