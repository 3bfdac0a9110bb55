"""UnCRtainTS: any L from one checkpoint, any patch size, S1 on/off, NLL/MSE, the variance
head (its scaling and the runner's uncertainty sidecar), options and the published size."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import random_inputs

from crbench.api import Need
from crbench.cli.main import main
from crbench.errors import UsageError
from crbench.registry import create_method
from crbench.runner import read_manifest
from crbench.runner.store import read_uncertainty
from crbench_methods.uncrtaints import UnCRtainTS, day_encoding, gaussian_nll

PUBLISHED_PARAMETERS = {True: 570_010, False: 569_754}
"""Parameters of the public code's ``UNCRTAINTS`` (PatrickTUM/UnCRtainTS,
model/src/backbones/uncrtaints.py) built with the README's training command (use_sar,
mbconv, n_head 16, covmode diag so out_conv [26]) and the parser's defaults (encoder [128],
decoder [128] x 5, d_model 256, d_k 4), counted with ``sum(p.numel() for p in
m.parameters())``; input_dim 15 (with S1) and 13 (without)."""


@pytest.fixture(scope="module")
def trained(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny UnCRtainTS trained 3 steps at L=3, saved as DIR/uncrtaints (DIR returned)."""
    ckpt = tmp_path_factory.mktemp("ckpt")
    UnCRtainTS(3, "tiny").fit(synth_root, ckpt / "uncrtaints", steps=3, batch_size=2, crop=32,
                              progress=False)
    return ckpt


@pytest.mark.parametrize("use_sar", [True, False])
def test_full_preset_has_the_published_parameter_count(use_sar: bool) -> None:
    model = UnCRtainTS(3, use_sar=use_sar)
    assert model.parameter_counts() == {"network": PUBLISHED_PARAMETERS[use_sar]}
    assert model._net is None  # counted on the meta device, nothing built
    c = model.config
    assert (c["width"], c["decoder_blocks"], c["n_head"], c["d_model"], c["d_k"]) == \
        (128, 5, 16, 256, 4)
    assert c["lr"] == 1e-3 and c["scale_by"] == 10.0 and c["loss"] == "nll"
    assert UnCRtainTS(3, "tiny").parameter_counts() == {"network": 7_130}


def test_one_checkpoint_predicts_any_length_and_round_trips(trained: Path) -> None:
    path = trained / "uncrtaints"
    model = UnCRtainTS.load(path)
    assert model.config["seq_len"] is None and model.config["train_seq_len"] == 3
    for L in (2, 3, 5):
        inputs = random_inputs(b=2, L=L, seed=L)
        mean, var = model.predict_with_variance(inputs)
        assert mean.shape == var.shape == (2, 13, 24, 20)
        assert float(mean.min()) >= 0.0 and float(mean.max()) <= 1.0
        assert float(var.min()) > 0.0 and torch.isfinite(var).all()
        via_registry = create_method("uncrtaints", checkpoint=path, seq_len=L)
        torch.testing.assert_close(via_registry.predict(inputs), mean)
    model.save(path.parent / "copy")
    again = UnCRtainTS.load(path.parent / "copy")
    inputs = random_inputs(L=4)
    torch.testing.assert_close(again.predict_with_variance(inputs),
                               model.predict_with_variance(inputs), rtol=0, atol=0)


def test_variance_is_the_head_rescaled_to_unit_reflectance(trained: Path) -> None:
    model = UnCRtainTS.load(trained / "uncrtaints")
    inputs = random_inputs(L=3)
    mean, var = model.predict_with_variance(inputs)
    model.net.eval()
    with torch.no_grad():
        raw_mean, raw_var = model.net(model.network_input(inputs), inputs.days)
    s = model.config["scale_by"]
    torch.testing.assert_close(var, raw_var / s ** 2)
    torch.testing.assert_close(mean, raw_mean / s)
    assert float(raw_var.min()) >= 1e-3  # softplus + eps in the scaled units


