"""`crbench run --steps N --samples K`: mean metric over K draws in the rows, their spread in
a sidecar, deterministic methods run once, validation, and unchanged identity by default."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from crbench.api import Batch, collate
from crbench.cli.main import main
from crbench.data.dataset import SEN12MSCRTS
from crbench.data.index import build_index
from crbench.data.masks import MaskCache
from crbench.errors import UsageError
from crbench.metrics import METRIC_NAMES, MaskConvention, compute_metrics
from crbench.metrics.uncertainty import UNCERTAINTY_NAMES, uncertainty_metrics
from crbench.report import build_report
from crbench.runner import (
    ROW_COLUMNS,
    RunConfig,
    default_out,
    read_manifest,
    read_rows,
    read_spread,
    run,
    select_samples,
)
from crbench.runner.store import SPREAD_COLUMNS, parse_bins, read_uncertainty
from crbench_methods.seqdm import SeqDM

L, K, STEPS, LIMIT = 2, 3, 2, 2
VALUES = [c for c in ROW_COLUMNS if c != "seconds"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny SeqDM whose zero-initialised output layers are perturbed (so the
    draws depend on the network), saved as DIR/seqdm/."""
    root = tmp_path_factory.mktemp("ckpt")
    m = SeqDM(preset="tiny")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.net.parameters():
            if p.ndim > 1 and p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    m.save(root / "seqdm")
    return root


