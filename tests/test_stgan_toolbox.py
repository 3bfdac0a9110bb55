"""STGAN's toolbox preset: the toolbox's generators and discriminator (checked against a
reference written here from the toolbox's published structure), parameter counts, L = 3 only,
init, dropout, the 4-band variant's channel order and its scoring on 4 bands."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_inputs
from metrics_refs import ref_metrics
from torch import nn

from crbench.cli.main import main
from crbench.constants import S2_BANDS
from crbench.errors import CheckpointError, UsageError
from crbench.metrics import compute_metrics
from crbench_methods.stgan import STGAN
from crbench_methods.stgan.toolbox import ToolboxDiscriminator, ToolboxGenerator

SMALL = {"ngf": 4, "n_blocks": 2, "ndf": 4}  # toolbox preset at small widths
TB_BANDS = [7, 1, 2, 3]  # the toolbox's 4-band STGAN: B08, B02, B03, B04


# ------------------------------------------------------------- reference (toolbox structure)
# Transcribed from the toolbox's models/networks_branched.py (get_norm_layer, ResnetBlock,
# ResnetGenerator, IndependentResnetGenerator, NLayerDiscriminator), same attribute names.
def ref_norm(norm_type: str) -> functools.partial:
    if norm_type == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)


class RefResnetBlock(nn.Module):
    def __init__(self, dim: int, norm_layer: functools.partial, use_dropout: bool,
                 use_bias: bool) -> None:
        super().__init__()
        block: list[nn.Module] = [nn.ReflectionPad2d(1),
                                  nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
                                  norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            block += [nn.Dropout(0.5)]
        block += [nn.ReflectionPad2d(1),
                  nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
                  norm_layer(dim), nn.ReLU(True)]
        self.conv_block = nn.Sequential(*block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0 * self.conv_block(x)


def _ref_layers(input_nc: int, output_nc: int, ngf: int, norm_layer: functools.partial,
                use_dropout: bool, n_blocks: int, n_downsampling: int
                ) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module]]:
    use_bias = norm_layer.func == nn.InstanceNorm2d
    initial = [nn.ReflectionPad2d(3),
               nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
               norm_layer(ngf), nn.ReLU(True)]
    intermediate: list[nn.Module] = []
    for i in range(n_downsampling):
        mult = 2 ** i
        intermediate += [nn.Conv2d(2 * ngf * mult, 2 * ngf * mult * 2, kernel_size=3, stride=2,
                                   padding=1, bias=use_bias),
                         norm_layer(2 * ngf * mult * 2), nn.ReLU(True)]
    mult = 2 ** n_downsampling
    for _ in range(n_blocks):
        intermediate += [RefResnetBlock(2 * ngf * mult, norm_layer, use_dropout, use_bias)]
    final: list[nn.Module] = []
    for i in range(n_downsampling):
        mult = 2 ** (n_downsampling - i)
        final += [nn.ConvTranspose2d(6 * ngf * mult, int(6 * ngf * mult / 2), kernel_size=3,
                                     stride=2, padding=1, output_padding=1, bias=use_bias),
                  norm_layer(int(6 * ngf * mult / 2)), nn.ReLU(True)]
    final += [nn.ReflectionPad2d(3), nn.Conv2d(6 * ngf, output_nc, kernel_size=7, padding=0),
              nn.Tanh()]
    return initial, intermediate, final


class RefResnetGenerator(nn.Module):
    """``ResnetGenerator`` (netG resnet_9blocks): 3 downsamplings."""

    def __init__(self, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool,
                 n_blocks: int = 9) -> None:
        super().__init__()
        initial, intermediate, final = _ref_layers(input_nc, output_nc, ngf, ref_norm(norm),
                                                   use_dropout, n_blocks, 3)
        self.model_initial = nn.Sequential(*initial)
        self.model_intermediate = nn.Sequential(*intermediate)
        self.model_final = nn.Sequential(*final)

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        o0, o1, o2 = (self.model_initial(input[i]) for i in range(3))
        i0 = self.model_intermediate(torch.cat((o0, o1), 1))
        i1 = self.model_intermediate(torch.cat((o0, o2), 1))
        i2 = self.model_intermediate(torch.cat((o1, o2), 1))
        return self.model_final(torch.cat((i0, i1, i2), 1))


class RefIndependentResnetGenerator(nn.Module):
    """``IndependentResnetGenerator`` (netG independent_resnet_9blocks): 2 downsamplings; its
    three encoders (and trunks) are built from the same layer objects, as in the toolbox."""

    def __init__(self, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool,
                 n_blocks: int = 9) -> None:
        super().__init__()
        initial, intermediate, final = _ref_layers(input_nc, output_nc, ngf, ref_norm(norm),
                                                   use_dropout, n_blocks, 2)
        self.model_initial_0 = nn.Sequential(*initial)
        self.model_initial_1 = nn.Sequential(*initial)
        self.model_initial_2 = nn.Sequential(*initial)
        self.model_intermediate_01 = nn.Sequential(*intermediate)
        self.model_intermediate_02 = nn.Sequential(*intermediate)
        self.model_intermediate_12 = nn.Sequential(*intermediate)
        self.model_final = nn.Sequential(*final)

    def forward(self, input: list[torch.Tensor]) -> torch.Tensor:
        o0 = self.model_initial_0(input[0])
        o1 = self.model_initial_1(input[1])
        o2 = self.model_initial_2(input[2])
        i0 = self.model_intermediate_01(torch.cat((o0, o1), 1))
        i1 = self.model_intermediate_02(torch.cat((o0, o2), 1))
        i2 = self.model_intermediate_12(torch.cat((o1, o2), 1))
        return self.model_final(torch.cat((i0, i1, i2), 1))


class RefNLayerDiscriminator(nn.Module):
    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3,
                 norm: str = "batch") -> None:
        super().__init__()
        norm_layer = ref_norm(norm)
        use_bias = norm_layer.func != nn.BatchNorm2d
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
                                nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=4, stride=2,
                              padding=1, bias=use_bias), norm_layer(ndf * nf_mult),
                    nn.LeakyReLU(0.2, True)]
        nf_mult_prev, nf_mult = nf_mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=4, stride=1, padding=1,
                          bias=use_bias), norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=4, stride=1, padding=1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


REF_G = {"resnet_9blocks": RefResnetGenerator,
         "independent_resnet_9blocks": RefIndependentResnetGenerator}


def _count(net: nn.Module) -> int:
    """The toolbox's print_networks count: ``net.parameters()`` (shared tensors once)."""
    return sum(p.numel() for p in net.parameters())