def test_non_square_patch_and_batch_independence() -> None:
    torch.manual_seed(0)
    model = UnCRtainTS(3, "tiny")
    inputs = random_inputs(b=3, L=3, h=37, w=50)
    mean, var = model.predict_with_variance(inputs)
    assert mean.shape == var.shape == (3, 13, 37, 50)
    one = type(inputs)(**{k: v[1:2] for k, v in vars(inputs).items()})
    torch.testing.assert_close(model.predict(one), mean[1:2], rtol=1e-5, atol=1e-6)


def test_acquisition_days_change_the_attention() -> None:
    torch.manual_seed(0)
    model = UnCRtainTS(3, "tiny")
    inputs = random_inputs(L=3)
    later = type(inputs)(**{**vars(inputs), "days": inputs.days * 40 + 700})
    assert not torch.allclose(model.predict(inputs), model.predict(later))
    pe = day_encoding(torch.tensor([[0, 500]]), 4, 2)
    assert pe.shape == (1, 2, 8) and torch.equal(pe[..., :4], pe[..., 4:])
    assert pe[0, 0].tolist() == [0.0, 1.0, 0.0, 1.0] * 2


@pytest.mark.parametrize("use_sar", [True, False])
def test_s1_is_used_only_when_asked(use_sar: bool) -> None:
    torch.manual_seed(0)
    model = UnCRtainTS(3, "tiny", use_sar=use_sar)
    assert (Need.S1 in model.needs) is use_sar and Need.DATES in model.needs
    assert model.net.in_conv[0].in_channels == (15 if use_sar else 13)
    inputs = random_inputs(L=3)
    other = type(inputs)(**{**vars(inputs), "s1": torch.rand_like(inputs.s1)})
    same = torch.allclose(model.predict(inputs), model.predict(other))
    assert same is not use_sar
    assert Need.S1 in UnCRtainTS.needs  # the class (runner, crbench train) stays conservative


def _without_s1(synth_root: Path, root: Path) -> Path:
    """Copy of the tree's train and val ROIs with their S1 folders removed."""
    from crbench.data.index import check_split_region

    for roi in check_split_region("train", "all") + check_split_region("val", "all"):
        if (synth_root / roi).is_dir():
            shutil.copytree(synth_root / roi, root / roi)
            shutil.rmtree(root / roi / "S1")
    return root


def test_fit_without_s1_trains_only_with_use_sar_false(synth_root: Path,
                                                          tmp_path: Path) -> None:
    root = _without_s1(synth_root, tmp_path / "root")
    with pytest.raises(UsageError, match=r"^data_root: .* has no S1 for the train split"):
        UnCRtainTS(3, "tiny").fit(root, tmp_path / "a", steps=1, progress=False)
    assert not (tmp_path / "a").exists()
    UnCRtainTS(3, "tiny", use_sar=False).fit(root, tmp_path / "b", steps=1, batch_size=2,
                                             crop=32, progress=False)
    assert UnCRtainTS.load(tmp_path / "b").config["use_sar"] is False


def test_nll_is_the_diagonal_gaussian_nll_summed_over_bands() -> None:
    g = torch.Generator().manual_seed(0)
    mean, target = torch.rand(2, 13, 5, 4, generator=g), torch.rand(2, 13, 5, 4, generator=g)
    var = torch.rand(2, 13, 5, 4, generator=g) + 0.05
    ref = F.gaussian_nll_loss(mean, target, var, full=True, reduction="sum") / (2 * 5 * 4)
    torch.testing.assert_close(gaussian_nll(mean, var, target), ref)
    # one band, unit variance: 0.5 err^2 + 0.5 log(2 pi)
    one = gaussian_nll(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1),
                       torch.full((1, 1, 1, 1), 2.0))
    assert math.isclose(float(one), 2.0 + 0.5 * math.log(2 * math.pi), rel_tol=1e-6)


def test_mse_model_gives_no_variance(synth_root: Path, tmp_path: Path) -> None:
    model = UnCRtainTS(3, "tiny", loss="mse")
    model.fit(synth_root, tmp_path / "m", steps=2, batch_size=2, crop=32, progress=False)
    loaded = UnCRtainTS.load(tmp_path / "m")
    assert loaded.config["loss"] == "mse" and loaded.gives_variance is False
    mean, var = loaded.predict_with_variance(random_inputs(L=2))
    assert var is None and mean.shape == (2, 13, 24, 20)
    history = (tmp_path / "m" / "history.csv").read_text().splitlines()[0]
    assert "mse" in history


