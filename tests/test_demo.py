"""`crbench demo --quick` end to end: synth -> masks -> train -> run -> report."""

from __future__ import annotations

from pathlib import Path

import pytest

from crbench.cli.main import main
from crbench.demo import BASELINES, LEARNED, MARKER, QUICK, _prepare_out, run_demo
from crbench.errors import UsageError
from crbench.runner import read_rows


def test_demo_refuses_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match=r"--out: .* holds no previous demo"):
        run_demo(tmp_path, quick=True, progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert main(["demo", "--quick", "--data", str(tmp_path / "none"), "--out",
                 str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_demo_reuses_its_own_directory(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    _prepare_out(out, QUICK)
    assert (out / MARKER).is_file()
    (out / "run" / "rows").mkdir(parents=True)
    (out / "run" / "rows" / "old.csv").write_text("stale")
    (out / "checkpoints" / "x").mkdir(parents=True)
    _prepare_out(out, QUICK)  # a later demo: previous run and checkpoints are replaced
    assert not (out / "run").exists() and not (out / "checkpoints").exists()


@pytest.mark.slow
def test_quick_demo_end_to_end(synth_root: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    # the session's synthetic tree has the quick demo's sizes (4 ROIs, 2 patches, 64 px,
    # seed 0); reusing it shares its mask cache with the other tests
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--data", str(synth_root), "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = out / "run" / "report"
    for name in ("table1.md", "table2.md", "table3.md"):
        assert (report / name).is_file()
        assert str(report) in printed
    for name in ("figure3.png", "figure4.png"):
        assert (report / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    for name in ("figure3.pdf", "figure4.pdf"):
        assert (report / "figures" / name).read_bytes()[:5] == b"%PDF-"
    rows = read_rows(out / "run")
    assert set(rows["L"]) == set(QUICK.seq_lens)
    ran = set(rows["method"])
    assert set(BASELINES) <= ran
    # every learned method either ran or is named as skipped with its reason
    for name in LEARNED:
        assert name in ran or f"skipped {name}:" in printed
    # the printed Table 1 holds the same sample count as the rows
    table1 = (report / "table1.md").read_text()
    n = rows[rows["method"] == "mosaicing"].shape[0]
    assert f"| mosaicing | {n} |" in table1
    assert "demo finished in" in printed
