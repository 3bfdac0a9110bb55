"""Report: tables computed from per-sample rows, coverage bins, formats, figures, CLI."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crbench.cli.main import main
from crbench.errors import UsageError
from crbench.metrics import HIGHER_IS_BETTER, METRIC_NAMES
from crbench.report import (
    Format,
    build_report,
    coverage_bins,
    latest_run,
    read_rows,
    table1,
)
from crbench.report.figures import CATEGORIES, categorize, choose_examples, example_figure

METHODS = {"least_cloudy": 0.12, "mosaicing": 0.09, "seqdm": 0.05, "seqdm_no_tts": 0.06}
COVERAGES = [0.0, 0.05, 0.0999, 0.1, 0.25, 0.3, 0.5, 0.7, 0.95, 1.0, 0.6, 0.8]


def _rows(seed: int = 0, Ls: tuple[int, ...] = (3, 4), methods: dict[str, float] = METHODS
          ) -> pd.DataFrame:
    """Hand-made per-sample rows with DESIGN.md's columns (random errors per method)."""
    rng = np.random.default_rng(seed)
    recs = []
    for L in Ls:
        for s, cov in enumerate(COVERAGES):
            for method, q in methods.items():
                e = q * (1 + rng.random())
                recs.append({
                    "method": method, "L": L, "split": "test", "roi": f"ROIs1868/{100 + s % 3}",
                    "patch": s, "input_idx": ";".join(map(str, range(L))), "target_idx": 20,
                    "coverage": cov, "nrmse_all": e,
                    "nrmse_cloudy": np.nan if cov == 0 else e * (1 + rng.random()),
                    "nrmse_clear": e * rng.random(), "psnr": 20 * np.log10(1 / e),
                    "ssim": 1 - e * rng.random(), "sam": 2 * e * rng.random(),
                    "seconds": rng.random()})
    return pd.DataFrame(recs)


def _to_csv(rows: pd.DataFrame, path: Path) -> None:
    """A rows file as the runner writes it (DESIGN.md columns, NaN as "nan")."""
    rows.to_csv(path, index=False, na_rep="nan")


def _write_run(run: Path, rows: pd.DataFrame, shards: int = 2, manifest: dict | None = None
               ) -> Path:
    (run / "rows").mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(np.array_split(np.arange(len(rows)), shards)):
        _to_csv(rows.iloc[part], run / "rows" / f"part__shard{k + 1}of{shards}.csv")
    (run / "manifest.json").write_text(json.dumps(manifest or {"mask_convention": "paper"}))
    return run


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    rows = _rows()
    return _write_run(tmp_path / "run", rows), rows


def test_read_rows_merges_shards_and_drops_repeated_samples(tmp_path: Path) -> None:
    rows = _rows()
    run = _write_run(tmp_path / "run", rows, shards=3)
    # a resumed run wrote the first 5 samples again (same values, other timing)
    again = rows.iloc[:5].assign(seconds=99.0)
    _to_csv(again, run / "rows" / "resumed.csv")
    got = read_rows(run)
    assert len(got) == len(rows)
    # two different runs of one sample mixed: refused with a clear message
    _to_csv(rows.iloc[:1].assign(psnr=1.0), run / "rows" / "other.csv")
    with pytest.raises(UsageError, match="different values"):
        read_rows(run)


def test_read_rows_without_rows_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--results: no result rows"):
        read_rows(tmp_path)


def test_table_means_match_pandas(run_dir: tuple[Path, pd.DataFrame]) -> None:
    run, rows = run_dir
    result = build_report(run, fmt="csv")
    t1 = pd.read_csv(io.StringIO(result.tables[0].render(Format.CSV)))
    expect = rows[rows["L"] == 3].groupby("method")[list(METRIC_NAMES)].mean()
    t1 = t1.set_index("method")
    assert sorted(t1.index) == sorted(METHODS)
    for m in METRIC_NAMES:
        np.testing.assert_allclose(t1.loc[expect.index, m], expect[m], rtol=1e-12)
    assert (t1["n"] == len(COVERAGES)).all()
    t2 = pd.read_csv(io.StringIO(result.tables[1].render(Format.CSV)))
    expect2 = rows.groupby(["L", "method"])[list(METRIC_NAMES)].mean()
    t2 = t2.set_index(["L", "method"]).loc[expect2.index]
    for m in METRIC_NAMES:
        np.testing.assert_allclose(t2[m], expect2[m], rtol=1e-12)
    assert (run / "report" / "table1.csv").read_text() == result.tables[0].render(Format.CSV)


