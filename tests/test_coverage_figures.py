"""Coverage figures of `crbench report --figures` on a real run of the synthetic tree: files,
histogram counts = Table 3's n, plotted means = Table 3's means, one L and empty bins."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crbench.cli.main import main
from crbench.metrics import METRIC_NAMES
from crbench.report import Format, build_report, read_rows
from crbench.report import coverage_figures as cf
from crbench.report.figures import method_styles
from crbench.report.tables import N_BINS, bin_label

METHODS = ("least_cloudy", "mosaicing")
FIGURE_FILES = {f"{stem}.{ext}" for stem in (cf.HIST_STEM, cf.METRICS_STEM)
                for ext in ("png", "pdf")}


@pytest.fixture(scope="module")
def coverage_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of the baselines at L = 2 and 3 on a synthetic tree with 2 test ROIs x 3
    patches (32 px; about 10 s): unlike the 2 test samples of the session's ``synth_root``,
    its 6 samples per L hold infinite PSNRs and undefined cloudy NRMSEs (the cases Table 3's
    means must handle) spread over several coverage bins."""
    from crbench.synth import synthesize

    base = tmp_path_factory.mktemp("coverage")
    synthesize(base / "data", rois=5, patches=3, size=32, seed=0)
    run = base / "run"
    assert main(["run", "--data", str(base / "data"), "--methods", ",".join(METHODS), "--L",
                 "2", "3", "--out", str(run), "--no-progress"]) == 0
    rows = read_rows(run)
    assert np.isinf(rows["psnr"]).any() and rows["nrmse_cloudy"].isna().any()
    return run


def _table3(run: Path) -> pd.DataFrame:
    """Table 3 as `crbench report --by-coverage --format csv` writes it, indexed by
    (L, coverage label, method)."""
    t3 = next(t for t in build_report(run, by_coverage=True, fmt="csv").tables
              if t.name == "table3")
    return pd.read_csv(io.StringIO(t3.render(Format.CSV))).set_index(["L", "coverage", "method"])


def _assert_counts_match_table3(run: Path) -> pd.DataFrame:
    counts = cf.coverage_counts(read_rows(run))
    t3 = _table3(run)
    Ls = sorted(t3.index.get_level_values("L").unique())
    assert sorted(counts["L"].unique()) == Ls
    assert len(counts) == len(Ls) * N_BINS
    for method in METHODS:
        for rec in counts.itertuples():
            assert t3.loc[(rec.L, bin_label(rec.coverage), method), "n"] == rec.n, rec
    return counts


def _valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_report_figures_writes_coverage_figures(coverage_run: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["report", "--results", str(coverage_run), "--figures", "--out", str(out),
                 "--no-progress"]) == 0
    listed = capsys.readouterr().out
    fig_dir = out / "figures"
    assert {p.name for p in fig_dir.iterdir()} >= FIGURE_FILES
    for name in FIGURE_FILES:
        assert name in listed  # in the "figures written to ..." line
        if name.endswith(".png"):
            _valid_png(fig_dir / name)
        else:
            assert (fig_dir / name).read_bytes()[:5] == b"%PDF-"


def test_histogram_counts_equal_table3_n(coverage_run: Path) -> None:
    counts = _assert_counts_match_table3(coverage_run)
    rows = read_rows(coverage_run)
    for L, n in counts.groupby("L")["n"].sum().items():
        assert n == len(rows[(rows["L"] == L) & (rows["method"] == METHODS[0])])
    assert cf.uneven_methods(rows) == []


def _captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Figures handed to save_figure (not written, not closed)."""
    figs: list[Any] = []
    monkeypatch.setattr(cf, "save_figure", lambda fig, out_dir, stem: figs.append(fig) or [])
    return figs


def test_plotted_means_equal_table3_means(coverage_run: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    rows = read_rows(coverage_run)
    means = cf.coverage_means(rows)
    t3 = _table3(coverage_run)
    key = list(zip(means["L"], means["coverage"].map(bin_label), means["method"], strict=True))
    assert len(key) == len(t3)
    np.testing.assert_array_equal(t3.loc[key, "n"], means["n"])
    for m in METRIC_NAMES:  # NaN and inf in the same places, finite values equal
        np.testing.assert_allclose(t3.loc[key, m].to_numpy(float), means[m], rtol=1e-12)
    # what the figure draws: each method's line = the finite means; triangles = the inf ones
    figs = _captured(monkeypatch)
    cf.metrics_by_coverage_figure(rows, tmp_path)
    axes = np.asarray(figs[0].axes).reshape(2, len(METRIC_NAMES))
    styles = method_styles(METHODS)
    for r, L in enumerate((2, 3)):
        for c, m in enumerate(METRIC_NAMES):
            lines = axes[r][c].get_lines()
            for method in METHODS:
                y = means[(means["L"] == L) & (means["method"] == method)][m].to_numpy()
                line = [ln for ln in lines if ln.get_label() == method]
                if np.isfinite(y).any():
                    np.testing.assert_array_equal(line[0].get_xdata(), np.arange(N_BINS))
                    np.testing.assert_allclose(line[0].get_ydata(),
                                               np.where(np.isfinite(y), y, np.nan))
                else:
                    assert not line
                tri = [ln.get_xdata() for ln in lines if ln.get_marker() == cf.INF_MARKER
                       and ln.get_color() == styles[method]["color"]]
                tri_x = np.concatenate(tri) if tri else np.array([], dtype=int)
                np.testing.assert_array_equal(tri_x, np.flatnonzero(np.isinf(y)))


def test_one_L_with_empty_bins(coverage_run: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    one = tmp_path / "one"
    shutil.copytree(coverage_run, one)
    for f in (one / "rows").glob("*__L3__*"):
        f.unlink()
    rows = read_rows(one)
    assert rows["L"].unique().tolist() == [2]
    counts = _assert_counts_match_table3(one)
    assert (counts["n"] == 0).any()  # a bin with no samples
    result = build_report(one, figures=True, out=tmp_path / "report")
    assert {p.name for p in result.figures} >= FIGURE_FILES
    _valid_png(tmp_path / "report" / "figures" / f"{cf.METRICS_STEM}.png")
    figs = _captured(monkeypatch)
    cf.coverage_hist_figure(rows, tmp_path, skipped={2: 3})
    (ax,) = figs[0].axes
    assert [int(p.get_height()) for p in ax.patches] == counts["n"].tolist()
    assert "3 skipped by the sampler, not counted" in ax.get_title()
