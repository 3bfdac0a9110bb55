"""`crbench data verify|masks|index` end to end: return codes, messages, written files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crbench.cli.main import main
from crbench.data.index import INDEX_COLUMNS, build_index, read_index, scan_tree
from crbench.data.layout import EXPECTED_LAYOUT


def _index_args(root: Path, out: Path, *extra: str, L: str = "3", split: str = "test") -> list:
    return ["data", "index", str(root), "--split", split, "--L", L, "--out", str(out),
            "--no-progress", *extra]


def test_index_writes_csv_and_counts(synth_root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "i.csv"
    assert main(_index_args(synth_root, out)) == 0
    frame = read_index(out)
    assert tuple(frame.columns) == INDEX_COLUMNS and len(frame) == 2
    pd.testing.assert_frame_equal(frame, build_index(synth_root, "test", 3))
    n_match = int(frame["match"].sum())
    stdout = capsys.readouterr().out
    assert f"2 patches, {n_match} matching, {2 - n_match} skipped (non-matching)" in stdout
    assert str(out) in stdout


def test_index_protocol_and_bounds(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    args = _index_args(synth_root, out, "--protocol", "strict", "--min-cov", "0.1",
                       "--max-cov", "0.9", L="4")
    assert main(args) == 0
    expected = build_index(synth_root, "test", 4, min_cov=0.1, max_cov=0.9, protocol="strict")
    pd.testing.assert_frame_equal(read_index(out), expected)


@pytest.mark.parametrize(("L", "split", "extra", "message"), [
    ("0", "test", [], "L: bad value 0; expected an integer from 1 to 29"),
    ("30", "test", [], "L: bad value 30; expected an integer from 1 to 29"),
    ("3", "tests", [], "split: unknown value 'tests'; expected one of train, val, test, all"),
    ("3", "test", ["--region", "asia"], "region: unknown value 'asia'; expected one of all, "),
    ("3", "test", ["--protocol", "lax"], "protocol: unknown value 'lax'"),
    ("3", "test", ["--min-cov", "0.8", "--max-cov", "0.2"], "min_cov=0.8 is larger than"),
])
def test_index_bad_values_exit_2(synth_root: Path, tmp_path: Path, L: str, split: str,
                                 extra: list[str], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "i.csv"
    assert main(_index_args(synth_root, out, *extra, L=L, split=split)) == 2
    err = capsys.readouterr().err
    assert err.startswith("crbench data: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_root_exit_2_with_layout(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "absent"
    assert main(_index_args(root, tmp_path / "i.csv")) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and EXPECTED_LAYOUT in err and "crbench synth" in err
    assert main(["data", "masks", str(root), "--no-progress"]) == 2
    assert EXPECTED_LAYOUT in capsys.readouterr().err


def test_empty_split_exit_2(synth_root: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_index_args(synth_root, tmp_path / "i.csv", "--region", "america")) == 2
    err = capsys.readouterr().err
    assert "split 'test' of region 'america' is empty" in err
    assert "ROIs1158/106, ROIs1970/132" in err and "ROIs found: ROIs1868/36" in err
    assert EXPECTED_LAYOUT in err


def test_masks_reports_cached(synth_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_index(synth_root, "test", 3)  # fills the cache of the test split
    assert main(["data", "masks", str(synth_root), "--split", "test", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "60 images, 0 computed, 60 already cached, 0 failed" in out


def test_masks_into_other_cache_dir(synth_root: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"  # one blank patch: s2cloudless is skipped for blank images
    rec = scan_tree(synth_root, "test")[0]
    for path in (*rec.s1, *rec.s2):
        dest = root / path.relative_to(synth_root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    _blank_s2(root)
    cache = tmp_path / "cache"
    args = ["data", "masks", str(root), "--split", "test", "--cache-dir", str(cache),
            "--no-progress"]
    assert main(args) == 0
    assert "30 images, 30 computed, 0 already cached" in capsys.readouterr().out
    assert any(cache.rglob("*.npz"))
    assert main(args) == 0
    assert "30 images, 0 computed, 30 already cached" in capsys.readouterr().out
    assert main([*args[:-1], "--workers", "0"]) == 2
    assert "workers" in capsys.readouterr().err


def _blank_s2(root: Path) -> None:
    import rasterio

    for path in root.rglob("s2_*.tif"):
        with rasterio.open(path) as src:
            profile = src.profile
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.zeros((profile["count"], profile["height"], profile["width"]),
                               dtype=profile["dtype"]))


def test_verify_ok_and_unusable(synth_root: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "verify", str(synth_root), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["data", "verify", str(tmp_path / "absent"), "--no-progress"]) == 2
    assert "absent" in capsys.readouterr().out


def test_import_pairs_needs_allow_pickle(synth_root: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    frame = build_index(synth_root, "test", 3)
    recs = {(r.roi, r.patch): r for r in scan_tree(synth_root, "test")}
    pairs = {}
    for pdx, row in enumerate(frame.to_dict("records")):
        rec = recs[(row["roi"], row["patch"])]
        inputs = [int(t) for t in row["input_idx"].split(";")]
        target = int(row["target_idx"])
        rel = lambda p: p.relative_to(synth_root).as_posix()  # noqa: E731
        pairs[pdx] = {"input": inputs, "target": target,
                      "paths": {"input": {"S1": [rel(rec.s1[t]) for t in inputs],
                                          "S2": [rel(rec.s2[t]) for t in inputs]},
                                "output": {"S1": rel(rec.s1[target]), "S2": rel(rec.s2[target])}}}
    pair_file = tmp_path / "generic_3_test_all_s2cloudless_mask.npy"
    np.save(pair_file, pairs)
    out = tmp_path / "imported.csv"
    args = _index_args(synth_root, out, "--import-pairs", str(pair_file))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pickle" in err and "execute arbitrary code" in err and "--allow-pickle" in err
    assert main([*args, "--allow-pickle"]) == 0
    assert "2 patches, 2 matching, 0 skipped" in capsys.readouterr().out
    got = read_index(out)
    assert got["input_idx"].tolist() == frame["input_idx"].tolist()
    assert got["coverage_target"].tolist() == frame["coverage_target"].tolist()
    assert main(_index_args(synth_root, out, "--import-pairs", str(pair_file), "--allow-pickle",
                            L="4")) == 2
    assert "--L: 4 given but the pairing file" in capsys.readouterr().err


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "index", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--split", "--L", "--region", "--min-cov", "--max-cov", "--protocol",
                   "--import-pairs", "--allow-pickle", "--out", "--workers", "--cache-dir"):
        assert option in text
    assert "pickle" in text and "execute arbitrary code" in text


def test_done_when_chain_in_subprocess(tmp_path: Path) -> None:
    """README's promise: synth, verify and index chained from a shell."""
    exe = Path(sys.executable).with_name("crbench")
    crb = str(exe) if exe.exists() else f"{sys.executable} -m crbench.cli.main"
    cmd = (f"{crb} synth s --rois 1 --patches 1 --size 32 --quiet && "  # relative paths
           f"{crb} data verify s --no-progress && "
           f"{crb} data index s --split test --L 3 --out i.csv --no-progress")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CRBENCH_CACHE_DIR", None)
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, env=env, timeout=300,
                          check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 patches" in proc.stdout
    assert any((tmp_path / "s" / ".crbench" / "masks").rglob("*.npz"))  # the cache was filled
    frame = read_index(tmp_path / "i.csv")
    assert tuple(frame.columns) == INDEX_COLUMNS and frame["roi"].tolist() == ["ROIs1868/119"]