def test_L_option_selects_table1_and_rejects_absent_L(run_dir: tuple[Path, pd.DataFrame]
                                                      ) -> None:
    run, _ = run_dir
    assert build_report(run).tables[0].title.endswith("L = 3")
    assert build_report(run, L=4).tables[0].title.endswith("L = 4")
    with pytest.raises(UsageError, match=r"--L: no results at L=7; the results hold L = 3, 4"):
        build_report(run, L=7)


def test_coverage_bins_edges() -> None:
    cov = pd.Series([0.0, 0.0999, 0.1, 0.19999, 0.2, 0.3, 0.7, 0.9, 0.95, 1.0, 3 / 10])
    assert coverage_bins(cov).tolist() == [0, 0, 1, 1, 2, 3, 7, 9, 9, 9, 3]


def test_table3_counts_and_means_per_bin(run_dir: tuple[Path, pd.DataFrame]) -> None:
    run, rows = run_dir
    t3 = build_report(run, by_coverage=True, fmt="csv").tables[2]
    got = pd.read_csv(io.StringIO(t3.render(Format.CSV)))
    assert len(got) == 2 * 10 * len(METHODS)  # every bin listed, empty ones with n = 0
    # independent binning with pandas: [0, 10), ..., [90, 100] percent
    pct = (rows["coverage"] * 100).round(6)
    labels = [f"{10 * i}-{10 * i + 10} %" for i in range(10)]
    rows = rows.assign(coverage=pd.cut(pct, bins=list(range(0, 101, 10)), right=False,
                                       labels=labels).astype(object))
    rows.loc[pct == 100, "coverage"] = "90-100 %"
    expect = rows.groupby(["L", "coverage", "method"])
    counts = expect.size()
    got = got.set_index(["L", "coverage", "method"])
    assert (got.loc[counts.index, "n"] == counts).all()
    assert got["n"].sum() == len(rows)
    means = expect["psnr"].mean()
    np.testing.assert_allclose(got.loc[means.index, "psnr"], means, rtol=1e-12)
    assert got.loc[(3, "40-50 %", "seqdm"), "n"] == 0
    assert np.isnan(got.loc[(3, "40-50 %", "seqdm"), "psnr"])


def test_markdown_marks_best_per_column(run_dir: tuple[Path, pd.DataFrame]) -> None:
    run, rows = run_dir
    md = build_report(run).tables[0].render(Format.MD)
    at3 = rows[rows["L"] == 3].groupby("method")[list(METRIC_NAMES)].mean()
    lines = {line.split("|")[1].strip(): line for line in md.splitlines()
             if line.startswith("| ") and "---" not in line}
    for m in METRIC_NAMES:
        best = at3[m].idxmax() if HIGHER_IS_BETTER[m] else at3[m].idxmin()
        col = 3 + METRIC_NAMES.index(m)
        for method, line in lines.items():
            if method in at3.index:
                cell = line.split("|")[col].strip()
                assert cell.startswith("**") == (method == best), (m, method, cell)
    assert "paper' mask convention" in md


def test_ci_shown_as_interval_and_csv_columns(run_dir: tuple[Path, pd.DataFrame]) -> None:
    run, _ = run_dir
    md = build_report(run, ci=True).tables[0].render(Format.MD)
    assert any("[" in line and "]" in line for line in md.splitlines() if "mosaicing" in line)
    csv = pd.read_csv(io.StringIO(build_report(run, ci=True, fmt="csv").tables[0]
                                  .render(Format.CSV)))
    for m in METRIC_NAMES:
        assert (csv[f"{m}_low"] <= csv[m] + 1e-12).all()
        assert (csv[m] <= csv[f"{m}_high"] + 1e-12).all()


def test_latex_is_booktabs_tabular(run_dir: tuple[Path, pd.DataFrame]) -> None:
    run, _ = run_dir
    result = build_report(run, fmt=Format.TEX, by_coverage=True)
    tex = (run / "report" / "table3.tex").read_text()
    for token in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule",
                  r"\end{tabular}", r"\textbf{", r"least\_cloudy", r"90-100 \%"):
        assert token in tex
    assert tex.count(r"\begin{table}") == 1
    assert [t.name for t in result.tables] == ["table1", "table2", "table3", "table4"]


def test_table4_only_with_both_ablation_methods(tmp_path: Path) -> None:
    rows = _rows()
    both = build_report(_write_run(tmp_path / "a", rows))
    t4 = both.tables[-1]
    assert t4.name == "table4"
    assert set(t4.stats["method"]) == {"seqdm", "seqdm_no_tts"}
    one = build_report(_write_run(tmp_path / "b", rows[rows["method"] != "seqdm_no_tts"]))
    assert [t.name for t in one.tables] == ["table1", "table2"]


