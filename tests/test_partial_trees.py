"""Partial SEN12MS-CR-TS trees (issue 13): patches with the dates they have, no S1, real data.

Synthetic partial trees are copies of the generator's test ROI with dates deleted; the real
eo-learn tree (five real S2 L1C dates, 101 x 100 px, no S1) is read in place under
``/work/shared/realdata`` and the tests on it skip when it is absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REALDATA

from crbench.data.dataset import SEN12MSCRTS
from crbench.data.index import build_index, scan_tree
from crbench.data.masks import MaskCache
from crbench.data.verify import verify_tree
from crbench.errors import UsageError

ROI = "ROIs1868/119"  # the synthetic tree's test-split ROI
KEPT = [2, 5, 6, 11, 17, 23]  # S2 dates left in the partial copy
REAL = REALDATA / "eolearn-slovenia-2015" / "tree"


def _partial(synth_root: Path, root: Path, s1: bool) -> Path:
    """Copy of the test ROI with only the S2 dates ``KEPT``; S1 kept or removed entirely."""
    shutil.copytree(synth_root / ROI, root / ROI)
    for t in range(30):
        if t not in KEPT:
            shutil.rmtree(root / ROI / "S2" / str(t))
    if not s1:
        shutil.rmtree(root / ROI / "S1")
    return root


def _cli(*args: str, env_cache: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "CRBENCH_CACHE_DIR": str(env_cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "crbench.cli.main", *args], text=True,
                          capture_output=True, env=env, timeout=300)


def test_index_uses_the_dates_present_with_their_t(synth_root: Path, tmp_path: Path) -> None:
    root = _partial(synth_root, tmp_path / "root", s1=True)
    recs = scan_tree(root, "test")
    assert [rec.ts for rec in recs] == [KEPT, KEPT]
    cache = MaskCache(root, tmp_path / "cache")
    frame = build_index(root, "test", 3, cache=cache, protocol="strict")
    assert len(frame) == 2
    for row in frame.to_dict("records"):
        inputs = [int(t) for t in row["input_idx"].split(";")]
        assert set(inputs) <= set(KEPT) and row["target_idx"] in KEPT
        assert row["target_idx"] not in inputs
        rec = next(r for r in recs if r.patch == row["patch"])
        cov = cache.coverages(rec.s2)
        assert row["coverage_target"] == pytest.approx(min(cov))
        assert KEPT[int(np.argmin(cov))] == row["target_idx"]


def test_min_dates_leaves_out_short_patches(synth_root: Path, tmp_path: Path) -> None:
    root = _partial(synth_root, tmp_path / "root", s1=True)
    cache = MaskCache(root, tmp_path / "cache")
    assert len(build_index(root, "test", 3, cache=cache, min_dates=6)) == 2
    assert len(build_index(root, "test", 3, cache=cache, min_dates=7)) == 0
    assert len(build_index(root, "test", 5, cache=cache)) == 2  # 6 dates = L + 1
    assert len(build_index(root, "test", 6, cache=cache)) == 0
    with pytest.raises(UsageError, match=r"^--min-dates: bad value 31; expected an integer"):
        build_index(root, "test", 3, cache=cache, min_dates=31)


def test_dataset_reads_partial_patch_without_s1(synth_root: Path, tmp_path: Path) -> None:
    root = _partial(synth_root, tmp_path / "root", s1=False)
    ds = SEN12MSCRTS(root, "test", L=3, protocol="strict", only_matching=False,
                     cache=MaskCache(root, tmp_path / "cache"))
    sample = ds[0]
    rec = ds.records[0]
    assert not rec.has_s1 and sample.meta.input_idx[0] in KEPT
    assert sample.inputs.s2.shape == (3, 13, 64, 64) and sample.inputs.s1.shape == (3, 2, 64, 64)
    assert float(sample.inputs.s1.abs().sum()) == 0.0  # no S1: zeros, never read
    assert sample.inputs.days.tolist() == [rec.days[rec.pos(t)] for t in sample.meta.input_idx]


def test_verify_partial_tree_counts_usable_patches(synth_root: Path, tmp_path: Path) -> None:
    root = _partial(synth_root, tmp_path / "root", s1=False)
    report = verify_tree(root, workers=1)
    assert report.errors == [] and report.usable and report.n_complete == 0
    assert (report.usable_at(3), report.usable_at(5), report.usable_at(6)) == (2, 2, 0)
    assert report.usable_at(3, s1=True) == 0
    text = report.summary()
    assert f"{ROI}: dates present: S1 0 of 30, S2 6 of 30" in text
    assert "L=3: 2 (0 with S1), L=4: 2 (0 with S1), L=5: 2 (0 with S1)" in text
    assert "S1-free methods only" in text


def test_run_on_s1_free_partial_tree(synth_root: Path, tmp_path: Path) -> None:
    """least_cloudy writes rows on the dates present; an S1 method is refused in one line."""
    root = _partial(synth_root, tmp_path / "root", s1=False)
    out = tmp_path / "R"
    done = _cli("run", "--data", str(root), "--methods", "least_cloudy", "--L", "3",
                "--protocol", "strict", "--out", str(out), "--no-progress",
                env_cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(out / "rows" / "least_cloudy__L3__shard1of1.csv", dtype={"input_idx": str})
    assert len(rows) >= 1
    assert all(int(t) in KEPT for v in rows["input_idx"] for t in v.split(";"))
    run = json.loads((out / "manifest.json").read_text())["runs"]["least_cloudy__L3__shard1of1"]
    assert len(run["index_sha256"]) == 64
    assert run["patch_dates"][f"{ROI} patch 0"].startswith(";".join(map(str, KEPT)))
    refused = _cli("run", "--data", str(root), "--methods", "least_cloudy,seq2point", "--L", "3",
                   "--out", str(tmp_path / "R2"), "--no-progress", env_cache=tmp_path / "cache")
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0
    assert "--methods: seq2point need S1" in refused.stderr


def test_complete_tree_manifest_has_no_partial_dates(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "R"
    done = _cli("run", "--data", str(synth_root), "--methods", "least_cloudy", "--L", "3",
                "--out", str(out), "--no-progress", "--limit", "1",
                env_cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    run = json.loads((out / "manifest.json").read_text())["runs"]["least_cloudy__L3__shard1of1"]
    assert run["patch_dates"] is None


real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real data tree {REAL} is absent")


@real
def test_real_eolearn_tree_verifies_usable_at_L3() -> None:
    report = verify_tree(REAL, workers=1)
    assert report.errors == [] and report.usable
    assert (report.usable_at(3), report.usable_at(4), report.usable_at(5)) == (1, 1, 0)
    assert report.usable_at(3, s1=True) == 0
    assert "S1-free methods only" in report.summary()


@real
def test_real_eolearn_tree_runs_least_cloudy_and_mosaicing(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The tree is read in place (mask cache outside it); 101 x 100 px patches. Each row's
    coverage is the mean of the mask cache's coverages of its input dates, and the
    predictions are written where asked, at the patch's size."""
    import rasterio

    out = tmp_path / "R"
    done = _cli("run", "--data", str(REAL), "--methods", "least_cloudy,mosaicing", "--L", "3",
                "--protocol", "strict", "--out", str(out), "--no-progress",
                "--save-predictions", env_cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("CRBENCH_CACHE_DIR", str(tmp_path / "cache"))
    cache = MaskCache(REAL)
    for method in ("least_cloudy", "mosaicing"):
        rows = pd.read_csv(out / "rows" / f"{method}__L3__shard1of1.csv",
                           dtype={"input_idx": str})
        assert len(rows) == 1 and np.isfinite(rows["psnr"]).all()
        inputs = rows["input_idx"][0].split(";")
        assert str(rows["target_idx"][0]) not in inputs
        covs = [cache.coverage(next(REAL.glob(f"ROIs*/*/S2/{t}/*.tif"))) for t in inputs]
        assert rows["coverage"][0] == pytest.approx(np.mean(covs), abs=1e-12)
        assert cache.misses == 0  # served from the cache the run filled
        pred = out / "predictions" / method / "L3" / "ROIs1868_119_patch0.tif"
        with rasterio.open(pred) as src:
            assert (src.count, src.height, src.width) == (13, 101, 100)


def test_s1_methods_skip_samples_whose_inputs_lack_s1(synth_root: Path, tmp_path: Path) -> None:
    """A patch missing S1 at one of its input dates is skipped (and named) for S1 methods only;
    a tree where some patches keep S1 is not refused."""
    from crbench.runner.config import RunConfig
    from crbench.runner.execute import _drop_without_s1, check_s1, partial_dates

    root = tmp_path / "root"
    shutil.copytree(synth_root / ROI, root / ROI)
    index = build_index(root, "test", 3, cache=MaskCache(root, tmp_path / "cache"))
    row = index[index["patch"] == 1].iloc[0]
    t = int(row["input_idx"].split(";")[1])
    next((root / ROI / "S1" / str(t)).glob("*_patch_1.tif")).unlink()
    cfg = RunConfig(data=root, methods=["least_cloudy"], seq_lens=[3], out=tmp_path / "R")
    dates, no_s1 = partial_dates(cfg)
    assert no_s1 == {(ROI, 1, t)}
    assert dates == {f"{ROI} patch 1": ";".join(map(str, range(30))) + f" (no S1 at t = {t})"}
    kept, lacking = _drop_without_s1(index, "seq2point", no_s1)
    assert kept["patch"].tolist() == [0] and lacking == [f"{ROI} patch 1"]
    same, none = _drop_without_s1(index, "least_cloudy", no_s1)
    assert len(same) == len(index) and none == []
    check_s1(scan_tree(root, "test"), ("seq2point",))  # patch 0 has S1: not refused


LEARNED = ("seq2point", "stgan", "seqdm", "seqdm_no_tts", "uncrtaints")
S1_METHODS = "methods that need S1: seq2point, seqdm, seqdm_no_tts, stgan, uncrtaints"


def _train_rois_without_s1(synth_root: Path, root: Path, keep_s1: str | None = None) -> Path:
    """Copy of the tree's train ROIs (and its val ROI) with every S1 folder removed except
    that of ``keep_s1``."""
    from crbench.data.index import check_split_region

    for roi in check_split_region("train", "all") + check_split_region("val", "all"):
        if (synth_root / roi).is_dir():
            shutil.copytree(synth_root / roi, root / roi)
            if roi != keep_s1:
                shutil.rmtree(root / roi / "S1")
    return root


@pytest.mark.parametrize("method", LEARNED)
def test_train_refuses_s1_methods_on_a_tree_without_s1(synth_root: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture,
                                                       method: str) -> None:
    """One line naming --data, the tree and the methods that need S1; nothing written
    (before: seq2point and stgan trained on S1 images of zeros, SeqDMs failed on a batch)."""
    from crbench.cli.main import main

    root = _train_rois_without_s1(synth_root, tmp_path / "root")
    out = tmp_path / "ckpt"
    assert main(["train", method, "--data", str(root), "--L", "3", "--preset", "tiny",
                 "--steps", "1", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"crbench train: error: --data: {root} has no S1 for the train split")
    assert f"{method} needs S1" in err and S1_METHODS in err
    assert not out.exists() and not (root / ".crbench").exists()


def test_fit_refuses_without_s1_and_passes_with_some(synth_root: Path, tmp_path: Path) -> None:
    """The library refuses too (``data_root``); a train split where one ROI has S1 passes."""
    from crbench.registry import get_method_class
    from crbench.training import check_train_s1

    root = _train_rois_without_s1(synth_root, tmp_path / "root")
    stgan = get_method_class("stgan")(preset="tiny")
    with pytest.raises(UsageError, match=r"^data_root: .* stgan needs S1; train it on a tree"):
        stgan.fit(root, tmp_path / "ckpt", steps=1, progress=False)
    assert not (tmp_path / "ckpt").exists()
    some = _train_rois_without_s1(synth_root, tmp_path / "some", keep_s1="ROIs1868/36")
    check_train_s1("stgan", stgan.needs, some)  # one ROI with S1: not refused
    check_train_s1("least_cloudy", get_method_class("least_cloudy").needs, root)


def test_runner_refuses_s1_methods_on_a_tree_without_s1(synth_root: Path,
                                                        tmp_path: Path) -> None:
    """`crbench.runner.run` (the library API) refuses, naming ``methods``, before writing."""
    from crbench.runner import RunConfig, run

    root = _partial(synth_root, tmp_path / "root", s1=False)
    cfg = RunConfig(data=root, methods=["least_cloudy", "stgan"], seq_lens=[3],
                    out=tmp_path / "R")
    with pytest.raises(UsageError, match=r"^methods: stgan need S1, but all 2 patches"):
        run(cfg)
    assert not (tmp_path / "R").exists()
