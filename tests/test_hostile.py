"""Hostile inputs (issue 17): every bad file or argument gives exit 2, one line on stderr that
names the argument or the file, no traceback, and leaves no partial output behind.

Each case builds its bad input on a copy of a tiny synthetic tree (the project's generator)
and runs the CLI in-process through :func:`crbench.cli.main.main`.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from crbench.cli.main import main

TEST_ROI = "ROIs1868/119"  # the test split's ROI in a 3-ROI synthetic tree


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-ROI tree (test, train, val; 2 patches, 64 px, seed 1) with its mask cache, a
    finished run of least_cloudy and tiny checkpoints of seq2point (L=3) and seqdm."""
    from crbench.synth import synthesize

    top = tmp_path_factory.mktemp("hostile")
    synthesize(top / "d", rois=3, patches=2, size=64, seed=1)
    for argv in (["data", "masks", str(top / "d"), "--no-progress"],
                 ["train", "seq2point", "--data", str(top / "d"), "--L", "3", "--out",
                  str(top / "ck/seq2point/L3"), "--preset", "tiny", "--steps", "2",
                  "--no-progress"],
                 ["train", "seqdm", "--data", str(top / "d"), "--L", "3", "--out",
                  str(top / "ck/seqdm"), "--preset", "tiny", "--steps", "2", "--no-progress"],
                 ["run", "--data", str(top / "d"), "--methods", "least_cloudy", "--L", "3",
                  "--out", str(top / "R"), "--no-progress"]):
        assert main(argv) == 0, argv
    return top


def _date_file(d: Path, mod: str = "S2", t: int = 5, patch: int = 0) -> Path:
    return next((d / TEST_ROI / mod / str(t)).glob(f"*_patch_{patch}.tif"))


# ----------------------------------------------------------------------------- set-ups
# Each takes the case's working directory (holding copies d/, ck/, R/) and returns the
# command line; what it must name and must not leave behind is in the table below.


def date_dir_is_file(w: Path) -> None:
    shutil.rmtree(w / "d" / TEST_ROI / "S2/5")
    (w / "d" / TEST_ROI / "S2/5").write_text("")


def date_dir_loop(w: Path) -> None:
    shutil.rmtree(w / "d" / TEST_ROI / "S2/5")
    (w / "d" / TEST_ROI / "S2/5").symlink_to("5")


def tif_is_dir(w: Path) -> None:
    f = _date_file(w / "d")
    f.unlink()
    f.mkdir()


def tif_dangling(w: Path) -> None:
    f = _date_file(w / "d")
    f.unlink()
    f.symlink_to(w / "nowhere.tif")


def impossible_day(w: Path) -> None:
    f = _date_file(w / "d")
    f.rename(f.with_name(re.sub(r"\d{4}-\d{2}-\d{2}", "2018-02-30", f.name)))


def huge_patch(w: Path) -> None:
    for f in (w / "d" / TEST_ROI).glob("S?/*/*_patch_0.tif"):
        f.rename(f.with_name(f.name.replace("_patch_0", "_patch_12345678901234567890")))


def duplicate_patch(w: Path) -> None:
    f = _date_file(w / "d")
    shutil.copy2(f, f.with_name(f.name.replace("_patch_0", "_patch_00")))


def cache_dir_file(w: Path) -> None:
    (w / "cf").write_text("")


def truncated_weights(w: Path) -> None:
    with open(w / "ck/seq2point/L3/model.safetensors", "r+b") as fh:
        fh.truncate(100)


def truncated_trainer(w: Path) -> None:
    with open(w / "ck/seqdm/trainer.pt", "r+b") as fh:
        fh.truncate(100)


def pickled_trainer(w: Path) -> None:
    with open(w / "ck/seqdm/trainer.pt", "wb") as fh:
        pickle.dump({"step": 1, "x": {1, 2}}, fh)


def config_list(w: Path) -> None:
    for c in ("ck/seq2point/L3/config.json", "ck/seqdm/config.json"):
        (w / c).write_text("[1, 2]")


def manifest_config_null(w: Path) -> None:
    path = w / "R/manifest.json"
    doc = json.loads(path.read_text())
    doc["config"] = None
    path.write_text(json.dumps(doc))


def broken_s1(w: Path) -> None:
    for f in (w / "d" / TEST_ROI).glob("S1/*/*_patch_0.tif"):
        f.write_text("junk")


def existing_file(w: Path) -> None:
    (w / "ofile").write_text("")


def existing_dir(w: Path) -> None:
    (w / "odir").mkdir()


def baseline_other_method(w: Path) -> None:
    doc = {"crbench_baseline": 1, "metrics": {"mosaicing": {"3": {"n": 1, "psnr": 20.0}}}}
    (w / "b.json").write_text(json.dumps(doc))


def _rewrite(w: Path, mod: str, convert: Callable[[np.ndarray], np.ndarray]) -> None:
    import rasterio

    for f in (w / "d" / TEST_ROI).glob(f"{mod}/*/*.tif"):
        with rasterio.open(f) as src:
            arr, profile = src.read(), src.profile
        out = convert(arr.astype(np.float64))
        profile.update(dtype=out.dtype.name)
        with rasterio.open(f, "w", **profile) as dst:
            dst.write(out)