def _ours_from_ref(ref: nn.Module) -> dict[str, torch.Tensor]:
    """A reference state dict under our key names: the independent generator's copies of
    the shared encoder / trunk (``_0``, ``_01``) become ``model_initial`` / ``_intermediate``."""
    out = {}
    for k, v in ref.state_dict().items():
        head, _, rest = k.partition(".")
        if head in ("model_initial_0", "model_intermediate_01"):
            out[head.rsplit("_", 1)[0] + "." + rest] = v
        elif head in ("model_initial", "model_intermediate", "model_final"):
            out[k] = v
    return out


# ------------------------------------------------------------------------ architecture
@pytest.mark.parametrize("generator", list(REF_G))
@pytest.mark.parametrize(("bands", "use_s1"), [("nbgr", False), ("nbgr", True), ("all", True)])
def test_parameter_counts_equal_the_toolbox(generator: str, bands: str, use_s1: bool) -> None:
    n_out = 4 if bands == "nbgr" else 13
    n_in = n_out + 2 * use_s1
    with torch.device("meta"):  # full widths, nothing allocated
        ours = STGAN(3, "toolbox", generator=generator, bands=bands, use_s1=use_s1)
        counts = ours.parameter_counts()
        ref_g = REF_G[generator](n_in, n_out, 64, "batch", True)
        ref_d = RefNLayerDiscriminator(3 * n_in + n_out, 64)
    assert counts == {"generator": _count(ref_g), "discriminator": _count(ref_d)}
    # the reference's state dict repeats the shared tensors under 3 names each
    if generator == "independent_resnet_9blocks":
        assert sum(v.numel() for v in ref_g.state_dict().values()
                   if v.dtype.is_floating_point) > _count(ref_g)