def _argv(root: Path, ckpt: Path, out: Path, methods: str, *extra: str) -> list[str]:
    return ["run", "--data", str(root), "--methods", methods, "--L", str(L), "--limit",
            str(LIMIT), "--checkpoints", str(ckpt), "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def sampled(synth_root: Path, checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, str]:
    """seqdm and least_cloudy run with --steps 2 --samples 3; (run dir, CLI stdout)."""
    out = tmp_path_factory.mktemp("sampled") / "run"
    mp = pytest.MonkeyPatch()
    lines: list[str] = []
    mp.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    try:
        code = main(_argv(synth_root, checkpoints, out, "seqdm,least_cloudy", "--steps",
                          str(STEPS), "--samples", str(K)))
    finally:
        mp.undo()
    assert code == 0
    return out, "\n".join(lines)


def _batch(root: Path) -> Batch:
    """The batch the runner evaluated: the first LIMIT matching test samples, in order."""
    cache = MaskCache(root)
    index = build_index(root, "test", L, cache=cache, progress=False)
    selected, _, _ = select_samples(index, (1, 1), LIMIT)
    ds = SEN12MSCRTS(root, split="test", L=L, sampler="fixed", index=selected,
                     only_matching=True, cache=cache, seed=0)
    return collate([ds[i] for i in range(len(ds))])


def test_rows_hold_the_mean_over_draws_and_the_sidecar_their_spread(
        sampled: tuple[Path, str], synth_root: Path, checkpoints: Path) -> None:
    out, _ = sampled
    batch = _batch(synth_root)
    assert len(batch.meta) == LIMIT
    draws = SeqDM.load(checkpoints / "seqdm").sample(batch.inputs, steps=STEPS, samples=K,
                                                      seed=0)
    assert draws.shape == (K, LIMIT, 13, 64, 64)
    per_draw = {m: np.stack([compute_metrics(d, batch.target, batch.inputs.masks,
                                             MaskConvention.PAPER)[m].double().numpy()
                             for d in draws]) for m in METRIC_NAMES}  # (K, B) each
    rows = read_rows(out)
    seq = rows[rows.method == "seqdm"].set_index(["roi", "patch"])
    spread = read_spread(out).set_index(["roi", "patch"])
    assert len(seq) == LIMIT and len(spread) == LIMIT
    for i, meta in enumerate(batch.meta):
        row, sp = seq.loc[(meta.roi, meta.patch)], spread.loc[(meta.roi, meta.patch)]
        assert sp["method"] == "seqdm" and sp["L"] == L and sp["samples"] == K
        for m in METRIC_NAMES:
            np.testing.assert_allclose(row[m], per_draw[m][:, i].mean(), rtol=1e-9, atol=0)
            np.testing.assert_allclose(sp[f"{m}_std"], per_draw[m][:, i].std(), rtol=1e-7,
                                       atol=1e-15)
            assert sp[f"{m}_std"] >= 0
    assert (spread["nrmse_all_std"] > 0).all()  # the draws really differ


def test_uncertainty_sidecar_scores_the_mean_image_against_the_draws_variance(
        sampled: tuple[Path, str], synth_root: Path, checkpoints: Path) -> None:
    out, _ = sampled
    batch = _batch(synth_root)
    draws = SeqDM.load(checkpoints / "seqdm").sample(batch.inputs, steps=STEPS, samples=K,
                                                      seed=0)
    want, bins = uncertainty_metrics(draws.mean(0), batch.target, draws.var(0, unbiased=False))
    got = read_uncertainty(out).set_index(["roi", "patch"])
    assert len(got) == LIMIT and set(got["source"]) == {"draws"}
    for i, meta in enumerate(batch.meta):
        row = got.loc[(meta.roi, meta.patch)]
        for name in UNCERTAINTY_NAMES:
            np.testing.assert_allclose(row[name], want[name][i], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(parse_bins(row["bins"]), bins[i].numpy(), rtol=1e-6)
    assert (got["mean_std"] > 0).all()
    manifest = read_manifest(out)
    runs = manifest["runs"]
    assert runs[f"seqdm__L{L}__shard1of1"]["uncertainty"] == \
        f"rows/seqdm__L{L}__shard1of1.uncertainty.csv"
    assert runs[f"least_cloudy__L{L}__shard1of1"]["uncertainty"] is None


def test_spread_file_manifest_and_resume(sampled: tuple[Path, str], synth_root: Path,
                                         checkpoints: Path) -> None:
    out, stdout = sampled
    names = sorted(p.name for p in (out / "rows").iterdir())
    assert names == [f"least_cloudy__L{L}__shard1of1.csv", f"seqdm__L{L}__shard1of1.csv",
                     f"seqdm__L{L}__shard1of1.spread.csv",
                     f"seqdm__L{L}__shard1of1.uncertainty.csv"]
    with open(out / "rows" / names[2], newline="") as fh:
        lines = list(csv.reader(fh))
    assert tuple(lines[0]) == SPREAD_COLUMNS and len(lines) == 1 + LIMIT
    assert len(read_rows(out)) == 2 * LIMIT  # the sidecar is not read as rows
    manifest = read_manifest(out)
    assert manifest["config"]["sample_steps"] == STEPS and manifest["config"]["samples"] == K
    runs = manifest["runs"]
    assert runs[f"seqdm__L{L}__shard1of1"]["samples"] == K
    assert runs[f"seqdm__L{L}__shard1of1"]["spread"] == f"rows/{names[2]}"
    assert runs[f"least_cloudy__L{L}__shard1of1"]["samples"] == 1
    assert runs[f"least_cloudy__L{L}__shard1of1"]["spread"] is None
    assert "least_cloudy" in stdout and "deterministic: ran once" in stdout
    assert f"mean of {K} draws" in stdout
    before = {n: (out / "rows" / n).read_text() for n in names}
    summary = run(RunConfig(data=synth_root, methods="seqdm,least_cloudy", seq_lens=[L],
                            limit=LIMIT, checkpoints=checkpoints, out=out, progress=False,
                            sample_steps=STEPS, samples=K))
    assert [mr.n_new for mr in summary.runs] == [0, 0]
    assert {n: (out / "rows" / n).read_text() for n in names} == before
    with pytest.raises(UsageError, match=r"samples=3 \(now None\)"):  # not resumed without it
        run(RunConfig(data=synth_root, methods="seqdm", seq_lens=[L], limit=LIMIT,
                      checkpoints=checkpoints, out=out, progress=False, sample_steps=STEPS))


def test_deterministic_method_runs_once(sampled: tuple[Path, str], synth_root: Path,
                                        tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    run(RunConfig(data=synth_root, methods="least_cloudy", seq_lens=[L], limit=LIMIT,
                  out=plain, progress=False))
    got = read_rows(sampled[0])
    got = got[got.method == "least_cloudy"][VALUES].sort_values(["roi", "patch"])
    want = read_rows(plain)[VALUES].sort_values(["roi", "patch"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    assert not list((plain / "rows").glob("*.spread.csv"))
    assert "spread" not in {t.name for t in build_report(plain).tables}


def test_report_shows_the_mean_spread(sampled: tuple[Path, str]) -> None:
    out, _ = sampled
    tables = {t.name: t for t in build_report(out).tables}
    stats = tables["spread"].stats
    assert list(stats["method"]) == ["seqdm"] and list(stats["n"]) == [LIMIT]
    assert list(stats["samples"]) == [K]
    with open(out / "rows" / f"seqdm__L{L}__shard1of1.spread.csv", newline="") as fh:
        lines = list(csv.DictReader(fh))
    for m in METRIC_NAMES:
        want = np.mean([float(r[f"{m}_std"]) for r in lines])
        assert stats[m].iloc[0] == pytest.approx(want, rel=1e-12)
    assert "Spread over K draws" in (out / "report" / "spread.md").read_text()


def test_bad_values_are_named(synth_root: Path, checkpoints: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    for key, flag in (("samples", "--samples"), ("sample_steps", "--steps")):
        for bad in (0, -1, 1.5, True):
            with pytest.raises(UsageError, match=rf"{flag}: bad value {bad!r}; expected an "
                                                 "integer >= 1"):
                RunConfig(data=synth_root, methods="seqdm", seq_lens=[L], **{key: bad})
    assert main(_argv(synth_root, checkpoints, tmp_path / "a", "seqdm", "--samples", "0")) == 2
    assert "--samples: bad value 0" in capsys.readouterr().err
    assert main(_argv(synth_root, checkpoints, tmp_path / "b", "seqdm", "--steps", "2000")) == 2
    err = capsys.readouterr().err
    assert "'seqdm' with --steps 2000" in err and "diffusion_steps=1000" in err


def test_identity_changes_only_when_options_are_given(synth_root: Path) -> None:
    base = RunConfig(data=synth_root, methods="least_cloudy", seq_lens=[L])
    assert set(base.identity()) == {"data", "split", "region", "mask_convention", "protocol",
                                    "seed", "checkpoints"}
    same = RunConfig(data=synth_root, methods="least_cloudy", seq_lens=[L], samples=1)
    assert same.identity() == base.identity() and default_out(same) == default_out(base)
    for opts in ({"samples": K}, {"sample_steps": STEPS}):
        other = RunConfig(data=synth_root, methods="least_cloudy", seq_lens=[L], **opts)
        assert other.identity() == {**base.identity(), **opts}
        assert default_out(other) != default_out(base)


def test_report_has_a_calibration_table_and_a_reliability_diagram(
        sampled: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = sampled
    report = build_report(out, out=tmp_path / "rep", figures=True, progress=False)
    calib = (tmp_path / "rep" / "calibration.md").read_text()
    assert "Calibration of the predicted uncertainty" in calib
    line = next(x for x in calib.splitlines() if x.startswith(f"| {L} | seqdm | draws |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    unc = read_uncertainty(out)
    assert cells[3] == str(len(unc))
    assert float(cells[4]) == pytest.approx(unc["nrmse_mean"].mean(), abs=1e-4)
    assert "least_cloudy" not in calib  # deterministic: no uncertainty, no row
    pngs = {p.name for p in report.figures}
    assert "figure_reliability.png" in pngs
    assert (tmp_path / "rep" / "figures" / "figure_reliability.png").stat().st_size > 10_000