def s2_reflectance(w: Path) -> None:
    _rewrite(w, "S2", lambda a: (a / 10000.0).astype(np.float32))


def s2_uint8(w: Path) -> None:
    _rewrite(w, "S2", lambda a: np.clip(a / 40.0, 0, 255).astype(np.uint8))


def s1_linear(w: Path) -> None:
    _rewrite(w, "S1", lambda a: (10.0 ** (a / 10.0)).astype(np.float32))


def nothing(w: Path) -> None:
    pass


@dataclass(frozen=True)
class Case:
    """One hostile input: set-up, command line ({w} = the case's directory), the text the
    stderr line must hold, and paths (relative to {w}) that must not exist afterwards."""

    setup: Callable[[Path], None]
    argv: str
    names: tuple[str, ...]
    absent: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = field(default=())


_RUN = "run --data {w}/d --methods least_cloudy --L 3 --out {w}/R2 --no-progress"
_INDEX = "data index {w}/d --split test --L 3 --out {w}/i.csv --no-progress"
_MASKS = "data masks {w}/d --no-progress"
_TRAIN = ("train seq2point --data {w}/d --L 3 --out {w}/ck2 --preset tiny --steps 2 "
          "--no-progress")
_RESUME = "train seqdm --data {w}/d --L 3 --out {w}/ck/seqdm --steps 4 --resume --no-progress"
_RUN_S2P = ("run --data {w}/d --methods seq2point --L 3 --checkpoints {w}/ck --out {w}/R2 "
            "--no-progress")
_CKPT = ("ck/seqdm/model.safetensors", "ck/seqdm/history.csv")

CASES: dict[str, Case] = {
    "date dir is a file: index": Case(date_dir_is_file, _INDEX, ("S2/5", "not a directory"),
                                      ("i.csv",)),
    "date dir is a file: run": Case(date_dir_is_file, _RUN, ("S2/5", "not a directory"),
                                    ("R2",)),
    "date dir is a file: masks": Case(date_dir_is_file, _MASKS, ("S2/5", "not a directory")),
    "date dir loop: index": Case(date_dir_loop, _INDEX, ("S2/5", "symbolic links"),
                                 ("i.csv",)),
    "date dir loop: run": Case(date_dir_loop, _RUN, ("S2/5", "symbolic links"), ("R2",)),
    "date dir loop: masks": Case(date_dir_loop, _MASKS, ("S2/5", "symbolic links")),
    "tif is a directory: index": Case(tif_is_dir, _INDEX, ("patch_0.tif", "is a directory"),
                                      ("i.csv",)),
    "tif is a directory: run": Case(tif_is_dir, _RUN, ("patch_0.tif", "is a directory"),
                                    ("R2",)),
    "tif dangling link: run": Case(tif_dangling, _RUN, ("patch_0.tif", "broken symbolic link",
                                                        "nowhere.tif"), ("R2",)),
    "impossible date: run": Case(impossible_day, _RUN, ("2018-02-30_patch_0.tif",
                                                        "not a calendar date"), ("R2",)),
    "impossible date: index": Case(impossible_day, _INDEX, ("2018-02-30_patch_0.tif",),
                                   ("i.csv",)),
    "20-digit patch: run": Case(huge_patch, _RUN, ("patch_12345678901234567890.tif",
                                                   "patch number"), ("R2",)),
    "duplicate patch: index": Case(duplicate_patch, _INDEX, ("_patch_0.tif", "_patch_00.tif"),
                                   ("i.csv",)),
    "duplicate patch: run": Case(duplicate_patch, _RUN, ("_patch_0.tif", "_patch_00.tif"),
                                 ("R2",)),
    "masks --cache-dir FILE": Case(cache_dir_file, _MASKS + " --cache-dir {w}/cf",
                                   ("--cache-dir", "cf")),
    "truncated model.safetensors": Case(truncated_weights, _RUN_S2P,
                                        ("model.safetensors", "not a valid crbench checkpoint"),
                                        ("R2",)),
    "truncated trainer.pt": Case(truncated_trainer, _RESUME,
                                 ("trainer.pt", "not a valid crbench trainer state"),
                                 unchanged=_CKPT),
    "pickled trainer.pt": Case(pickled_trainer, _RESUME,
                               ("trainer.pt", "not a valid crbench trainer state"),
                               unchanged=_CKPT),
    "config.json a list: run": Case(config_list, _RUN_S2P, ("config.json", "JSON object"),
                                    ("R2",)),
    "config.json a list: resume": Case(config_list, _RESUME, ("config.json", "JSON object"),
                                       unchanged=_CKPT),
    "manifest config null": Case(manifest_config_null, _RUN.replace("R2", "R"),
                                 ("manifest.json", "config"), unchanged=("R/manifest.json",)),
    "train --set channels=-4": Case(nothing, _TRAIN + " --set channels=-4",
                                    ("--set", "channels"), ("ck2",)),
    "train --out a file": Case(existing_file, _TRAIN.replace("ck2", "ofile"),
                               ("--out", "ofile", "is a file")),
    "train --batch-size 0": Case(nothing, _TRAIN + " --batch-size 0", ("--batch-size", "0"),
                                 ("ck2",)),
    "train --workers -1": Case(nothing, _TRAIN + " --workers -1", ("--workers", "-1"),
                               ("ck2",)),
    "train --data missing": Case(nothing, _TRAIN.replace("{w}/d", "{w}/nod"),
                                 ("--data", "nod"), ("ck2",)),
    "index --out a directory": Case(existing_dir, _INDEX.replace("i.csv", "odir"),
                                    ("--out", "odir", "is a directory")),
    "index --min-cov 2": Case(nothing, _INDEX + " --min-cov 2", ("--min-cov", "2"),
                              ("i.csv",)),
    "index --import-pairs missing": Case(nothing, _INDEX + " --import-pairs {w}/no.npy",
                                         ("--import-pairs", "no.npy", "does not exist"),
                                         ("i.csv",)),
    "run --data missing": Case(nothing, _RUN.replace("{w}/d", "{w}/nod"), ("--data", "nod"),
                               ("R2",)),
    "run --workers -1": Case(nothing, _RUN + " --workers -1", ("--workers", "-1"), ("R2",)),
    "check --baseline DIR": Case(existing_dir, "check --results {w}/R --baseline {w}/odir",
                                 ("--baseline", "odir", "is a directory")),
    "check --baseline DIR --write": Case(existing_dir, "check --results {w}/R --baseline "
                                         "{w}/odir --write",
                                         ("--baseline", "odir", "is a directory")),
    "check baseline of other methods": Case(baseline_other_method,
                                            "check --results {w}/R --baseline {w}/b.json",
                                            ("--baseline", "b.json", "no method/L")),
    "S2 as reflectance 0..1: run": Case(s2_reflectance, _RUN, ("--allow-odd-values", "S2"),
                                        ("R2",)),
    "S2 as uint8: run": Case(s2_uint8, _RUN, ("--allow-odd-values", "uint8"), ("R2",)),
    "S1 in linear units: run": Case(s1_linear, _RUN, ("--allow-odd-values", "S1", "dB"),
                                    ("R2",)),
}


