"""Seq2point's toolbox preset (issue 12): S1 in dB with a method's own clip, the toolbox's
"resnet" scaling, the zero-padded first fusion conv, the recipe, parameter counts, and the
converter of toolbox checkpoints.

The reference network below follows the toolbox's published structure and key names
(PatrickTUM/SEN12MS-CR-TS, models/networks_branched.py ``ResnetGenerator3DWithoutBottleneck``
with the ``model_initial`` that ``define_G`` cuts from ``ResnetStackedArchitecture``); it is
written here, not imported.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crbench.api import DEFAULT_S1_DB_RANGE, Inputs, TrainableMethod
from crbench.cli.main import main
from crbench.data.dataset import SEN12MSCRTS
from crbench.data.io import read_s1, read_s2, scale_s1
from crbench.registry import get_method_class
from crbench.runner.store import prediction_path
from crbench.training import TrainOptions, linear_decay
from crbench.training.loop import _dataset
from crbench_methods.seq2point import TOOLBOX_S1_DB_RANGE, Seq2Point, network_input


# ----------------------------------------------------------------------------- reference
class RefBlock2d(nn.Module):
    """network_resnet_branched.ResnetBlock: conv, ReLU, conv (zero pad 1); x + 0.1 f(x)."""

    def __init__(self, f: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(f, f, 3, padding=1), nn.ReLU(True),
                                        nn.Conv2d(f, f, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * self.conv_block(x)


class RefPad3d(nn.Module):
    """networks_branched.ReflectionPad3D: reflect H, W; replicate D (batch 1 only)."""

    def __init__(self, pad_d: int, pad_hw: int) -> None:
        super().__init__()
        self.hw = nn.ReflectionPad2d(pad_hw)
        self.d = nn.ReplicationPad3d((0, 0, 0, 0, pad_d, pad_d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.hw(x.squeeze(0).transpose(0, 1)).transpose(0, 1).unsqueeze(0)
        return self.d(y)


class RefBlock3d(nn.Module):
    """networks_branched.ResnetBlock3D (reflect, no norm, late ReLU): relu(x + 0.1 f(x))."""

    def __init__(self, f: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(RefPad3d(1, 1), nn.Conv3d(f, f, 3), nn.ReLU(True),
                                        RefPad3d(1, 1), nn.Conv3d(f, f, 3))
        self.block_output_relu = nn.ReLU(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_output_relu(x + 0.1 * self.conv_block(x))


class RefSeq2Point(nn.Module):
    """The toolbox's Seq2point generator (5 fusion blocks are hard-coded there)."""

    def __init__(self, n_samples: int, f: int = 256, b: int = 16) -> None:
        super().__init__()
        self.model_initial = nn.Sequential(nn.Conv2d(15, f, 3, padding=1), nn.ReLU(True),
                                           *(RefBlock2d(f) for _ in range(b)))
        self.model_final = nn.Sequential(
            nn.Conv3d(f, f, 3, padding=1), nn.ReLU(True), *(RefBlock3d(f) for _ in range(5)),
            RefPad3d(0, 1), nn.Conv3d(f, 13, (n_samples, 3, 3)), nn.Tanh())

    def forward(self, dates: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack([self.model_initial(d) for d in dates], dim=2)
        return self.model_final(x).squeeze(0).transpose(0, 1)


def toolbox_inputs(s2_raw: list[np.ndarray], s1_raw: list[np.ndarray]) -> list[torch.Tensor]:
    """The toolbox's "resnet" process_MS / process_SAR of raw DN and dB, one (1, 15, H, W)
    tensor per date."""
    out = []
    for s2, s1 in zip(s2_raw, s1_raw, strict=True):
        ms = np.clip(s2, 0, 10000) / 2000
        vv = 2 * (np.clip(s1[0], -25.0, 0) + 25.0) / 25.0
        vh = 2 * (np.clip(s1[1], -32.5, 0) + 32.5) / 32.5
        out.append(torch.from_numpy(np.concatenate([ms, vv[None], vh[None]]))[None].float())
    return out


def small_reference(L: int = 3, seed: int = 0) -> RefSeq2Point:
    torch.manual_seed(seed)
    ref = RefSeq2Point(L, f=16, b=2)
    with torch.no_grad():  # larger weights than the default init, so that outputs vary
        for p in ref.parameters():
            p.mul_(3.0)
    return ref.eval()


# ----------------------------------------------------------------------------- S1 range
def test_scale_s1_range_ends_and_vh_at_minus_30_db() -> None:
    db = np.array([[-40.0, -32.5, -30.0, -25.0, 0.0, 3.0]] * 2, dtype=np.float32)
    toolbox = scale_s1(db, TOOLBOX_S1_DB_RANGE)
    np.testing.assert_array_equal(toolbox[0], [0, 0, 0, 0, 1, 1])  # VV clipped at -25 dB
    np.testing.assert_allclose(toolbox[1], [0, 0, 2.5 / 32.5, 7.5 / 32.5, 1, 1], rtol=1e-6)
    # the network sees the toolbox's [0, 2] value: 2 * (-30 + 32.5) / 32.5
    assert 2 * toolbox[1, 2] == pytest.approx(2 * (-30 + 32.5) / 32.5, rel=1e-6)
    default = scale_s1(db)
    assert default[1, 2] == 0.0  # crbench's default clips VH at -25 dB
    np.testing.assert_array_equal(scale_s1(db, DEFAULT_S1_DB_RANGE), default)


@pytest.mark.parametrize("bad", [((-25, 0),), ((0, -25), (-25, 0)), "x", ((-25, 0), (1,))])
def test_bad_s1_range_named(synth_root: Path, bad: object) -> None:
    with pytest.raises(ValueError, match=r"^s1_db_range: bad value .*expected"):
        SEN12MSCRTS(synth_root, split="test", L=3, s1_db_range=bad)  # type: ignore[arg-type]


def test_dataset_hands_s1_over_the_method_range(synth_root: Path) -> None:
    plain = SEN12MSCRTS(synth_root, split="test", L=3)
    toolbox = SEN12MSCRTS(synth_root, split="test", L=3, s1_db_range=TOOLBOX_S1_DB_RANGE)
    a, b = plain[0], toolbox[0]
    rec = next(r for r in plain.records if (r.roi, r.patch) == (a.meta.roi, a.meta.patch))
    raw = read_s1(rec.s1[rec.pos(a.meta.input_idx[0])]).array
    vh = raw[1]
    low = (vh < -25) & (vh > -32.5)
    assert low.any()  # the synthetic tree has VH between -32.5 and -25 dB
    got = b.inputs.s1[0, 1].numpy()
    np.testing.assert_allclose(got[low], (vh[low] + 32.5) / 32.5, rtol=1e-6)
    assert (a.inputs.s1[0, 1].numpy()[low] == 0).all()  # lost under the default clip
    torch.testing.assert_close(b.inputs.s1[:, 0], a.inputs.s1[:, 0], rtol=0, atol=0)  # VV
    assert torch.equal(a.inputs.s2, b.inputs.s2) and torch.equal(a.target, b.target)


def test_other_methods_inputs_bit_identical(synth_root: Path) -> None:
    """Every method but Seq2point's toolbox preset keeps the default range, and a dataset
    given it explicitly hands exactly the inputs of before (scale_s1's [-25, 0] dB)."""
    for name in ("least_cloudy", "mosaicing", "stgan", "seqdm", "seq2point"):
        assert get_method_class(name).s1_db_range == DEFAULT_S1_DB_RANGE, name
    assert Seq2Point(3).s1_db_range == DEFAULT_S1_DB_RANGE
    assert Seq2Point(3, "toolbox").s1_db_range == TOOLBOX_S1_DB_RANGE
    plain = SEN12MSCRTS(synth_root, split="test", L=3)
    given = SEN12MSCRTS(synth_root, split="test", L=3, s1_db_range=DEFAULT_S1_DB_RANGE)
    for i in range(len(plain)):
        x, y = plain[i], given[i]
        for field in ("s2", "s1", "masks", "coverage", "days"):
            assert torch.equal(getattr(x.inputs, field), getattr(y.inputs, field)), field
        rec = next(r for r in plain.records if (r.roi, r.patch) == (x.meta.roi, x.meta.patch))
        for k, t in enumerate(x.meta.input_idx):
            want = scale_s1(read_s1(rec.s1[rec.pos(t)]).array)
            assert np.array_equal(x.inputs.s1[k].numpy(), want)


def test_training_datasets_get_the_method_range(synth_root: Path) -> None:
    opts = TrainOptions(seq_len=3, batch_size=1, s1_db_range=TOOLBOX_S1_DB_RANGE)
    assert _dataset(synth_root, "train", opts, "random").s1_db_range == TOOLBOX_S1_DB_RANGE
    assert _dataset(synth_root, "val", opts, "fixed").s1_db_range == TOOLBOX_S1_DB_RANGE
    assert _dataset(synth_root, "train", TrainOptions(seq_len=3, batch_size=1),
                    "random").s1_db_range is None


# ----------------------------------------------------------------------------- preset
def test_toolbox_scaling_of_network_inputs(synth_root: Path) -> None:
    ds = SEN12MSCRTS(synth_root, split="test", L=3, s1_db_range=TOOLBOX_S1_DB_RANGE)
    sample = ds[0]
    rec = next(r for r in ds.records if (r.roi, r.patch) == (sample.meta.roi,
                                                             sample.meta.patch))
    pos = [rec.pos(t) for t in sample.meta.input_idx]
    want = toolbox_inputs([read_s2(rec.s2[p]).array for p in pos],
                          [read_s1(rec.s1[p]).array for p in pos])
    x = network_input(Inputs.stack([sample.inputs]), "toolbox")
    torch.testing.assert_close(x[0], torch.cat(want), rtol=1e-6, atol=1e-6)
    assert float(x[:, :, :13].max()) <= 5.0 and float(x[:, :, 13:].max()) <= 2.0


def test_first_fusion_conv_zero_padded_at_first_and_last_dates() -> None:
    torch.manual_seed(0)
    tool, ours = Seq2Point(4, "toolbox-tiny").net, Seq2Point(4, "tiny").net
    ours.fusion[0].load_state_dict(tool.fusion[0].state_dict())
    x = torch.rand(1, 16, 4, 8, 8) + 0.5
    w, b = tool.fusion[0].weight, tool.fusion[0].bias
    with torch.no_grad():
        got, mine = tool.fusion[0](x), ours.fusion[0](x)
        zero = torch.nn.functional.conv3d(x, w, b, padding=1)
    assert torch.equal(got, zero)
    inner = (slice(None), slice(None), slice(None), slice(1, -1), slice(1, -1))
    for t in (0, 3):  # replicate (crbench) vs zero (toolbox) in time
        assert (mine[inner][:, :, t] - got[inner][:, :, t]).abs().max() > 1e-3
    torch.testing.assert_close(mine[inner][:, :, 1:3], got[inner][:, :, 1:3])
    # every later 3D conv is reflect/replicate-padded in both
    assert type(tool.fusion[2].body[0]) is type(ours.fusion[2].body[0])


def test_toolbox_recipe() -> None:
    c = Seq2Point(3, "toolbox").config
    assert (c["batch_size"], c["epochs"], c["decay_start"]) == (1, 200, 0.5)
    assert (c["freeze_steps"], c["lr"], c["beta1"], c["lambda_l1"]) == (100_000, 2e-4, 0.5, 100)
    assert c["pretrain_steps"] > 0 and c["first_pad"] == "zero" and c["scaling"] == "toolbox"
    per_epoch = 7
    factor = linear_decay(c["epochs"] * per_epoch, c["decay_start"])
    assert factor(100 * per_epoch - 1) == 1.0  # 100 epochs at constant lr
    assert factor(150 * per_epoch) == pytest.approx(0.5)  # then linear decay over 100
    full = Seq2Point(3).config
    assert (full["first_pad"], full["scaling"], full["lambda_l1"]) == ("reflect", "crbench", 1.0)


def test_toolbox_init_is_normal_002() -> None:
    torch.manual_seed(0)
    net = Seq2Point(3, "toolbox").net
    w = net.fusion[2].body[0].weight.detach()
    assert float(w.std()) == pytest.approx(0.02, rel=0.02)
    assert float(net.out.bias.detach().abs().max()) == 0


def test_toolbox_pretrained_branch_then_frozen(synth_root: Path, tmp_path: Path) -> None:
    """toolbox-tiny: 2 pretraining steps of the single-date ResNet (64-channel head, no tanh),
    its branch loaded and frozen for 2 steps, then trained."""
    from safetensors.torch import load_file

    frozen = Seq2Point(3, "toolbox-tiny", val_samples=0).fit(
        synth_root, tmp_path / "a", steps=2, crop=16, progress=False)
    pre = load_file(str(frozen / "pretrain" / "model.safetensors"))
    assert pre["head.0.weight"].shape[0] == 64 and pre["head.2.weight"].shape[0] == 13
    final = load_file(str(frozen / "model.safetensors"))
    keys = [k for k in final if k.startswith("branch.")]
    assert all(torch.equal(final[k], pre[k]) for k in keys)
    thawed = Seq2Point(3, "toolbox-tiny", val_samples=0).fit(
        synth_root, tmp_path / "b", steps=4, crop=16, progress=False)
    pre_b = load_file(str(thawed / "pretrain" / "model.safetensors"))
    final_b = load_file(str(thawed / "model.safetensors"))
    assert torch.equal(pre_b["branch.head.0.weight"], pre["branch.head.0.weight"])
    assert not torch.equal(final_b["branch.head.0.weight"], pre_b["branch.head.0.weight"])


# ----------------------------------------------------------------------------- counts
def test_train_toolbox_prints_the_toolbox_parameter_count(
        synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    want = sum(p.numel() for p in RefSeq2Point(3).parameters())
    code = main(["train", "seq2point", "--data", str(synth_root), "--L", "3", "--out",
                 str(tmp_path / "run"), "--preset", "toolbox", "--steps", "1", "--crop", "8",
                 "--set", "pretrain_steps=1", "--set", "val_samples=0", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    lines = [ln for ln in out.splitlines() if "parameters:" in ln]
    assert len(lines) == 1, out
    found = re.search(r"network ([\d,]+)", lines[0])
    assert found and int(found.group(1).replace(",", "")) == want == 38_474_253


def test_default_parameter_counts_name_each_module() -> None:
    class Two(TrainableMethod):
        name = "two"

        def __init__(self) -> None:
            self.net = nn.Conv2d(3, 4, 3)  # 112 parameters
            self._disc = nn.Linear(5, 2)  # 12
            self.config = {}

        def predict(self, inputs: Inputs) -> torch.Tensor:
            raise NotImplementedError

        def fit(self, data_root: Path, out: Path, **options: object) -> Path:
            raise NotImplementedError

        def save(self, path: Path) -> None:
            raise NotImplementedError

        @classmethod
        def load(cls, path: Path, **expect: object) -> Two:
            raise NotImplementedError

    assert Two().parameter_counts() == {"network": 112, "disc": 12}
    lazy = Seq2Point(3, "toolbox")
    state = torch.random.get_rng_state()
    counts = lazy.parameter_counts()
    assert torch.equal(torch.random.get_rng_state(), state)  # fit's seeding is untouched
    assert lazy._net is None  # counted without building the network
    assert counts["network"] == sum(p.numel() for p in RefSeq2Point(3).parameters())


# ----------------------------------------------------------------------------- converter
def test_convert_matches_the_reference_forward(synth_root: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    ref = small_reference()
    pth = tmp_path / "200_net_G.pth"
    torch.save(ref.state_dict(), pth)
    assert main(["convert", "toolbox-seq2point", str(pth), "--L", "3",
                 "--out", str(tmp_path / "ckpt")]) == 0
    assert "seq2point/L3" in capsys.readouterr().out
    model = Seq2Point.load(tmp_path / "ckpt" / "seq2point" / "L3", seq_len=3)
    ds = SEN12MSCRTS(synth_root, split="test", L=3, s1_db_range=model.s1_db_range)
    refs: dict[tuple[str, int], np.ndarray] = {}
    for i in range(len(ds)):
        sample = ds[i]
        rec = next(r for r in ds.records if (r.roi, r.patch) == (sample.meta.roi,
                                                                 sample.meta.patch))
        pos = [rec.pos(t) for t in sample.meta.input_idx]
        dates = toolbox_inputs([read_s2(rec.s2[p]).array for p in pos],
                               [read_s1(rec.s1[p]).array for p in pos])
        with torch.no_grad():
            want = 5 * (ref(dates) + 1) / 2 / 5  # fake_B in [0, 5], scored / 5 (test.py)
        got = model.predict(Inputs.stack([sample.inputs]))
        assert float(want.std()) > 0.01
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        refs[(sample.meta.roi, sample.meta.patch)] = want[0].numpy()
    # crbench run --checkpoints DIR hands the converted model S1 over its own range: its saved
    # predictions (uint16 DN) are the reference's up to the DN rounding
    run = tmp_path / "run"
    assert main(["run", "--data", str(synth_root), "--methods", "seq2point", "--L", "3",
                 "--checkpoints", str(tmp_path / "ckpt"), "--out", str(run),
                 "--save-predictions", "--no-progress"]) == 0
    for (roi, patch), want_np in refs.items():
        saved = read_s2(prediction_path(run, "seq2point", 3, roi, patch)).array / 10000
        np.testing.assert_allclose(saved, want_np, rtol=0, atol=0.5e-4 + 1e-5)


def _convert_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], pth: Path,
                   L: int = 3) -> str:
    code = main(["convert", "toolbox-seq2point", str(pth), "--L", str(L),
                 "--out", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "ckpt" / "seq2point").exists()
    return err


def test_convert_wrong_file_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    assert f"{text}: not a PyTorch state dict" in _convert_error(tmp_path, capsys, text)
    pickled = tmp_path / "full.pth"
    torch.save(small_reference(), pickled)  # a full pickle of the module: refused
    assert f"{pickled}: not a PyTorch state dict" in _convert_error(tmp_path, capsys, pickled)


@pytest.mark.parametrize("change, expect", [
    ("drop", "missing key 'model_final.4.conv_block.4.bias'"),
    ("extra", "unexpected key 'model_final.9.weight'"),
    ("shape", "key 'model_initial.2.conv_block.0.weight' has shape"),
])
def test_convert_key_mismatch_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    change: str, expect: str) -> None:
    state = small_reference().state_dict()
    if change == "drop":
        del state["model_final.4.conv_block.4.bias"]
    elif change == "extra":
        state["model_final.9.weight"] = torch.zeros(1)
    else:
        state["model_initial.2.conv_block.0.weight"] = torch.zeros(16, 16, 1, 1)
    pth = tmp_path / "bad_net_G.pth"
    torch.save(state, pth)
    err = _convert_error(tmp_path, capsys, pth)
    assert str(pth) in err and expect in err


def test_convert_other_L_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pth = tmp_path / "latest_net_G.pth"
    torch.save(small_reference().state_dict(), pth)
    err = _convert_error(tmp_path, capsys, pth, L=4)
    assert "--L: bad value 4" in err and "L=3" in err
