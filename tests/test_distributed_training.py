"""Data-parallel training under torchrun (gloo, 2 CPU processes) follows single-process
training with the same global batch: same final weights (up to float summation order) and the
same history losses; resume works under DDP.

The synthetic train split has 3 usable samples, so with a global batch of 2 every epoch ends
with a 1-sample batch: rank 1 then re-reads it with loss weight 0 (crbench.training.batches.Share),
and these comparisons cover that path too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from crbench.cli.main import main
from crbench.torchutil import load_trainer_state

ATOL, RTOL = 1e-6, 1e-5
"""Losses (and Adam's gradient moments) agree this closely: float-order noise stays >= 6x below
(measured on 2 cores: at most 0.005 of the tolerance for losses, 0.17 for exp_avg)."""
STEP_FRACTION = 0.05
"""Weights may differ by this fraction of one optimizer step, ``lr`` (Adam moves a weight by
about lr per step): float summation order moves them by at most 0.6 % of a step (measured:
5.6e-7 at lr 1e-4 for SeqDMs, 5.1e-7 at 2e-4 for STGAN, 4e-8 at 1e-3 for Seq2point), a wrong
sample or gradient by a sizable part of one. A fixed atol/rtol sat at half that noise."""


def _train_args(method: str, root: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", method, "--data", str(root), "--L", "3", "--out", str(out), "--preset",
            "tiny", "--steps", str(steps), "--batch-size", "2", "--crop", "32", "--no-progress",
            *extra]


def _torchrun(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "crbench.cli.main", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                         atol: float = ATOL, rtol: float = RTOL) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=rtol), (
            key, float((a[key] - b[key]).abs().max()), atol)


def _step_atol(checkpoint: Path) -> float:
    """:data:`STEP_FRACTION` of the learning rate the checkpoint was trained with."""
    return STEP_FRACTION * float(json.loads((checkpoint / "config.json").read_text())["lr"])


def _assert_same_run(single: Path, multi: Path, losses: list[str]) -> None:
    _assert_same_weights(load_file(str(single / "model.safetensors")),
                         load_file(str(multi / "model.safetensors")),
                         atol=_step_atol(single), rtol=0)
    h1, h2 = pd.read_csv(single / "history.csv"), pd.read_csv(multi / "history.csv")
    assert len(h1) == len(h2) > 0
    for col in losses:
        v1, v2 = h1[col].to_numpy(float), h2[col].to_numpy(float)
        assert np.isfinite(v1).any()
        np.testing.assert_allclose(v2, v1, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=col)


def test_seq2point_ddp_resume_matches_single_process(synth_root: Path, tmp_path: Path) -> None:
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main(_train_args("seq2point", synth_root, single, 1)) == 0
    shutil.copytree(single, multi)
    assert main(_train_args("seq2point", synth_root, single, 3, "--resume")) == 0
    # DDP from the same 1-step checkpoint: every rank restores it, then 2 data-parallel steps
    _torchrun(_train_args("seq2point", synth_root, multi, 3, "--resume"), cwd=tmp_path)
    state = load_trainer_state(multi)
    assert state is not None and state["step"] == 3
    _assert_same_run(single, multi, ["l1", "val_psnr"])
    opt = [load_trainer_state(p)["optimizers"]["model"]["state"] for p in (single, multi)]
    _assert_same_weights({f"{k}.exp_avg": v["exp_avg"] for k, v in opt[0].items()},
                         {f"{k}.exp_avg": v["exp_avg"] for k, v in opt[1].items()})


def test_stgan_ddp_matches_single_process(synth_root: Path, tmp_path: Path) -> None:
    # norm=none: conv biases in front of an InstanceNorm get a zero gradient, whose float
    # noise Adam scales up to full steps, so those would differ by ~lr with any summation order
    extra = ("--set", "norm=none")
    single = tmp_path / "single"
    assert main(_train_args("stgan", synth_root, single, 2, *extra)) == 0
    multi = tmp_path / "multi"
    _torchrun(_train_args("stgan", synth_root, multi, 2, *extra), cwd=tmp_path)
    _assert_same_run(single, multi, ["g_l1", "g_gan", "d"])
    disc = [torch.load(p / "trainer.pt", weights_only=True)["extra"]["disc"]
            for p in (single, multi)]
    _assert_same_weights(*disc, atol=_step_atol(single), rtol=0)  # data-parallel too


def test_seqdm_ddp_matches_single_process(synth_root: Path, tmp_path: Path) -> None:
    # at the paper's lr and with Eq. 28's loss over every pixel: the tiny preset's lr 2e-3, and
    # the unknown-region loss on 32 px crops (a few unknown pixels carry a sample's whole
    # loss), turn float-order differences between batch sizes 2 and 1 into weight differences
    # of 1e-6 to 7e-5 on zero-initialised biases, above this test's tolerance; so does the
    # tiny preset's EDM estimate (1e-5 on a zero-initialised bias), so the test trains the
    # paper's eps estimate: what it checks, the data-parallel split, does not depend on it
    args = ("--set", "lr=0.0001", "--set", "seq_loss_region=all", "--set", "prediction=eps")
    single = tmp_path / "single"
    assert main(_train_args("seqdm", synth_root, single, 2, *args)) == 0
    multi = tmp_path / "multi"
    _torchrun(_train_args("seqdm", synth_root, multi, 2, *args), cwd=tmp_path)
    _assert_same_run(single, multi, ["loss_clear", "loss_seq", "mse_clear", "vb_clear"])
    raw = [torch.load(p / "trainer.pt", weights_only=True)["model"] for p in (single, multi)]
    _assert_same_weights(*raw, atol=_step_atol(single), rtol=0)  # raw weights and the EMA
