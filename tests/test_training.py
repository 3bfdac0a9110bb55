"""crbench.training and `crbench train`: checkpoints, history, validation PSNR, resume."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from crbench.cli.main import main
from crbench.errors import UsageError
from crbench.torchutil import load_trainer_state
from crbench.training import linear_decay, resolve_config


def train(root: Path, out: Path, *extra: str) -> int:
    return main(["train", "seq2point", "--data", str(root), "--L", "3", "--out", str(out),
                 "--crop", "32", "--no-progress", *extra])


def test_cli_train_writes_checkpoint_history_and_resumes(synth_root: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "s2p"
    assert train(synth_root, out, "--preset", "tiny", "--steps", "4") == 0
    for name in ("model.safetensors", "config.json", "trainer.pt", "history.csv"):
        assert (out / name).is_file(), name
    state = load_trainer_state(out)
    assert state is not None and state["step"] == 4
    hist = pd.read_csv(out / "history.csv")
    assert {"step", "epoch", "l1", "lr", "val_psnr"} <= set(hist.columns)
    psnr = hist["val_psnr"].dropna()
    assert len(psnr) >= 1 and all(math.isfinite(v) and v > 0 for v in psnr)
    before = hist.copy()

    assert train(synth_root, out, "--steps", "6", "--resume") == 0  # reuses the tiny config
    state = load_trainer_state(out)
    assert state is not None and state["step"] == 6
    hist = pd.read_csv(out / "history.csv")
    assert hist["step"].max() == 6
    pd.testing.assert_frame_equal(hist[hist["step"] <= 4].reset_index(drop=True), before,
                                  check_like=True)


def test_resume_reproduces_an_uninterrupted_run(synth_root: Path, tmp_path: Path) -> None:
    args = ("--preset", "tiny", "--set", "val_samples=0", "--set", "blocks=1")
    assert train(synth_root, tmp_path / "once", *args, "--steps", "3") == 0
    assert train(synth_root, tmp_path / "split", *args, "--steps", "1") == 0
    assert train(synth_root, tmp_path / "split", *args, "--steps", "3", "--resume") == 0
    once = load_file(str(tmp_path / "once" / "model.safetensors"))
    split = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert once.keys() == split.keys()
    assert all(torch.equal(once[k], split[k]) for k in once)


def test_resume_with_other_settings_refused(synth_root: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ("--preset", "tiny", "--set", "val_samples=0", "--steps", "1")
    assert train(synth_root, out, *args) == 0
    capsys.readouterr()
    assert train(synth_root, out, *args, "--set", "lr=0.1", "--resume") == 2
    err = capsys.readouterr().err
    assert "lr=0.001" in err and "lr=0.1" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "mosaicing", "--data", "X", "--L", "3", "--out", "Y"], "no weights to train"),
    (["train", "seq2pont", "--data", "X", "--L", "3", "--out", "Y"], "seq2pont"),
    (["train", "seq2point", "--data", "X", "--L", "3", "--out", "Y", "--set", "lr"],
     "--set: bad value 'lr'; expected KEY=VALUE"),
    (["train", "seq2point", "--data", "X", "--L", "3", "--out", "Y", "--set", "nope=1"],
     "nope: unknown setting"),
])
def test_cli_bad_usage_is_one_clear_line(argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_bad_steps_and_missing_data(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "seq2point", "--L", "3", "--out", str(tmp_path / "o"), "--preset", "tiny"]
    assert main([*base, "--data", str(tmp_path), "--steps", "0"]) == 2
    assert "steps: bad value 0" in capsys.readouterr().err
    assert main([*base, "--data", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_linear_decay_second_half() -> None:
    f = linear_decay(10)
    assert [f(s) for s in (0, 4, 5, 6, 10)] == [1.0, 1.0, 1.0, 0.8, 0.0]


def test_resolve_config_types() -> None:
    presets = {"a": {"lr": 1e-3, "n": 2, "flag": False, "name": "x"}}
    cfg = resolve_config(presets, "a", {"lr": 1, "flag": True}, "m")
    assert cfg == {"lr": 1.0, "n": 2, "flag": True, "name": "x", "method": "m", "preset": "a"}
    with pytest.raises(UsageError, match="n: bad value True; expected a int"):
        resolve_config(presets, "a", {"n": True}, "m")
