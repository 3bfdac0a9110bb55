"""`crbench check`: baseline file, tolerances, regressions, missing entries, exit codes; a
deliberately worse method (a real plugin run by the real runner) fails the check."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plugin_fixture.fixture_dist import install_dist

from crbench.check import (
    BASELINE_KEY,
    DEFAULT_TOLERANCES,
    check_results,
    load_baseline,
    write_baseline,
)
from crbench.cli.main import main
from crbench.errors import UsageError
from crbench.metrics import METRIC_NAMES
from crbench.runner import read_rows


def _rows(Ls: tuple[int, ...] = (3, 4), n: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    recs = []
    for L in Ls:
        for s in range(n):
            for method, q in (("least_cloudy", 0.12), ("mosaicing", 0.08)):
                e = q * (1 + rng.random())
                recs.append({"method": method, "L": L, "split": "test", "roi": "ROIs1868/119",
                             "patch": s, "input_idx": ";".join(map(str, range(L))),
                             "target_idx": 25, "coverage": rng.random(), "nrmse_all": e,
                             "nrmse_cloudy": 1.5 * e, "nrmse_clear": 0.5 * e,
                             "psnr": 20 * np.log10(1 / e), "ssim": 1 - e, "sam": 2 * e,
                             "seconds": 0.01})
    return pd.DataFrame(recs)


def _write(run: Path, rows: pd.DataFrame) -> Path:
    (run / "rows").mkdir(parents=True, exist_ok=True)
    rows.to_csv(run / "rows" / "all__shard1of1.csv", index=False, na_rep="nan")
    (run / "manifest.json").write_text(json.dumps({"config": {"split": "test"}}))
    return run


def test_baseline_file_format(tmp_path: Path) -> None:
    rows = _rows()
    path = write_baseline(_write(tmp_path / "a", rows), tmp_path / "b" / "base.json",
                          tolerances={"psnr": 0.5})
    doc = json.loads(path.read_text())
    assert doc[BASELINE_KEY] == 1 and "created" in doc and doc["config"]["L"] == [3, 4]
    assert doc["tolerances"] == {**DEFAULT_TOLERANCES, "psnr": 0.5}
    means = rows.groupby(["method", "L"])[list(METRIC_NAMES)].mean()
    for (method, L), row in means.iterrows():
        entry = doc["metrics"][method][str(L)]
        assert entry["n"] == 6
        for m in METRIC_NAMES:
            assert entry[m] == pytest.approx(row[m], rel=1e-12)


def test_same_results_pass_and_tolerance_is_respected(tmp_path: Path) -> None:
    rows = _rows()
    base = write_baseline(_write(tmp_path / "a", rows), tmp_path / "base.json")
    assert check_results(tmp_path / "a", base).ok
    # psnr a little lower (within tolerance) and ssim better: still fine, improvement listed
    tol = DEFAULT_TOLERANCES["psnr"]
    close = rows.assign(psnr=rows["psnr"] - tol / 2, ssim=rows["ssim"] + 0.01)
    report = check_results(_write(tmp_path / "b", close), base)
    assert report.ok and not report.regressions
    assert {(f.metric, f.method) for f in report.improvements} == {
        ("ssim", "least_cloudy"), ("ssim", "mosaicing")}
    # nrmse_all higher (lower is better) beyond tolerance in one method at one L: regression
    worse = rows.copy()
    sel = (worse["method"] == "mosaicing") & (worse["L"] == 4)
    worse.loc[sel, "nrmse_all"] += 0.01
    report = check_results(_write(tmp_path / "c", worse), base)
    assert not report.ok
    assert [(f.method, f.L, f.metric) for f in report.regressions] == [("mosaicing", 4,
                                                                        "nrmse_all")]
    f = report.regressions[0]
    assert f.value == pytest.approx(worse.loc[sel, "nrmse_all"].mean(), rel=1e-12)
    assert "mosaicing L=4 nrmse_all" in report.failures()[0]


def test_missing_entries_and_count_changes_fail(tmp_path: Path) -> None:
    rows = _rows()
    base = write_baseline(_write(tmp_path / "a", rows), tmp_path / "base.json")
    only3 = rows[(rows["L"] == 3) & ~((rows["method"] == "mosaicing") & (rows["patch"] == 5))]
    report = check_results(_write(tmp_path / "b", only3), base)
    assert not report.ok
    assert any(m.startswith("least_cloudy L=4 is in the baseline but not in the results")
               for m in report.missing)
    assert any("mosaicing L=3: 5 samples evaluated, baseline 6" in c
               for c in report.count_changes)
    extra = pd.concat([rows, rows[rows["L"] == 3].assign(L=5)])
    assert check_results(_write(tmp_path / "c", extra), base).unchecked == [
        "least_cloudy L=5", "mosaicing L=5"]


def test_undefined_metric_now_is_a_regression(tmp_path: Path) -> None:
    rows = _rows()
    base = write_baseline(_write(tmp_path / "a", rows), tmp_path / "base.json")
    nan = rows.assign(nrmse_cloudy=np.where(rows["method"] == "mosaicing", np.nan,
                                            rows["nrmse_cloudy"]))
    report = check_results(_write(tmp_path / "b", nan), base)
    assert {(f.method, f.metric) for f in report.regressions} == {("mosaicing", "nrmse_cloudy")}


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist; create it with"),
    ("{not json", "is not valid JSON"),
    ('{"metrics": {}}', 'is not a crbench baseline; expected a JSON object with "crbench_'),
    ('{"crbench_baseline": 1, "metrics": {"m": {"3": {"psnrr": 1}}}}', "unknown keys"),
    ('{"crbench_baseline": 1, "metrics": {}, "tolerances": {"psnr": "x"}}',
     "tolerance of psnr is 'x'; expected a number"),
])
def test_bad_baseline_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=re.escape(message)):
        load_baseline(path)


def test_cli_write_check_and_usage_errors(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = _write(tmp_path / "a", _rows())
    base = tmp_path / "baseline" / "ci.json"
    assert main(["check", "--results", str(run), "--baseline", str(base), "--write",
                 "--tolerance", "psnr=0.1"]) == 0
    assert json.loads(base.read_text())["tolerances"]["psnr"] == 0.1
    assert main(["check", "--results", str(run), "--baseline", str(base)]) == 0
    assert ": OK;" in capsys.readouterr().out
    assert main(["check", "--results", str(run), "--baseline", str(base), "--write",
                 "--tolerance", "psnr"]) == 2
    assert "--tolerance: 'psnr' is not METRIC=VALUE" in capsys.readouterr().err
    assert main(["check", "--results", str(run), "--baseline", str(tmp_path / "x.json")]) == 2
    assert "--baseline:" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real runner

PLUGIN = '''"""Test plugin for crbench check: mosaicing, and a deliberately worse variant."""
from crbench_methods.mosaicing import Mosaicing


class Good(Mosaicing):
    name = "candidate"


class Worse(Mosaicing):
    name = "candidate"

    def predict(self, inputs):
        return (0.8 * super().predict(inputs) + 0.1).clamp(0.0, 1.0)
'''


def test_worse_method_fails_the_check(synth_root: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "crbench_check_candidate.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "crbench_check_candidate", raising=False)
    info = install_dist(site, "crbench-check-candidate", None,
                        {"candidate": "crbench_check_candidate:Good"})
    base = tmp_path / "baseline.json"

    def run(out: Path) -> Path:
        assert main(["run", "--data", str(synth_root), "--methods", "candidate", "--L", "2",
                     "3", "--out", str(out), "--no-progress"]) == 0
        return out

    good = run(tmp_path / "good")
    assert main(["check", "--results", str(good), "--baseline", str(base), "--write"]) == 0
    assert main(["check", "--results", str(good), "--baseline", str(base)]) == 0
    # the same method name now resolves to the worse implementation
    (info / "entry_points.txt").write_text(
        "[crbench.methods]\ncandidate = crbench_check_candidate:Worse\n")
    worse = run(tmp_path / "worse")
    capsys.readouterr()
    assert main(["check", "--results", str(worse), "--baseline", str(base)]) == 1
    err = capsys.readouterr().err
    good_rows, worse_rows = read_rows(good), read_rows(worse)
    for L in (2, 3):
        was = good_rows.loc[good_rows["L"] == L, "psnr"].mean()
        now = worse_rows.loc[worse_rows["L"] == L, "psnr"].mean()
        assert now < was - DEFAULT_TOLERANCES["psnr"]
        line = next(x for x in err.splitlines() if f"candidate L={L} psnr:" in x)
        value, baseline = map(float, re.findall(r"psnr: (\S+) vs baseline (\S+) ", line)[0])
        assert value == pytest.approx(now, rel=1e-5)
        assert baseline == pytest.approx(was, rel=1e-5)
        assert "higher is better" in line