@pytest.mark.parametrize(("key", "value"), [("loss", "l1"), ("use_sar", "yes"),
                                            ("width", 6), ("n_head", 3), ("scale_by", 0.0),
                                            ("att_dropout", 1.0)])
def test_bad_options_name_the_key(key: str, value: object) -> None:
    with pytest.raises(UsageError) as err:
        UnCRtainTS(3, "tiny", **{key: value})
    msg = str(err.value)
    assert msg.startswith(f"{key}: ") and "\n" not in msg and repr(value) in msg


def test_cli_refuses_a_bad_loss_in_one_line(synth_root: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "uncrtaints", "--data", str(synth_root), "--L", "3", "--out",
                 str(tmp_path / "x"), "--preset", "tiny", "--set", "loss=gnll"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "loss" in err[0] and "'gnll'" in err[0]
    assert "nll, mse" in err[0]


def test_run_writes_the_head_uncertainty_sidecar(synth_root: Path, trained: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", "--data", str(synth_root), "--methods", "uncrtaints", "--L", "3",
                 "--limit", "2", "--checkpoints", str(trained), "--out", str(out),
                 "--no-progress"]) == 0
    sidecar = out / "rows" / "uncrtaints__L3__shard1of1.uncertainty.csv"
    assert sidecar.is_file()
    got = read_uncertainty(out)
    assert len(got) == 2 and set(got["source"]) == {"head"} and set(got["method"]) == \
        {"uncrtaints"}
    assert (got["mean_std"] > 0).all() and got["uce"].notna().all()


def test_run_of_an_mse_model_writes_no_uncertainty(synth_root: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    UnCRtainTS(3, "tiny", loss="mse").fit(synth_root, ckpt / "uncrtaints", steps=1,
                                           batch_size=2, crop=32, progress=False)
    out = tmp_path / "run"
    assert main(["run", "--data", str(synth_root), "--methods", "uncrtaints", "--L", "3",
                 "--limit", "1", "--checkpoints", str(ckpt), "--out", str(out),
                 "--no-progress"]) == 0
    assert not (out / "rows" / "uncrtaints__L3__shard1of1.uncertainty.csv").exists()
    assert read_manifest(out)["runs"]["uncrtaints__L3__shard1of1"]["uncertainty"] is None


def test_cli_trains_once_and_runs_every_length(synth_root: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "ckpt"
    assert main(["train", "uncrtaints", "--data", str(synth_root), "--L", "3", "--preset",
                 "tiny", "--steps", "2", "--crop", "32", "--set", "use_sar=false", "--out",
                 str(ckpt / "uncrtaints"), "--no-progress"]) == 0
    assert "uncrtaints parameters: network 7,098" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["run", "--data", str(synth_root), "--methods", "uncrtaints", "--L", "2", "4",
                 "--limit", "1", "--checkpoints", str(ckpt), "--out", str(out),
                 "--no-progress"]) == 0
    got = read_uncertainty(out)
    assert sorted(got["L"]) == [2, 4] and set(got["source"]) == {"head"}
    assert (out / "rows" / "uncrtaints__L4__shard1of1.csv").is_file()


def test_cli_trains_use_sar_false_on_a_tree_without_s1(synth_root: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    root = _without_s1(synth_root, tmp_path / "root")
    argv = ["train", "uncrtaints", "--data", str(root), "--L", "3", "--preset", "tiny",
            "--steps", "1", "--crop", "32", "--no-progress", "--out"]
    assert main([*argv, str(tmp_path / "a")]) == 2  # S1 by default: refused
    assert "uncrtaints needs S1" in capsys.readouterr().err
    assert main([*argv, str(tmp_path / "b"), "--set", "use_sar=false"]) == 0
    assert UnCRtainTS.load(tmp_path / "b").config["use_sar"] is False
