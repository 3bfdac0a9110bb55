"""The registered SeqDM methods: any L from one checkpoint, save/load, K samples, the
temporal-training ablation, fit on a synthetic tree and `crbench train` end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from crbench.api import Inputs
from crbench.errors import CheckpointError, UsageError
from crbench_methods.seqdm import SeqDM, SeqDMNoTTS
from crbench_methods.seqdm.seqtis import RowDraws
from crbench_methods.seqdm.train import TrainBatch, Trainer


def _inputs(b: int = 2, L: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(b, L, h, w, generator=g) > 0.4).float()
    return Inputs(s2=torch.rand(b, L, 13, h, w, generator=g),
                  s1=torch.rand(b, L, 2, h, w, generator=g), masks=masks,
                  coverage=masks.mean(dim=(-2, -1)), days=torch.zeros(b, L, dtype=torch.long))


def _model(**over: object) -> SeqDM:
    """Tiny SeqDM whose zero-initialised output layers are perturbed (non-trivial output)."""
    m = SeqDM(preset="tiny", **{"sample_steps": 3, **over})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.net.parameters():
            if p.ndim > 1 and p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m


def _known_average(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    clear = (1 - inputs.masks.double()).unsqueeze(2)
    avg = (inputs.s2.double() * clear).sum(1) / clear.sum(1).clamp(min=1)
    known = (clear.sum(1) > 0).expand_as(avg)
    return avg, known


def test_one_checkpoint_serves_L_1_to_6(tmp_path: Path) -> None:
    from crbench.registry import create_method

    _model().save(tmp_path)
    for L in range(1, 7):
        m = create_method("seqdm", checkpoint=tmp_path, seq_len=L)  # through the entry point
        assert isinstance(m, SeqDM)
        inputs = _inputs(L=L, seed=L)
        pred = m.predict(inputs)
        assert pred.shape == (2, 13, 16, 16) and pred.dtype == torch.float32
        assert float(pred.min()) >= 0 and float(pred.max()) <= 1
        avg, known = _known_average(inputs)
        assert known.any() and not known.all()
        assert torch.allclose(pred.double()[known], avg[known], atol=1e-6, rtol=0)


def test_saved_model_predicts_identically_with_the_same_seed(tmp_path: Path) -> None:
    m = _model()
    inputs = _inputs()
    first = m.predict(inputs)
    assert m.last_seed == 0
    m.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["method"] == "seqdm"
    again = SeqDM.load(tmp_path).predict(inputs)
    assert torch.equal(first, again)
    other = SeqDM.load(tmp_path, sample_seed=1)
    _, known = _known_average(inputs)
    assert not torch.allclose(other.predict(inputs)[~known], first[~known])
    with pytest.raises(CheckpointError, match="fusion"):
        SeqDM.load(tmp_path, fusion="fuse-then-noise")
    with pytest.raises(CheckpointError, match="temporal_training"):
        SeqDMNoTTS.load(tmp_path)


def _in_float64(m: SeqDM) -> SeqDM:
    """``m`` sampling in float64 end to end (network, noise, diffusion tables): batching then
    changes only the float summation order inside the network's convolutions, whose effect in
    float64 (about 1e-16 relative) stays far below any tolerance a test needs."""
    m.net.double()
    to_network = m._network_inputs

    def network_inputs(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                 tuple[int, int]]:
        s2, s1, clear, crop = to_network(inputs)
        return s2.double(), s1.double(), clear.double(), crop

    m._network_inputs = network_inputs  # type: ignore[method-assign]
    m._net_fn = m.net  # type: ignore[method-assign,assignment]
    return m


def _rows(inputs: Inputs, order: list[int]) -> Inputs:
    return Inputs(**{f: getattr(inputs, f)[order] for f in
                     ("s2", "s1", "masks", "coverage", "days")})


def _draws_per_row(m: SeqDM, inputs: Inputs, monkeypatch: pytest.MonkeyPatch
                   ) -> list[list[torch.Tensor]]:
    """Every noise tensor the sampler drew, split by batch row: ``out[row][call]``."""
    calls: list[torch.Tensor] = []
    real = RowDraws.randn

    def spy(self: RowDraws, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        calls.append(real(self, shape, like))
        return calls[-1]

    with monkeypatch.context() as mp:
        mp.setattr(RowDraws, "randn", spy)
        m.predict(inputs)
    return [[c[i] for c in calls] for i in range(inputs.s2.shape[0])]


def test_a_sample_gets_the_same_noise_in_any_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Results must not depend on batch size, shard or rank: each sample has its own noise.

    The property itself: every noise draw of a row is bitwise the same whether the sample is
    sampled alone, in a batch of 2 or at the other position. The outputs then agree up to the
    float order of batched convolutions, compared in float64 where that order cannot matter
    (in float32 three sampling steps of an untrained net amplify it to about 1e-4)."""
    m = _model()
    pair = _inputs(b=2, seed=5)
    both = _draws_per_row(m, pair, monkeypatch)
    swapped = _draws_per_row(m, _rows(pair, [1, 0]), monkeypatch)
    assert len(both[0]) > 3  # the initial draw, then per step: S1, reverse step, dates
    for i in range(2):
        alone = _draws_per_row(m, _rows(pair, [i]), monkeypatch)[0]
        assert len(alone) == len(both[i]) == len(swapped[1 - i])
        for a, b, s in zip(alone, both[i], swapped[1 - i], strict=True):
            assert torch.equal(a, b) and torch.equal(a, s)
    assert not torch.equal(both[0][0], both[1][0])  # and two samples get different noise

    m64 = _in_float64(_model())
    pred = m64.predict(pair)
    assert pred.dtype == torch.float64
    for i in range(2):
        alone = m64.predict(_rows(pair, [i]))[0]
        assert torch.allclose(alone, pred[i], atol=1e-10, rtol=0)
    assert torch.allclose(m64.predict(_rows(pair, [1, 0])).flip(0), pred, atol=1e-10, rtol=0)
    other_seed = m64.sample(pair, seed=1).mean(0)  # the tolerance is far below what noise moves
    assert float((other_seed - pred).abs().max()) > 1e-3


