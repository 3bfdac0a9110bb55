"""Results that cannot be silently mixed or lost (issue 17): a resume with retrained weights,
two processes on one run directory, runs of other settings in one report, infinite PSNR in
`crbench check`, runs that failed on bad data, and skipped-sample counts."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from plugin_fixture.fixture_dist import activate_site, install_dist

from crbench.check import check_results, write_baseline
from crbench.cli.main import main
from crbench.errors import UsageError
from crbench.report import build_report, read_manifests
from crbench.report.tables import skipped_by_L
from crbench.runner import ROW_COLUMNS, RunConfig, read_manifest, read_rows, run

KEY = ["method", "L", "roi", "patch"]
DUMMY = {"dummy_mean": "crbench_dummy_plugin:DummyMean",
         "dummy_trained": "crbench_dummy_plugin:DummyTrained"}


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fixture plugins installed as a distribution in a directory on sys.path."""
    d = tmp_path / "site"
    install_dist(d, "crbench-dummy-plugin", "crbench_dummy_plugin", DUMMY)
    yield from activate_site(d, monkeypatch)


def _values(frame: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ROW_COLUMNS if c != "seconds"]
    return frame[cols].sort_values(KEY).reset_index(drop=True)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ----------------------------------------------------------------------------- 1: checkpoints


def _save_dummy(ckpts: Path, offset: float, Ls: tuple[int, ...] = (3,)) -> str:
    """A DummyTrained checkpoint per L in ``ckpts/dummy_trained/L<L>``; the weights' sha256."""
    from crbench_dummy_plugin import DummyTrained

    for L in Ls:
        DummyTrained(seq_len=L, offset=offset).save(ckpts / "dummy_trained" / f"L{L}")
    return hashlib.sha256((ckpts / "dummy_trained" / f"L{Ls[0]}" / "model.safetensors"
                           ).read_bytes()).hexdigest()


def test_resume_with_retrained_weights_is_refused(synth_root: Path, tmp_path: Path, site: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ckpts, out = tmp_path / "ck", tmp_path / "run"
    first = _save_dummy(ckpts, 0.0)
    args = ["run", "--data", str(synth_root), "--split", "all", "--methods", "dummy_trained",
            "--L", "3", "--checkpoints", str(ckpts), "--out", str(out), "--no-progress"]
    assert main([*args, "--limit", "2"]) == 0
    entry = read_manifest(out)["runs"]["dummy_trained__L3__shard1of1"]
    assert entry["checkpoint_sha256"] == first
    capsys.readouterr()
    second = _save_dummy(ckpts, 0.1)  # retrained: other weights in the same directory
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "dummy_trained" in line and first in line and second in line
    assert len(read_rows(out)) == 2  # nothing of model B was mixed in
    assert _save_dummy(ckpts, 0.0) == first  # the same weights again: the resume goes on
    assert main(args) == 0
    rows = read_rows(out)
    fresh = tmp_path / "fresh"
    assert main([*args[:-3], "--out", str(fresh), "--no-progress"]) == 0
    assert not rows.duplicated(subset=KEY).any()
    pd.testing.assert_frame_equal(_values(rows), _values(read_rows(fresh)), rtol=1e-9)


def test_train_into_an_existing_checkpoint_needs_resume_or_overwrite(
        synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ck" / "seq2point" / "L3"
    args = ["train", "seq2point", "--data", str(synth_root), "--L", "3", "--out", str(out),
            "--preset", "tiny", "--steps", "1", "--crop", "32", "--no-progress"]
    assert main(args) == 0
    before = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*args[:-2], "2", "--crop", "32", "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--out" in line and str(out) in line and "--resume" in line and "--overwrite" in line
    assert (out / "model.safetensors").read_bytes() == before
    assert main([*args, "--overwrite", "--seed", "1"]) == 0
    assert (out / "model.safetensors").read_bytes() != before


# ----------------------------------------------------------------------------- 2: one writer


def _env(site: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path]),
            "OMP_NUM_THREADS": "1", **extra}


def _run_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "crbench.cli.main", "run", "--data", str(root), "--split",
            "all", "--methods", "dummy_mean", "--L", "2", "3", "--batch-size", "1", "--out",
            str(out), "--no-progress", *extra]


