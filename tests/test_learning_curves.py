"""scripts/learning_curves.py: a few training steps per method on the session's tiny tree
give the PNG and the CSV of the plotted numbers; a method without validation points is left
out with its reason."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "learning_curves.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("learning_curves", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script()


def test_main_writes_png_and_csv(script: ModuleType, synth_root: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "curves"
    assert script.main(["--out", str(out), "--data", str(synth_root), "--methods",
                        "seq2point,stgan,no_such_method", "--steps", "seq2point=4,stgan=3",
                        "--val-every", "2", "--val-samples", "2"]) == 0
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    frame = pd.read_csv(out / "learning_curves.csv")
    assert list(frame.columns) == list(script.CSV_COLUMNS)
    learned = frame[frame["kind"] == "learned"]
    assert learned.groupby("method")["step"].apply(list).to_dict() == {
        "seq2point": [2, 4], "stgan": [2, 3]}
    assert learned["seconds"].notna().all() and (learned["val_nrmse_cloudy"] > 0).all()
    base = frame[frame["kind"] == "baseline"].set_index("method")
    assert set(base.index) == {"least_cloudy", "mosaicing"}
    assert base["step"].isna().all() and (base["val_nrmse_cloudy"] > 0).all()
    printed = capsys.readouterr().out
    assert "no_such_method left out (UsageError" in printed


def test_history_without_cloudy_scores_is_refused(script: ModuleType) -> None:
    old = pd.DataFrame({"iteration": [1, 2], "loss_clear": [0.5, 0.4], "val_psnr": [20, 21]})
    with pytest.raises(ValueError, match="no val_nrmse_cloudy column"):
        script.curve("seqdm", old)
    empty = old.assign(val_nrmse_cloudy=[float("nan")] * 2)
    with pytest.raises(ValueError, match="no val_nrmse_cloudy values"):
        script.curve("seqdm", empty)
    points = script.curve("seqdm", old.assign(val_nrmse_cloudy=[float("nan"), 0.2],
                                              seconds=[1.0, 2.0]))
    assert points[["step", "seconds", "val_nrmse_cloudy"]].values.tolist() == [[2, 2.0, 0.2]]