def test_notes_skipped_and_stgan(tmp_path: Path) -> None:
    rows = _rows(methods={"mosaicing": 0.1, "stgan": 0.08})
    run = _write_run(tmp_path / "r", rows,
                     manifest={"mask_convention": "toolbox", "skipped": {"3": 4, "4": 2}})
    notes = build_report(run).tables[0].notes
    text = " ".join(notes)
    assert "L=3: 4, L=4: 2" in text
    assert "'toolbox' mask convention" in text
    assert "B04, B03, B02 and B08" in text
    assert "nrmse_cloudy is undefined (empty region) for 2 of 24" in text


def test_latest_run_picks_newest(tmp_path: Path) -> None:
    rows = _rows()
    old = _write_run(tmp_path / "results" / "old", rows)
    new = _write_run(tmp_path / "results" / "new", rows)
    _write_run(tmp_path / "results" / "baseline" / "x", rows)
    past = time.time() - 100
    for p in [old / "manifest.json", *(old / "rows").iterdir()]:
        os.utime(p, (past, past))
    assert latest_run(tmp_path / "results") == new
    with pytest.raises(UsageError, match="no run directory"):
        latest_run(tmp_path / "nothing")


def test_cli_report_default_results_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _write_run(tmp_path / "results" / "run1", _rows())
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--format", "md", "--by-coverage"]) == 0
    out = capsys.readouterr().out
    assert "Table 1: all methods at L = 3" in out and "Table 3" in out
    assert (tmp_path / "results" / "run1" / "report" / "table3.md").is_file()
    assert main(["report", "--results", "results/run1", "--L", "9"]) == 2
    assert "--L: no results at L=9" in capsys.readouterr().err
    assert main(["report", "--results", "nowhere"]) == 2
    assert "--results: nowhere is not a directory" in capsys.readouterr().err


def test_histogram_figure_files_are_valid(run_dir: tuple[Path, pd.DataFrame]) -> None:
    run, _ = run_dir
    result = build_report(run, figures=True)
    names = {p.name for p in result.figures}
    assert {"figure4.png", "figure4.pdf"} <= names
    fig_dir = run / "report" / "figures"
    assert (fig_dir / "figure4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (fig_dir / "figure4.pdf").read_bytes()[:5] == b"%PDF-"
    # no data root in this hand-made manifest: figure 3 is not drawn, and the report says why
    assert any("figure 3 not drawn" in m for m in result.messages)


def test_table1_direct(run_dir: tuple[Path, pd.DataFrame]) -> None:
    _, rows = run_dir
    t = table1(rows, 4)
    assert list(t.stats["method"]) == ["least_cloudy", "mosaicing", "seqdm", "seqdm_no_tts"]
    assert (t.stats["nrmse_cloudy_n"] == len(COVERAGES) - 1).all()  # coverage 0: undefined


def test_categorize_rule() -> None:
    assert categorize([0.0, 0.0, 0.0]) == "cloud-free"
    assert categorize([0.0005, 0.0]) == "cloud-free"  # clear = coverage <= 0.1 %
    assert categorize([0.0, 0.5, 0.7]) == "one clear date"
    assert categorize([0.2, 0.3, 0.4]) == "partly cloudy"
    assert categorize([0.6, 1.0, 0.9]) == "no clear date"
    assert categorize([0.0, 0.0, 0.5]) is None  # two of three clear: no category


def test_figure3_from_a_real_run(synth_root: Path, tmp_path: Path) -> None:
    from crbench.data.index import build_index

    run = tmp_path / "run"
    assert main(["run", "--data", str(synth_root), "--methods", "least_cloudy,mosaicing",
                 "--L", "2", "--out", str(run), "--save-predictions", "--no-progress"]) == 0
    (run / "predictions" / "least_cloudy").rename(tmp_path / "gone")  # one method without
    rows = read_rows(run)
    result = example_figure(rows, synth_root, [run], 2, tmp_path / "figs")
    assert [p.name for p in result.files] == ["figure3.png", "figure3.pdf"]
    assert (tmp_path / "figs" / "figure3.png").read_bytes()[:4] == b"\x89PNG"
    assert any("leaves out least_cloudy: no saved predictions" in m for m in result.messages)
    # the categories found agree with the per-input coverages of the index
    index = build_index(synth_root, "test", 2)
    index = index[index["match"]]
    cats = {categorize([float(c) for c in s.split(";")]) for s in index["coverage_inputs"]}
    for cat in CATEGORIES:
        missing = any(f"no {cat} sample at L=2" in m for m in result.messages)
        assert missing == (cat not in cats)
    examples = choose_examples(index.assign(coverage_inputs=[
        [float(c) for c in s.split(";")] for s in index["coverage_inputs"]]))
    assert {c for c, ex in examples.items() if ex is not None} == cats - {None}