def test_docstring_states_the_counts() -> None:
    import crbench_methods.stgan as module

    with torch.device("meta"):
        tb = STGAN(3, "toolbox").parameter_counts()
        big = STGAN(3, "toolbox", generator="resnet_9blocks").parameter_counts()
        full = STGAN(3).parameter_counts()
    doc = " ".join(module.__doc__.split())
    for n in (tb["generator"], tb["discriminator"], big["generator"], full["generator"],
              full["discriminator"]):
        assert f"{n:,}" in doc


@pytest.mark.parametrize("generator", list(REF_G))
def test_outputs_equal_the_reference_with_its_weights(generator: str) -> None:
    torch.manual_seed(0)
    ref = REF_G[generator](6, 4, 4, "batch", True, n_blocks=2)
    x = [torch.rand(2, 6, 24, 24) * 2 - 1 for _ in range(3)]
    ref.train()
    ref(x)  # move the batch-norm running statistics away from their initial values
    model = STGAN(3, "toolbox", generator=generator, use_s1=True, **SMALL)
    net = model.generator.net
    assert isinstance(net, ToolboxGenerator)
    net.load_state_dict(_ours_from_ref(ref), strict=True)
    ref.eval()
    net.eval()
    with torch.no_grad():
        want = ref(x)
        got = net(torch.stack(x, 1))
    assert got.shape == (2, 4, 24, 24)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    # the generator's trunk ends each residual block with a ReLU after the second norm
    block = net.model_intermediate[-1].conv_block
    assert isinstance(block[-1], nn.ReLU) and isinstance(block[-2], nn.BatchNorm2d)


def test_discriminator_equals_the_reference() -> None:
    torch.manual_seed(1)
    ref = RefNLayerDiscriminator(16, 8)
    model = STGAN(3, "toolbox", ngf=4, n_blocks=1, ndf=8)
    disc = model._build_discriminator()
    assert isinstance(disc, ToolboxDiscriminator)
    disc.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()
    disc.eval()
    x = torch.rand(1, 16, 70, 70)
    assert torch.allclose(disc(x), ref(x), atol=1e-6, rtol=0)


def test_init_statistics() -> None:
    torch.manual_seed(0)
    model = STGAN(3, "toolbox", ngf=16, n_blocks=2, ndf=16)
    nets = {"generator": model.generator, "discriminator": model._build_discriminator()}
    for net in nets.values():
        convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        weights = torch.cat([m.weight.detach().flatten() for m in convs])
        assert abs(float(weights.mean())) < 1e-3 and abs(float(weights.std()) - 0.02) < 5e-4
        assert all(float(m.bias.detach().abs().max()) == 0 for m in convs if m.bias is not None)
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns
        bn_w = torch.cat([m.weight.detach() for m in bns])
        assert abs(float(bn_w.mean()) - 1) < 5e-3 and abs(float(bn_w.std()) - 0.02) < 5e-3
        assert all(float(m.bias.detach().abs().max()) == 0 for m in bns)
    # batch norm follows every conv but the last: those convs have no bias
    convs = [m for m in nets["generator"].modules() if isinstance(m, nn.Conv2d)]
    assert [m.bias is not None for m in convs] == [False] * (len(convs) - 1) + [True]
    # the default preset keeps PyTorch's uniform initialisation, bounded by 1/sqrt(fan_in);
    # N(0, 0.02) exceeds that bound (0.0396 for the 13 x 7 x 7 encoder) in about 5 % of weights
    bound = 1 / (13 * 49) ** 0.5
    default = STGAN(3, "tiny").generator.net.encoder[1].weight.detach()
    toolbox = STGAN(3, "toolbox", bands="all", **SMALL).generator.net.model_initial[1].weight
    assert float(default.abs().max()) <= bound
    assert float((toolbox.detach().abs() > bound).float().mean()) > 0.02


