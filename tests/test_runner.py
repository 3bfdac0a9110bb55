"""`crbench run` on the synthetic tree: rows, manifest, predictions, resume, shards, plugins."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from plugin_fixture.fixture_dist import activate_site, install_dist

from crbench.cli.main import main
from crbench.data.index import build_index, scan_tree
from crbench.data.io import read_s2, scale_s2
from crbench.data.masks import MaskCache
from crbench.errors import CheckpointError, PluginError, UsageError
from crbench.metrics import compute_metrics
from crbench.metrics.ssim import filter_backend
from crbench.runner import ROW_COLUMNS, RunConfig, parse_shard, read_manifest, read_rows, run

METHODS = "least_cloudy,mosaicing"
DUMMY = {"dummy_mean": "crbench_dummy_plugin:DummyMean",
         "dummy_trained": "crbench_dummy_plugin:DummyTrained"}
BROKEN = {"broken_one": "crbench_broken_plugin:Anything"}
KEY = ["method", "L", "roi", "patch"]


def _cfg(root: Path, out: Path, **kw: object) -> RunConfig:
    base = {"methods": METHODS, "seq_lens": [2, 3], "batch_size": 4, "progress": False}
    return RunConfig(data=root, out=out, **{**base, **kw})


def _values(frame: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ROW_COLUMNS if c != "seconds"]
    return frame[cols].sort_values(KEY).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: least_cloudy + mosaicing at L = 2, 3 on the test split."""
    out = tmp_path_factory.mktemp("ref") / "run"
    run(_cfg(synth_root, out))
    return out


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fixture plugins installed as distributions in a directory on sys.path."""
    d = tmp_path / "site"
    install_dist(d, "crbench-dummy-plugin", "crbench_dummy_plugin", DUMMY)
    install_dist(d, "crbench-broken-plugin", "crbench_broken_plugin", BROKEN)
    yield from activate_site(d, monkeypatch)


def test_cli_run_rows_manifest_and_predictions(synth_root: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["run", "--data", str(synth_root), "--methods", METHODS, "--L", "2", "3",
                 "--limit", "1", "--out", str(out), "--batch-size", "4", "--no-progress",
                 "--save-predictions"]) == 0
    captured = capsys.readouterr()
    assert str(out / "rows") in captured.err and "least_cloudy" in captured.out
    files = sorted(p.name for p in (out / "rows").iterdir())
    assert files == [f"{m}__L{L}__shard1of1.csv" for m in ("least_cloudy", "mosaicing")
                     for L in (2, 3)]
    for f in files:
        lines = (out / "rows" / f).read_text().splitlines()
        assert lines[0] == ",".join(ROW_COLUMNS) and len(lines) == 2  # --limit 1
    rows = read_rows(out)
    index = build_index(synth_root, "test", 2).sort_values(["roi", "patch"])
    first = index[index["match"]].iloc[0]
    row = rows[(rows.method == "least_cloudy") & (rows.L == 2)].iloc[0]
    assert (row.split, row.roi, row.patch) == ("test", first.roi, first.patch)
    assert (row.input_idx, row.target_idx) == (first.input_idx, first.target_idx)
    covs = [float(c) for c in first.coverage_inputs.split(";")]
    assert row.coverage == pytest.approx(sum(covs) / len(covs))
    _check_against_direct_computation(synth_root, out, row)
    manifest = read_manifest(out)
    assert manifest["config"]["split"] == "test"
    assert manifest["config"]["mask_convention"] == "paper"
    assert {"python", "torch", "numpy", "rasterio"} <= set(manifest["versions"])
    assert manifest["sessions"][0]["metrics_backend"] == filter_backend(torch.device("cpu")).value
    assert {r["status"] for r in manifest["runs"].values()} == {"done"}
    assert all(r["n_evaluated"] == 1 for r in manifest["runs"].values())


def _check_against_direct_computation(root: Path, out: Path, row: pd.Series) -> None:
    """The least_cloudy row and GeoTIFF equal what the files themselves give."""
    rec = next(r for r in scan_tree(root, "test") if (r.roi, r.patch) == (row.roi, row.patch))
    idx = [int(t) for t in row.input_idx.split(";")]
    cache = MaskCache(root)
    masks = np.stack(cache.masks([rec.s2[t] for t in idx])).astype(np.float32)
    best = idx[int(np.argmin(masks.mean(axis=(1, 2))))]
    raw_best = read_s2(rec.s2[best]).array
    target = torch.from_numpy(scale_s2(read_s2(rec.s2[row.target_idx]).array))[None]
    pred = torch.from_numpy(scale_s2(raw_best))[None]
    expected = compute_metrics(pred, target, torch.from_numpy(masks)[None])
    for name, value in expected.items():
        assert row[name] == pytest.approx(float(value[0]), rel=1e-6, abs=1e-9, nan_ok=True)
    tif = out / "predictions" / "least_cloudy" / "L2" / f"{row.roi.replace('/', '_')}_patch" \
                                                       f"{row.patch}.tif"
    with rasterio.open(tif) as got, rasterio.open(rec.s2[row.target_idx]) as tgt:
        assert got.count == 13 and got.dtypes[0] == "uint16"
        assert got.transform == tgt.transform and got.crs == tgt.crs
        assert got.descriptions[0] == "B01" and got.descriptions[12] == "B12"
        np.testing.assert_array_equal(got.read(), np.clip(raw_best, 0, 10000).astype(np.uint16))


def test_rerun_computes_nothing_and_partial_line_is_repaired(reference: Path, synth_root: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    victim = out / "rows" / "mosaicing__L3__shard1of1.csv"
    lines = victim.read_text().splitlines(keepends=True)
    victim.write_text("".join(lines[:-1]) + lines[-1][:25])  # last row cut mid-line by a kill
    summary = run(_cfg(synth_root, out))
    new = {(m.method, m.L): m.n_new for m in summary.runs}
    assert new == {("least_cloudy", 2): 0, ("mosaicing", 2): 0, ("least_cloudy", 3): 0,
                   ("mosaicing", 3): 1}
    assert victim.read_text().endswith("\n")
    assert len(victim.read_text().splitlines()) == len(lines)
    pd.testing.assert_frame_equal(_values(read_rows(out)), _values(read_rows(reference)),
                                  rtol=1e-6)
    assert len(read_manifest(out)["sessions"]) == 2
    again = run(_cfg(synth_root, out, save_predictions=True))  # rows kept, only GeoTIFFs added
    assert sum(m.n_new for m in again.runs) == 0
    assert len(list((out / "predictions").rglob("*.tif"))) == len(read_rows(reference))
    pd.testing.assert_frame_equal(_values(read_rows(out)), _values(read_rows(reference)),
                                  rtol=1e-6)


def test_resume_after_sigkill_loses_and_repeats_nothing(synth_root: Path, tmp_path: Path,
                                                        site: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out, log = tmp_path / "killed", tmp_path / "predict.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path]),
           "CRBENCH_DUMMY_DELAY": "0.4", "CRBENCH_DUMMY_LOG": str(log), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "crbench.cli.main", "run", "--data", str(synth_root),
           "--methods", "dummy_mean", "--L", "2", "3", "--batch-size", "1", "--out", str(out),
           "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows_l2 = out / "rows" / "dummy_mean__L2__shard1of1.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if rows_l2.exists() and len(rows_l2.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    written = len(read_rows(out))
    assert written >= 1
    full = run(_cfg(synth_root, tmp_path / "full", methods="dummy_mean"))
    total = sum(m.n_selected for m in full.runs)
    assert written < total  # the kill really happened midway
    monkeypatch.setenv("CRBENCH_DUMMY_LOG", str(log))
    before = len(log.read_text().splitlines())
    resumed = run(_cfg(synth_root, out, methods="dummy_mean"))
    predicted = sum(int(n) for n in log.read_text().splitlines()[before:])
    assert predicted == total - written  # nothing already written was predicted again
    assert sum(m.n_new for m in resumed.runs) == total - written
    rows = read_rows(out)
    assert not rows.duplicated(subset=KEY).any()
    pd.testing.assert_frame_equal(_values(rows), _values(read_rows(tmp_path / "full")), rtol=1e-6)
    assert {r["status"] for r in read_manifest(out)["runs"].values()} == {"done"}


def test_shards_are_disjoint_and_cover_the_full_run(reference: Path, synth_root: Path,
                                                    tmp_path: Path) -> None:
    for k in (1, 2):
        run(_cfg(synth_root, tmp_path / f"s{k}", shard=f"{k}/2"))
    one, two = read_rows(tmp_path / "s1"), read_rows(tmp_path / "s2")
    assert len(one) and len(two)
    assert not set(map(tuple, one[KEY].values)) & set(map(tuple, two[KEY].values))
    merged = read_rows([tmp_path / "s1", tmp_path / "s2"])
    pd.testing.assert_frame_equal(_values(merged), _values(read_rows(reference)), rtol=1e-6)
    skipped = [read_manifest(tmp_path / f"s{k}")["skipped"]["mosaicing"]["2"] for k in (1, 2)]
    ref_skipped = read_manifest(reference)["skipped"]["mosaicing"]["2"]
    assert sum(skipped) == ref_skipped


def test_shard_and_settings_are_validated(synth_root: Path, reference: Path,
                                          tmp_path: Path) -> None:
    assert parse_shard(" 2/3 ") == (2, 3)
    for bad in ("3/2", "0/1", "a/b", "1", "1/2/3"):
        with pytest.raises(UsageError, match=r"--shard: bad value .*expected k/n"):
            parse_shard(bad)
    with pytest.raises(UsageError, match=r"mask_convention='paper' \(now 'toolbox'\)"):
        run(_cfg(synth_root, reference, mask_convention="toolbox"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a crbench run directory"):
        run(_cfg(synth_root, foreign))
    with pytest.raises(UsageError, match=r"--limit: bad value 0"):
        _cfg(synth_root, tmp_path / "x", limit=0)
    with pytest.raises(UsageError, match="did you mean 'mosaicing'"):
        run(_cfg(synth_root, tmp_path / "y", methods="least_cloudy,mosaicng"))
    assert not (tmp_path / "y").exists()  # refused before writing anything
    assert main(["run", "--data", str(synth_root), "--methods", "mosaicing", "--L", "2",
                 "--shard", "5/4", "--out", str(tmp_path / "z")]) == 2


def test_plugin_methods_through_the_runner(synth_root: Path, tmp_path: Path, site: Path) -> None:
    with pytest.raises(PluginError, match=r"broken_one.*crbench-broken-plugin"):
        run(_cfg(synth_root, tmp_path / "a", methods="least_cloudy,broken_one"))
    with pytest.raises(CheckpointError, match="crbench train dummy_trained"):
        run(_cfg(synth_root, tmp_path / "b", methods="dummy_trained"))
    from crbench.registry import get_method_class

    ckpts = tmp_path / "ckpts"
    get_method_class("dummy_trained")(seq_len=2, offset=0.0).save(ckpts / "dummy_trained" / "L2")
    get_method_class("dummy_trained")(seq_len=2, offset=0.0).save(ckpts / "dummy_trained")
    with pytest.raises(CheckpointError, match=r"L=3: .*trained with seq_len=2"):
        run(_cfg(synth_root, tmp_path / "d", methods="dummy_trained", checkpoints=ckpts))
    assert not (tmp_path / "d").exists()
    summary = run(_cfg(synth_root, tmp_path / "c", methods="dummy_mean,dummy_trained",
                       seq_lens=[2], checkpoints=ckpts))
    assert [m.checkpoint for m in summary.runs] == [None, str(ckpts / "dummy_trained" / "L2")]
    rows = read_rows(tmp_path / "c")
    a = _values(rows[rows.method == "dummy_mean"]).drop(columns="method")
    b = _values(rows[rows.method == "dummy_trained"]).drop(columns="method")
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)  # offset 0: the same predictions
    assert all(math.isfinite(v) for v in a["nrmse_all"])
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["runs"]["dummy_trained__L2__shard1of1"]["checkpoint"].endswith("L2")


def test_select_samples_round_robin_limit_and_skipped() -> None:
    from crbench.runner import select_samples

    def keys(frame: pd.DataFrame) -> list[tuple[str, int]]:
        return list(zip(frame.roi, frame.patch, strict=True))

    index = pd.DataFrame({"roi": ["R/2", "R/1", "R/1", "R/1", "R/2", "R/3"],
                          "patch": [0, 2, 0, 1, 1, 0],
                          "match": [True, False, True, True, False, True]})
    # sorted: R/1 0 (T), R/1 1 (T), R/1 2 (F), R/2 0 (T), R/2 1 (F), R/3 0 (T)
    sel, n_index, skipped = select_samples(index, (1, 2), None)
    assert keys(sel) == [("R/1", 0)] and n_index == 3
    assert skipped == 2  # R/1 2 and R/2 1
    sel2, _, skipped2 = select_samples(index, (2, 2), None)
    assert keys(sel2) == [("R/1", 1), ("R/2", 0), ("R/3", 0)] and skipped2 == 0
    sel, _, skipped = select_samples(index, (1, 1), 2)
    assert keys(sel) == [("R/1", 0), ("R/1", 1)] and skipped == 0
    sel, _, skipped = select_samples(index, (1, 1), 3)
    assert keys(sel)[-1] == ("R/2", 0) and skipped == 1


def test_rows_writer_repairs_a_partial_header(tmp_path: Path) -> None:
    from crbench.runner.store import RowsWriter, read_row_dicts

    path = tmp_path / "rows" / "m__L2__shard1of1.csv"
    path.parent.mkdir()
    path.write_text("method,L,spl")  # killed while writing the header
    row = dict.fromkeys(ROW_COLUMNS, 0.5) | {"method": "m", "L": 2, "split": "test",
                                              "roi": "ROIs1868/119", "patch": 3,
                                              "input_idx": "0;1", "target_idx": 4,
                                              "psnr": float("nan")}
    with RowsWriter(path) as writer:
        writer.append([row])
    got = read_row_dicts(path)
    assert len(got) == 1 and got[0]["psnr"] == "nan" and got[0]["roi"] == "ROIs1868/119"
    assert read_rows(tmp_path)["patch"].tolist() == [3]
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UsageError, match="expected method,L,split"):
        RowsWriter(path)
