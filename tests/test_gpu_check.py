"""scripts/gpu_check.py on a CPU (``--device cpu --smoke``), so that the GPU check cannot rot:
every section runs on tiny sizes and writes finite, positive figures; the device-vs-CPU
comparisons degrade to CPU-vs-CPU and must then agree exactly; what needs CUDA is skipped
with a reason. Each run is a fresh process, as on the GPU machine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from crbench.registry import method_names

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"
SECTIONS = ("env", "matmul", "seqdm_flops", "seqdm_train", "seqdm_precision", "seqdm_sampling",
            "learned", "metrics", "e2e", "seqdm_compile", "projection")


def _check(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def _numbers(x: Any) -> list[float]:
    """Every int and float in a nested JSON value (bools excluded)."""
    if isinstance(x, bool):
        return []
    if isinstance(x, (int, float)):
        return [float(x)]
    if isinstance(x, dict):
        return [v for item in x.values() for v in _numbers(item)]
    if isinstance(x, list):
        return [v for item in x for v in _numbers(item)]
    return []


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "check.json"
    res = _check("--device", "cpu", "--smoke", "--out", str(out), "--workdir", str(tmp / "w"))
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text()), res.stdout


@pytest.mark.slow
def test_smoke_runs_every_section(smoke: tuple[dict[str, Any], str]) -> None:
    data, stdout = smoke
    assert data["schema"] == "crbench.gpu_check/1"
    sections = data["sections"]
    assert tuple(sections) == SECTIONS
    assert {k: v["status"] for k, v in sections.items()} == dict.fromkeys(SECTIONS, "ok")
    assert sections["env"]["plan"]["smoke"] is True and sections["env"]["torch"]
    # the printed JSON summary (last line of stdout) is the file's summary
    assert json.loads(stdout.strip().splitlines()[-1]) == data["summary"]
    assert "seqdm_sampling" in stdout and "images_x_steps_per_s=" in stdout  # the table


@pytest.mark.slow
def test_smoke_figures_are_finite_and_positive(smoke: tuple[dict[str, Any], str]) -> None:
    data, _ = smoke
    s = data["sections"]
    assert s["matmul"]["peak_tflops"] > 0
    assert s["seqdm_flops"]["forward_flops_per_image"] > 0
    assert s["seqdm_flops"]["train_flops_per_sample"] > 2 * s["seqdm_flops"][
        "forward_flops_per_image"]  # two steps, each a forward and a backward pass
    train = s["seqdm_train"]["rows"]
    assert [(r["amp"], r["batch"]) for r in train] == [("fp32", 1), ("fp32", 2)]
    assert all(r["losses_finite"] and r["samples_per_s"] > 0 and r["fraction_of_peak"] > 0
               for r in train)
    sampling = s["seqdm_sampling"]["rows"]
    assert [(r["variant"], r["batch"]) for r in sampling] == [
        ("eager", 1), ("eager", 2), ("channels_last", 2)]
    for r in sampling + train + s["learned"]["rows"]:
        values = [v for k, v in r.items()
                  if k not in ("last_losses", "call_overhead_s") and not isinstance(v, str)]
        nums = _numbers(values)
        assert nums and all(math.isfinite(v) and v > 0 for v in nums), r
    assert all(r["call_overhead_s"] >= 0 for r in sampling)  # 0 when within timing noise
    assert s["seqdm_compile"]["rows"][0]["skipped"] == "not attempted (--smoke)"
    hours = s["projection"]["hours_by_steps"]
    # hours = images x steps / rate + the fixed cost of each call (once per batch)
    rate = s["projection"]["from"]["images_x_steps_per_s"]
    assert hours["1000"] - hours["50"] == pytest.approx(3800 * 3 * 950 / rate / 3600)
    assert hours["50"] > 0
    assert s["projection"]["images"] == 3800 * 3
    summary = data["summary"]
    assert summary["sampling_batch"] == 2 and summary["sampling_fraction_of_peak"] > 0
    assert summary["failed"] == []


@pytest.mark.slow
def test_smoke_cpu_vs_cpu_comparisons_agree(smoke: tuple[dict[str, Any], str]) -> None:
    data, _ = smoke
    s = data["sections"]
    assert s["metrics"]["against"] == "cpu (torch back end)"
    assert s["metrics"]["max_abs_diff_all"] < 1e-6
    e2e = s["e2e"]
    assert e2e["devices"] == ["cpu", "cpu"] and e2e["exit_codes"] == [0, 0]
    for method, cmp in e2e["compare"].items():
        assert cmp["rows"] > 0, method
        assert cmp["max_abs_diff"] == 0.0, method  # the same device twice: identical rows
        assert cmp["finite_mismatches"] == 0, method
    assert e2e["compare"]["least_cloudy"]["ok"] and e2e["compare"]["mosaicing"]["ok"]
    prec = s["seqdm_precision"]
    assert prec["fp16"]["nonfinite_modules"] == [] and prec["fp16"]["max_abs_activation"] > 0


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, built here (pip installs it without an index)."""
    path = folder / "gpucheckdemo-0.1-py3-none-any.whl"
    info = "gpucheckdemo-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("gpucheckdemo/__init__.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: gpucheckdemo\n"
                                       "Version: 0.1\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                    "Root-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def test_wheels_are_installed_before_the_check(tmp_path: Path) -> None:
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _wheel(wheels)
    site, out = tmp_path / "site", tmp_path / "c.json"
    res = _check("--device", "cpu", "--smoke", "--wheels", str(wheels), "--site", str(site),
                 "--out", str(out), "--budget-s", "0.001")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (site / "gpucheckdemo" / "__init__.py").is_file()
    data = json.loads(out.read_text())
    assert data["installed"] == [f"1 wheels into {site}"]
    sections = data["sections"]
    assert all(sections[k]["status"] == "skipped" for k in SECTIONS[:-1])
    assert sections["projection"]["skipped"] == "no sampling throughput was measured"


@pytest.mark.parametrize(("args", "message"), [
    (("--device", "tpu"), "--device: got 'tpu', expected cuda, cuda:N or cpu"),
    (("--budget-s", "0"), "--budget-s: got 0, expected seconds > 0"),
    (("--wheels", "{tmp}"), "--wheels: '{tmp}' holds no *.whl file"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...],
                                          message: str) -> None:
    args = tuple(a.format(tmp=tmp_path) for a in args)
    res = _check(*args, "--out", str(tmp_path / "c.json"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], res.stderr


def test_crbench_is_linked_where_pip_cannot_build_it(tmp_path: Path) -> None:
    """The fallback of --wheels: links to the source packages and the entry points of
    pyproject.toml, which the method registry reads."""
    import importlib.util

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as the script's fallback
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.link_crbench(tmp_path)
    assert (tmp_path / "crbench_methods" / "seqdm" / "__init__.py").is_file()
    assert (tmp_path / "crbench" / "registry.py").is_file()
    text = (tmp_path / "crbench-0.1.0.dist-info" / "entry_points.txt").read_text()
    methods = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][
        "crbench.methods"]
    assert "[crbench.methods]" in text
    assert all(f"{k} = {v}" in text for k, v in methods.items())
    assert set(methods) == set(method_names())  # every registered method, none left out