def _wait_for_rows(proc: subprocess.Popen, rows: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if rows.exists() and len(rows.read_text().splitlines()) >= 2:
            return
        time.sleep(0.02)
    raise AssertionError(f"no rows appeared (exit {proc.poll()})")


def test_a_second_writer_on_the_same_run_dir_exits_2_naming_the_holder(
        synth_root: Path, tmp_path: Path, site: Path) -> None:
    out = tmp_path / "run"
    env = _env(site, CRBENCH_DUMMY_DELAY="2")  # 14 batches: the holder runs for 28 s or more
    holder = subprocess.Popen(_run_cmd(synth_root, out), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_rows(holder, out / "rows" / "dummy_mean__L2__shard1of1.csv")
        seconds = [subprocess.Popen(_run_cmd(synth_root, out, *extra), env=env, text=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                   for extra in ((), ("--shard", "2/2"))]  # the same samples, or some of them
        for second in seconds:
            assert second.wait(timeout=120) == 2
            line = _one_error_line(second.stderr.read())
            assert f"pid {holder.pid}" in line and "--out" in line and str(out) in line
        assert holder.poll() is None  # both were refused while the holder was running
    finally:
        holder.kill()
        holder.wait(timeout=30)
    resumed = run(RunConfig(data=synth_root, split="all", methods="dummy_mean",
                            seq_lens=[2, 3], out=out, progress=False))
    assert sum(m.n_new for m in resumed.runs) < sum(m.n_selected for m in resumed.runs)
    full = run(RunConfig(data=synth_root, split="all", methods="dummy_mean", seq_lens=[2, 3],
                         out=tmp_path / "full", progress=False))
    rows = read_rows(out)
    assert len(rows) == sum(m.n_selected for m in full.runs) > 0
    assert not rows.duplicated(subset=KEY).any()
    pd.testing.assert_frame_equal(_values(rows), _values(read_rows(tmp_path / "full")),
                                  rtol=1e-9)


def test_sigkill_then_resume_with_the_same_checkpoint_loses_and_repeats_nothing(
        synth_root: Path, tmp_path: Path, site: Path) -> None:
    ckpts, out = tmp_path / "ck", tmp_path / "run"
    _save_dummy(ckpts, 0.05, Ls=(2, 3))
    method = ["--methods", "dummy_trained", "--checkpoints", str(ckpts)]
    cmd = [*_run_cmd(synth_root, out), *method]  # the later --methods wins
    proc = subprocess.Popen(cmd, env=_env(site, CRBENCH_DUMMY_DELAY="0.3"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(proc, out / "rows" / "dummy_trained__L2__shard1of1.csv")
    proc.kill()  # SIGKILL: no handler runs, the lock file keeps the dead pid
    proc.wait(timeout=30)
    written = len(read_rows(out))
    assert (out / ".lock-shard1of1").read_text().strip() == str(proc.pid)
    assert main(cmd[3:]) == 0  # resumes: the dead holder's lock is free, the hash matches
    fresh = tmp_path / "fresh"
    assert main([*_run_cmd(synth_root, fresh)[3:], *method]) == 0
    rows, full = read_rows(out), read_rows(fresh)
    assert 1 <= written < len(full) == len(rows)
    assert not rows.duplicated(subset=KEY).any()
    pd.testing.assert_frame_equal(_values(rows), _values(full), rtol=1e-9)


def test_disjoint_shards_may_write_one_run_dir_at_once(synth_root: Path, tmp_path: Path,
                                                       site: Path) -> None:
    out = tmp_path / "run"
    env = _env(site, CRBENCH_DUMMY_DELAY="0.1")
    procs = [subprocess.Popen(_run_cmd(synth_root, out, "--shard", f"{k}/2"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for k in (1, 2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    rows = read_rows(out)
    assert not rows.duplicated(subset=KEY).any() and len(rows) == 2 * 7  # 7 matching, L 2, 3


# ----------------------------------------------------------------------------- 3: mixed runs


def test_report_refuses_runs_of_other_protocol_or_mask_convention(synth_root: Path,
                                                                  tmp_path: Path) -> None:
    base = {"data": synth_root, "methods": "least_cloudy", "seq_lens": [2], "progress": False}
    run(RunConfig(**base, out=tmp_path / "a"))
    run(RunConfig(**base, out=tmp_path / "b", protocol="strict"))
    run(RunConfig(**base, out=tmp_path / "c", mask_convention="toolbox"))
    with pytest.raises(UsageError, match=r"--results: .*protocol.*toolbox.*strict"):
        build_report([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(UsageError, match=r"--results: .*mask_convention"):
        build_report([tmp_path / "a", tmp_path / "c"])
    with pytest.raises(UsageError, match=r"--results: .*different (mask_convention|protocol)"):
        build_report(tmp_path)  # a folder holding all three
    assert main(["report", "--results", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert build_report([tmp_path / "a"]).tables  # one run alone is fine


# ----------------------------------------------------------------------------- 4: check and inf


def _check_run(path: Path, psnr: list[float]) -> Path:
    recs = [{"method": "least_cloudy", "L": 3, "split": "test", "roi": "ROIs1868/119",
             "patch": i, "input_idx": "0;1;2", "target_idx": 25, "coverage": 0.5,
             "nrmse_all": 0.1, "nrmse_cloudy": 0.2, "nrmse_clear": 0.05, "psnr": p,
             "ssim": 0.9, "sam": 0.1, "seconds": 0.01} for i, p in enumerate(psnr)]
    (path / "rows").mkdir(parents=True)
    pd.DataFrame(recs).to_csv(path / "rows" / "least_cloudy__L3__shard1of1.csv", index=False)
    (path / "manifest.json").write_text(json.dumps({"config": {"split": "test"}}))
    return path


def _strict_json(path: Path) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"{path} holds {name}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_check_sees_a_psnr_regression_despite_an_infinite_row(tmp_path: Path) -> None:
    good = _check_run(tmp_path / "good", [30.0, 32.0, math.inf])
    base = write_baseline(good, tmp_path / "base.json")
    entry = _strict_json(base)["metrics"]["least_cloudy"]["3"]
    assert entry["psnr"] == pytest.approx(31.0) and entry["psnr_inf"] == 1
    assert check_results(good, base).ok
    worse = check_results(_check_run(tmp_path / "worse", [25.0, 26.0, math.inf]), base)
    assert [f.metric for f in worse.regressions] == ["psnr"]
    assert worse.regressions[0].value == pytest.approx(25.5)
    fewer_inf = check_results(_check_run(tmp_path / "fewer", [30.0, 32.0, 31.0]), base)
    assert not fewer_inf.ok and any("psnr" in line and "infinite" in line
                                    for line in fewer_inf.failures())
    assert main(["check", "--results", str(tmp_path / "worse"), "--baseline", str(base)]) == 1


def test_check_reads_an_old_baseline_with_infinity(tmp_path: Path) -> None:
    good = _check_run(tmp_path / "good", [30.0, 32.0, math.inf])
    old = _strict_json(write_baseline(good, tmp_path / "new.json"))
    entry = old["metrics"]["least_cloudy"]["3"]
    entry["psnr"] = math.inf
    del entry["psnr_inf"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))  # as crbench wrote it before: "psnr": Infinity
    assert "Infinity" in path.read_text()
    assert check_results(good, path).ok
    assert not check_results(_check_run(tmp_path / "finite", [30.0, 32.0, 31.0]), path).ok


# ----------------------------------------------------------------------------- 5: failed runs


def test_a_run_on_bad_data_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    for data in (tmp_path / "missing", tmp_path / "empty"):
        for out in (["--out", str(tmp_path / "run")], []):
            assert main(["run", "--data", str(data), "--methods", "least_cloudy", "--L", "3",
                         "--no-progress", *out]) == 2
            _one_error_line(capsys.readouterr().err)
            assert not (tmp_path / "run").exists() and not (tmp_path / "results").exists()


def test_report_without_results_skips_runs_without_rows(synth_root: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "results" / "run-good"
    run(RunConfig(data=synth_root, methods="least_cloudy", seq_lens=[2], out=good,
                  progress=False))
    time.sleep(0.05)
    empty = tmp_path / "results" / "run-empty"  # what a failed run used to leave
    (empty / "rows").mkdir(parents=True)
    (empty / "manifest.json").write_text(json.dumps({"config": {"split": "test"}, "runs": {}}))
    assert main(["report"]) == 0
    captured = capsys.readouterr()
    assert (good / "report" / "table1.md").is_file() and not (empty / "report").exists()
    assert "skipped" in captured.err and "run-empty (no rows)" in captured.err


# ----------------------------------------------------------------------------- 8: skipped


def test_skipped_samples_count_once_with_overlapping_shards_and_repeated_dirs(
        synth_root: Path, tmp_path: Path) -> None:
    base = {"data": synth_root, "split": "all", "methods": "least_cloudy", "seq_lens": [3],
            "progress": False}
    single = tmp_path / "single"
    run(RunConfig(**base, out=single))
    expected = read_manifest(single)["skipped"]["least_cloudy"]["3"]
    assert expected == 1  # the synthetic tree's split "all" has one non-matching sample
    over = tmp_path / "over"
    for shard in ("1/1", "1/2", "2/2"):  # one layout, then another over the same samples
        run(RunConfig(**base, out=over, shard=shard))
    assert read_manifest(over)["skipped"] == {"least_cloudy": {"3": expected}}
    assert skipped_by_L(read_manifests([over])) == {3: expected}
    assert skipped_by_L(read_manifests([single, single])) == {3: expected}
    note = [n for n in build_report([single, single]).tables[0].notes if "skipped" in n]
    assert note and f"L=3: {expected}." in note[0]
    shards = [tmp_path / f"s{k}" for k in (1, 2)]  # disjoint shards in two dirs: summed
    for k, d in enumerate(shards, start=1):
        run(RunConfig(**base, out=d, shard=f"{k}/2"))
    assert skipped_by_L(read_manifests(shards)) == {3: expected}