def test_dropout_active_in_training_only() -> None:
    torch.manual_seed(0)
    model = STGAN(3, "toolbox", **SMALL)
    drops = [m for m in model.generator.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == SMALL["n_blocks"] and all(d.p == 0.5 for d in drops)
    x = model.network_input(random_inputs(L=3, h=16, w=16))
    gen = model.generator
    gen.train()
    with torch.no_grad():
        assert not torch.equal(gen(x), gen(x))
    inputs = random_inputs(L=3, h=16, w=16)
    assert torch.equal(model.predict_bands(inputs), model.predict_bands(inputs))
    assert gen.training  # predict restores the mode it found
    assert not any(isinstance(m, nn.Dropout) for m in STGAN(3, "tiny").generator.modules())
    with pytest.raises(UsageError, match=r"dropout: 0.5 needs a toolbox .* expected dropout=0"):
        STGAN(3, "tiny", dropout=0.5)


def test_lr_decays_linearly_over_the_second_half() -> None:
    model = STGAN(3, "toolbox", **SMALL)
    parts = model.training_parts(10, torch.device("cpu"))
    factor = parts.schedulers["gen"].lr_lambdas[0]
    assert [factor(s) for s in (0, 4)] == [1.0, 1.0]
    assert factor(5) == 1.0 and factor(6) == pytest.approx(0.8) and factor(10) == 0.0
    opt = parts.optimizers["gen"]
    assert opt.defaults["lr"] == 2e-4 and opt.defaults["betas"] == (0.5, 0.999)
    cfg = model.config
    assert (cfg["lambda_l1"], cfg["lambda_gan"], cfg["batch_size"]) == (100.0, 1.0, 1)


# ------------------------------------------------------------------------------ L
@pytest.mark.parametrize("L", [2, 4])
def test_toolbox_generator_refuses_L_other_than_3(L: int, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match=rf"seq_len: {L} is not possible .* fixed to L=3"):
        STGAN(L, "toolbox")
    rc = main(["train", "stgan", "--data", str(tmp_path), "--L", str(L), "--out",
               str(tmp_path / "o"), "--preset", "toolbox"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"--L: {L} is not possible" in err[0]
    model = STGAN(3, "toolbox", **SMALL)
    with pytest.raises(UsageError, match=rf"inputs: L={L} but the toolbox generator"):
        model.predict(random_inputs(L=L, h=16, w=16))
    model.save(tmp_path / "ck")
    with pytest.raises(CheckpointError, match=rf"built for L=3, but L={L} was asked for"):
        STGAN.load(tmp_path / "ck", seq_len=L)
    assert STGAN.load(tmp_path / "ck", seq_len=3).config == model.config


# ------------------------------------------------------------------------------ bands
def test_band_selection_order_into_the_network() -> None:
    model = STGAN(3, "toolbox", use_s1=True, **SMALL)
    assert model.bands == ("B08", "B02", "B03", "B04") and model.band_idx == TB_BANDS
    inputs = random_inputs(L=3, h=16, w=16)
    x = model.network_input(inputs)
    assert x.shape == (2, 3, 6, 16, 16)
    assert torch.equal(x[:, :, :4], inputs.s2[:, :, TB_BANDS] * 2 - 1)
    assert torch.equal(x[:, :, 4:], inputs.s1 * 2 - 1)
    pred = model.predict(inputs)
    assert torch.equal(pred[:, TB_BANDS], model.predict_bands(inputs))
    for generator in REF_G:  # edge-padded to the trunk's stride: any H x W
        odd = STGAN(3, "toolbox", generator=generator, **SMALL)
        assert odd.predict(random_inputs(L=3, h=30, w=27)).shape == (2, 13, 30, 27)
    assert STGAN(3).bands == ("B04", "B03", "B02", "B08")  # crbench's default order kept


def test_compute_metrics_on_a_band_subset_equals_reference() -> None:
    rng = np.random.default_rng(3)
    p = rng.random((2, 13, 32, 32)).astype(np.float32)
    t = rng.random((2, 13, 32, 32)).astype(np.float32)
    m = rng.random((2, 3, 32, 32)) < 0.5
    other = [b for b in range(13) if b not in TB_BANDS]
    p[:, other], t[:, other] = 0.0, 1.0  # the bands left out: as wrong as can be
    got = compute_metrics(torch.from_numpy(p), torch.from_numpy(t), torch.from_numpy(m),
                          bands=TB_BANDS)
    for i in range(2):
        want = ref_metrics(p[i, TB_BANDS].astype(np.float64), t[i, TB_BANDS].astype(np.float64),
                           m[i], "paper")
        for k, v in want.items():
            assert float(got[k][i]) == pytest.approx(v, rel=1e-5, abs=1e-6), k
    full = compute_metrics(torch.from_numpy(p), torch.from_numpy(t), torch.from_numpy(m))
    assert float(full["nrmse_all"][0]) > 0.8 > float(got["nrmse_all"][0])
    with pytest.raises(UsageError, match=r"bands: bad value \[7, 7\]"):
        compute_metrics(torch.from_numpy(p), torch.from_numpy(t), torch.from_numpy(m),
                        bands=[7, 7])


def test_train_run_report_scores_the_4_bands(synth_root: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    ck = tmp_path / "ck" / "stgan"
    args = ["train", "stgan", "--data", str(synth_root), "--L", "3", "--out", str(ck),
            "--preset", "toolbox", "--steps", "2", "--crop", "32", "--batch-size", "1",
            *(f"--set={k}={v}" for k, v in SMALL.items())]
    assert main(args) == 0
    model = STGAN.load(ck, seq_len=3)
    assert model.config["generator"] == "independent_resnet_9blocks"
    run = tmp_path / "run"
    assert main(["run", "--data", str(synth_root), "--methods", "stgan,mosaicing", "--L", "3",
                 "--checkpoints", str(tmp_path / "ck"), "--out", str(run), "--no-progress"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    scored = {r["method"]: r["scored_bands"] for r in manifest["runs"].values()}
    assert scored["stgan"] == ["B08", "B02", "B03", "B04"] and len(scored["mosaicing"]) == 13
    _check_rows_by_hand(synth_root, run, model)
    capsys.readouterr()
    assert main(["report", "--results", str(run), "--format", "md"]) == 0
    table = (run / "report" / "table1.md").read_text()
    assert "| stgan† |" in table and "| mosaicing |" in table
    assert "† stgan: scored on B08, B02, B03, B04 only" in table
    assert "B04, B03, B02 and B08" not in table  # the old-run note is not needed


def _check_rows_by_hand(root: Path, run: Path, model: STGAN) -> None:
    """Each STGAN row equals the metrics of its prediction on B08, B02, B03, B04 computed
    with the float64 reference; mosaicing's rows are its 13-band metrics."""
    import pandas as pd

    from crbench.api import collate
    from crbench.data.dataset import SEN12MSCRTS
    from crbench_methods.mosaicing import Mosaicing

    rows = pd.concat([pd.read_csv(f) for f in sorted((run / "rows").glob("*.csv"))])
    ds = SEN12MSCRTS(root, split="test", L=3, sampler="fixed", only_matching=True)
    assert len(ds) and len(rows) == 2 * len(ds)
    for k in range(len(ds)):
        batch = collate([ds[k]])
        meta = batch.meta[0]
        masks = batch.inputs.masks[0].numpy() > 0.5
        for name, pred, bands in (("stgan", model.predict(batch.inputs), TB_BANDS),
                                  ("mosaicing", Mosaicing().predict(batch.inputs),
                                   list(range(13)))):
            p, t = (v[0, bands].double().numpy() for v in (pred, batch.target))
            want = ref_metrics(p, t, masks, "paper")
            row = rows[(rows["method"] == name) & (rows["roi"] == meta.roi)
                       & (rows["patch"] == meta.patch)].iloc[0]
            for metric, v in want.items():
                assert row[metric] == pytest.approx(v, rel=1e-4, abs=1e-5, nan_ok=True), metric


@pytest.mark.parametrize("generator", list(REF_G))
def test_training_mode_batch_norm_per_date_and_pair_as_the_reference(generator: str) -> None:
    """In training, batch norm takes its statistics per date and per pair (the toolbox calls
    the encoder and the trunk once for each): outputs and running statistics match."""
    torch.manual_seed(2)
    ref = REF_G[generator](4, 4, 4, "batch", False, n_blocks=1).train()
    model = STGAN(3, "toolbox", generator=generator, dropout=0.0, ngf=4, n_blocks=1, ndf=4)
    net = model.generator.net.train()
    net.load_state_dict(_ours_from_ref(ref), strict=True)
    x = [torch.rand(2, 4, 16, 16) * 2 - 1 for _ in range(3)]
    got, want = net(torch.stack(x, 1)), ref(x)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    ours = _ours_from_ref(ref)
    for k, v in net.state_dict().items():
        assert torch.allclose(v.float(), ours[k].float(), atol=1e-6), k


def test_report_marks_band_subset_methods(tmp_path: Path) -> None:
    import pandas as pd

    from crbench.report import Format, build_report

    recs = [{"method": m, "L": 3, "split": "test", "roi": "ROIs1868/1", "patch": p,
             "input_idx": "0;1;2", "target_idx": 9, "coverage": 0.5, "nrmse_all": e,
             "nrmse_cloudy": e, "nrmse_clear": e, "psnr": 20.0, "ssim": 0.9, "sam": 0.1,
             "seconds": 0.1} for p in range(3) for m, e in (("stgan", 0.05), ("mosaicing", 0.1))]
    run = tmp_path / "run"
    (run / "rows").mkdir(parents=True)
    pd.DataFrame(recs).to_csv(run / "rows" / "all__shard1of1.csv", index=False)
    runs = {"stgan__L3": {"method": "stgan", "L": 3, "scored_bands": ["B08", "B02", "B03",
                                                                     "B04"]},
            "mosaicing__L3": {"method": "mosaicing", "L": 3,
                              "scored_bands": list(S2_BANDS)}}
    (run / "manifest.json").write_text(json.dumps({"mask_convention": "paper", "runs": runs}))
    md = build_report(run, fmt="md").tables[0].render(Format.MD)
    assert "| stgan† |" in md and "| mosaicing |" in md
    assert "† stgan: scored on B08, B02, B03, B04 only" in md
    tex = build_report(run, fmt="tex", out=tmp_path / "tex")
    text = (tmp_path / "tex" / "table1.tex").read_text()
    assert r"stgan$^\dagger$" in text and "†" not in text and len(tex.tables) == 2
    build_report(run, fmt="csv", out=tmp_path / "csv")
    csv = pd.read_csv(tmp_path / "csv" / "table1.csv")
    assert sorted(csv["method"]) == ["mosaicing", "stgan"]
    other = tmp_path / "other"
    (other / "rows").mkdir(parents=True)
    (other / "manifest.json").write_text(json.dumps(
        {"mask_convention": "paper",
         "runs": {"stgan__L3": {"method": "stgan", "L": 3,
                                "scored_bands": list(S2_BANDS)}}}))
    with pytest.raises(UsageError, match="method stgan was scored on different bands"):
        build_report([run, other])
