"""torchrun (gloo, 2 processes on CPU): evaluation shards across ranks and gives the same
result set as one process; shard composition is disjoint and complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from crbench.runner import ROW_COLUMNS, RunConfig, compose_shard, read_manifest, read_rows, run

KEY = ["method", "L", "roi", "patch"]


def _torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _values(frame: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ROW_COLUMNS if c != "seconds"]
    return frame[cols].sort_values(KEY).reset_index(drop=True)


@pytest.mark.parametrize(("shard", "world"), [((1, 1), 2), ((2, 3), 2), ((1, 2), 3)])
def test_compose_shard_partitions_the_user_shard(shard: tuple[int, int], world: int) -> None:
    rows = range(60)
    k, n = shard
    user = {i for i in rows if i % n == k - 1}
    parts = []
    for rank in range(world):
        rk, rn = compose_shard(shard, rank, world)
        parts.append({i for i in rows if i % rn == rk - 1})
    assert set().union(*parts) == user
    assert sum(len(p) for p in parts) == len(user)  # disjoint


def test_run_under_torchrun_matches_single_process(synth_root: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    run(RunConfig(data=synth_root, out=single, methods="least_cloudy,mosaicing",
                  seq_lens=[2, 3], batch_size=2, progress=False))
    multi = tmp_path / "multi"
    proc = _torchrun(["crbench.cli.main", "run", "--data", str(synth_root), "--methods",
                      "least_cloudy,mosaicing", "--L", "2", "3", "--batch-size", "2",
                      "--out", str(multi), "--no-progress"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows_files = sorted(p.name for p in (multi / "rows").glob("*.csv"))
    assert any("shard1of2" in n for n in rows_files)
    assert any("shard2of2" in n for n in rows_files)
    a, b = _values(read_rows(single)), _values(read_rows(multi))
    assert len(b) == len(a) > 0
    assert not b.duplicated(KEY).any()
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    manifest = read_manifest(multi)
    assert manifest is not None
    statuses = {r["status"] for r in manifest["runs"].values()}
    assert statuses == {"done"}