@pytest.fixture
def work(base: Path, tmp_path: Path) -> Path:
    """A copy of the base tree, checkpoints and run for one case."""
    for name in ("d", "ck", "R"):
        shutil.copytree(base / name, tmp_path / name, symlinks=True)
    return tmp_path


def _snapshot(w: Path, paths: tuple[str, ...]) -> dict[str, bytes]:
    return {p: (w / p).read_bytes() for p in paths}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_gives_one_line_and_exit_2(name: str, work: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 recwarn: pytest.WarningsRecorder) -> None:
    case = CASES[name]
    case.setup(work)
    before = _snapshot(work, case.unchanged)
    capsys.readouterr()
    code = main(case.argv.format(w=work).split())
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in case.names:
        assert text in lines[0], (text, lines[0])
    assert "weights_only" not in err  # never advise loading a pickle unsafely
    for path in case.absent:
        assert not (work / path).exists(), f"{path} left behind"
    assert _snapshot(work, case.unchanged) == before
    shown = [w for w in recwarn.list if issubclass(w.category, (UserWarning, RuntimeWarning))]
    assert not shown, [str(w.message) for w in shown]  # a warning is a second line on stderr


def test_broken_s1_in_a_worker_gives_the_original_message(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A DataError in a DataLoader worker: the file's one-line message, not the worker's
    traceback (rows computed before it are kept, so the run dir may exist)."""
    broken_s1(work)
    code = main([*_RUN.format(w=work).split(), "--workers", "1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 2, err
    assert len(errors) == 1 and "Traceback" not in err and "DataLoader worker" not in err, err
    assert "s1_ROIs1868_119_ImgNo_" in errors[0] and "unreadable GeoTIFF" in errors[0]


def test_odd_values_pass_with_the_flag(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--allow-odd-values runs a tree whose S2 is reflectance 0..1."""
    s2_reflectance(work)
    assert main([*_RUN.format(w=work).split(), "--allow-odd-values"]) == 0
    assert (work / "R2" / "manifest.json").is_file()


@pytest.mark.parametrize("name", ["pickled trainer.pt", "masks --cache-dir FILE",
                                  "date dir loop: run", "S1 in linear units: run"])
def test_hostile_input_as_a_process_prints_one_line(name: str, work: Path) -> None:
    """The same cases as a separate process: what reaches the terminal (warnings included)
    is one line, and the exit status is 2."""
    import os
    import subprocess
    import sys

    case = CASES[name]
    case.setup(work)
    cmd = [sys.executable, "-m", "crbench.cli.main", *case.argv.format(w=work).split()]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                          check=False, cwd=work)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert all(text in proc.stderr for text in case.names), proc.stderr