def test_k_samples_give_mean_and_spread() -> None:
    m = _model(samples=3)
    inputs = _inputs(b=1)
    pred = m.predict(inputs)
    draws = m.sample(inputs)
    assert draws.shape == (3, 1, 13, 16, 16)
    assert torch.allclose(pred, draws.mean(0))
    _, known = _known_average(inputs)
    assert m.last_std is not None and m.last_std.shape == pred.shape
    assert float(m.last_std[known].max()) < 1e-6 < float(m.last_std[~known].mean())


def test_predict_pads_sizes_the_unet_cannot_halve() -> None:
    inputs = _inputs(b=1, h=15, w=13)
    pred = _model(sample_steps=2).predict(inputs)
    assert pred.shape == (1, 13, 15, 13)
    avg, known = _known_average(inputs)
    assert torch.allclose(pred.double()[known], avg[known], atol=1e-6, rtol=0)


def _batch() -> TrainBatch:
    g = torch.Generator().manual_seed(0)
    s2 = torch.rand(1, 3, 13, 16, 16, generator=g) * 2 - 1
    s1 = torch.rand(1, 3, 2, 16, 16, generator=g) * 2 - 1
    clear = (torch.rand(1, 3, 1, 16, 16, generator=g) > 0.5).float()
    return TrainBatch(x0=torch.rand(1, 13, 16, 16, generator=g) * 2 - 1, a0=s1[:, 0], s2=s2,
                      s1=s1, clear=clear)


def test_ablation_flag_changes_what_is_trained() -> None:
    assert SeqDMNoTTS(preset="tiny").config["temporal_training"] is False
    trained = {}
    for cls in (SeqDM, SeqDMNoTTS):
        m = cls(preset="tiny")
        trainer = Trainer(m.net, m.diffusion, m.config, torch.device("cpu"), seed=0)
        rec = trainer.iterate(_batch())
        trained[cls.name] = (trainer, rec)
    tts, no_tts = trained["seqdm"], trained["seqdm_no_tts"]
    assert tts[0].optimizer_steps == 2 and no_tts[0].optimizer_steps == 1
    assert "loss_seq" in tts[1] and "loss_seq" not in no_tts[1]
    assert tts[1]["loss_clear"] == pytest.approx(no_tts[1]["loss_clear"])  # same first step
    w_tts = dict(tts[0].model.named_parameters())
    w_no = dict(no_tts[0].model.named_parameters())
    assert any(not torch.equal(w_tts[k], w_no[k]) for k in w_tts)


