"""Validation that measures learning (history.csv's val_* columns, strict-protocol samples) and
the one-line summary `crbench train` prints from history.csv."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from crbench.cli.main import main
from crbench.errors import DataError
from crbench.training import TrainOptions, validation_batches
from crbench.training.history import (
    loss_columns,
    read_history,
    step_column,
    summary_line,
    val_columns,
)
from crbench.training.validation import VAL_COLUMNS


def test_validation_samples_never_take_the_target_as_input(synth_root: Path) -> None:
    opts = TrainOptions(seq_len=3, batch_size=1, val_samples=2, crop=32)
    batches = validation_batches(synth_root, opts)
    assert len(batches) == 2
    for batch in batches:
        meta = batch.meta[0]
        assert meta.target_idx not in meta.input_idx  # strict protocol
        assert batch.target.shape[-2:] == (64, 64)  # whole images, not training crops
        assert float((batch.inputs.masks > 0.5).all(dim=1).float().sum()) > 0  # a region to fill


def test_cli_train_logs_cloudy_scores_and_prints_summary(
        synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s2p"
    assert main(["train", "seq2point", "--data", str(synth_root), "--L", "3", "--out", str(out),
                 "--preset", "tiny", "--steps", "4", "--crop", "32", "--set", "val_every=2",
                 "--no-progress"]) == 0
    hist = pd.read_csv(out / "history.csv")
    assert {"step", "seconds", "l1", *VAL_COLUMNS} <= set(hist.columns)
    val = hist.dropna(subset=["val_nrmse_cloudy"])
    assert list(val["step"]) == [2, 4]
    assert all(0 < v < 1 for v in val["val_nrmse_cloudy"])
    assert all(math.isfinite(v) and v > 0 for v in val["val_psnr_cloudy"])
    assert hist["seconds"].is_monotonic_increasing and hist["seconds"].iloc[-1] > 0
    printed = capsys.readouterr().out.splitlines()
    first, last = val.iloc[0], val.iloc[-1]
    assert printed[-1].startswith("seq2point: 4 steps in ")
    assert (f"val nrmse_cloudy {first['val_nrmse_cloudy']:.3g} -> "
            f"{last['val_nrmse_cloudy']:.3g}") in printed[-1]
    assert f"val psnr {first['val_psnr']:.1f} -> {last['val_psnr']:.1f}" in printed[-1]
    assert "; l1 " in printed[-1]


def test_summary_of_a_seqdm_history(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("iteration,loss_clear,loss_seq,mse_clear,vb_clear,val_psnr,"
                    "val_nrmse_cloudy,val_psnr_cloudy,seconds\n"
                    "1,0.9,1.2,0.8,0.1,,,,0.5\n"
                    "50,0.5,0.6,0.4,0.1,20.04,0.3,10.46,12.0\n"
                    "100,0.25,0.3,0.2,0.05,25.01,0.1,20.0,23.4\n")
    frame = read_history(path)
    assert step_column(frame) == "iteration"
    assert loss_columns(frame) == ["loss_clear", "loss_seq"]  # loss* named: mse/vb left out
    assert val_columns(frame) == ["val_nrmse_cloudy", "val_psnr_cloudy", "val_psnr"]
    assert summary_line(frame, "seqdm") == (
        "seqdm: 100 steps in 23 s; loss_clear 0.9 -> 0.25, loss_seq 1.2 -> 0.3; "
        "val nrmse_cloudy 0.3 -> 0.1, val psnr_cloudy 10.5 -> 20.0, val psnr 20.0 -> 25.0")


def test_summary_without_validation_or_seconds(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("step,epoch,g_l1,g_gan,d,lr,val_psnr\n"
                    "10,0,0.6,0.4,0.3,0.0002,\n20,1,0.1,0.35,0.2,0.0002,\n")
    frame = read_history(path)
    assert loss_columns(frame) == ["g_l1", "g_gan", "d"]
    assert summary_line(frame, "stgan", seconds=4.3) == (
        "stgan: 20 steps in 4.3 s; g_l1 0.6 -> 0.1, g_gan 0.4 -> 0.35, d 0.3 -> 0.2")


def test_history_without_step_column_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(DataError, match="no step or iteration column"):
        read_history(path)