def test_bad_options_are_named() -> None:
    with pytest.raises(UsageError, match="preset"):
        SeqDM(preset="huge")
    with pytest.raises(UsageError, match="fusion"):
        SeqDM(preset="tiny", fusion="average")
    with pytest.raises(UsageError, match="bogus"):
        SeqDM(preset="tiny", bogus=1)
    with pytest.raises(UsageError, match=r"prediction: unknown value 'v'; expected one of eps, "
                       r"x0, edm"):
        SeqDM(preset="tiny", prediction="v")
    with pytest.raises(UsageError, match=r"precond_sigma: got -0\.1, expected a number > 0"):
        SeqDM(preset="tiny", precond_sigma=-0.1)
    with pytest.raises(UsageError, match="sample_steps"):
        SeqDM(preset="tiny", sample_steps=2000)
    bad = _inputs(b=1)
    bad.s1 = bad.s1[:, :, :1]
    with pytest.raises(UsageError, match=r"inputs\.s1"):
        _model().predict(bad)


def _history(path: Path) -> list[dict[str, str]]:
    with (path / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_fit_checkpoints_and_resumes(synth_root: Path, tmp_path: Path) -> None:
    opts = {"val_sample_steps": 2, "ckpt_every": 1, "batch_size": 1}
    out = SeqDM(preset="tiny", **opts).fit(synth_root, tmp_path, steps=1, crop=16,
                                           progress=False)
    assert {"model.safetensors", "config.json", "trainer.pt", "history.csv"} <= {
        p.name for p in out.iterdir()}
    SeqDM(preset="tiny", **opts).fit(synth_root, tmp_path, steps=2, crop=16, progress=False,
                                     resume=True)
    rows = _history(tmp_path)
    # iteration 0: the validation before training (the learning curve's starting point)
    assert [r["iteration"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["loss_clear"] == "" and float(rows[0]["val_psnr"]) > 0
    # Eq. 28's loss is over the pixels no date sees: 0 for a crop that has none
    assert all(float(r["loss_clear"]) > 0 and float(r["loss_seq"]) >= 0 for r in rows[1:])
    state = torch.load(tmp_path / "trainer.pt", weights_only=True)
    assert state["iteration"] == 2 and state["optimizer_steps"] == 4
    loaded = SeqDM.load(tmp_path, seq_len=5)
    assert loaded.config["train_L"] == 3 and loaded.config["train_seed"] == 0


def test_crbench_train_cli(synth_root: Path, tmp_path: Path) -> None:
    from crbench.cli.main import main

    out = tmp_path / "ckpt"
    args = ["train", "seqdm", "--data", str(synth_root), "--L", "2", "--out", str(out),
            "--preset", "tiny", "--steps", "2", "--batch-size", "1", "--crop", "16",
            "--no-progress", "--no-temporal-training", "--fusion", "fuse-then-noise",
            "--set", "shared_noise=true", "--set", "val_batches=0"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["fusion"] == "fuse-then-noise" and cfg["temporal_training"] is False
    assert cfg["shared_noise"] is True and cfg["train_L"] == 2
    assert [r["loss_seq"] for r in _history(out)] == ["", ""]  # Eq. 27 only
    bad = [a for a in args[:-2] if a not in ("--fusion", "fuse-then-noise")]
    assert main([*bad, "--set", "fusion=average"]) == 2


def test_network_follows_adm() -> None:
    from diffusers.models.attention_processor import Attention

    from crbench_methods.seqdm.network import _block_types

    down, up = _block_types(256, 6, [32, 16, 8])  # the full preset: attention at 32, 16, 8
    assert down == ("ResnetDownsampleBlock2D",) * 3 + ("AttnDownBlock2D",) * 3
    assert up == ("AttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",) * 3
    unet = SeqDM(preset="tiny").net.unet
    assert unet.conv_in.in_channels == 15 and unet.conv_out.out_channels == 26
    attns = [m for m in unet.modules() if isinstance(m, Attention)]
    assert attns and all(a.heads == 4 for a in attns)
    assert unet.conv_out.weight.abs().max() == 0  # zero-initialised output (ADM)
    assert unet.down_blocks[0].resnets[0].time_emb_proj.out_features == 2 * 32  # scale-shift
