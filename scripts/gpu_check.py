"""One-process check of crbench's CUDA paths, with the measured throughput (issue 15).

Usage::

    bash scripts/gpu_wheels.sh                         # here: wheels the GPU image lacks
    bash scripts/gpu_check.sh [--out FILE]             # there: installs them, then this
    python scripts/gpu_check.py --device cpu --smoke   # tiny sizes, seconds (the tests)

Sections, in order (each one's result is written to ``--out`` as soon as it ends, so a crash
or a time-out keeps what was measured; a section that fails is recorded and the rest run):

- ``env``: device, versions, date; ``matmul``: the dense bf16 matrix-multiply peak;
- ``seqdm_flops``: the U-Net's forward FLOPs (torch.utils.flop_counter);
- ``seqdm_train``: Algorithm 2 iterations (both optimiser steps) under fp16 autocast with a
  GradScaler and under bf16, batch 1/4/8, peak memory, achieved fraction of the peak;
- ``seqdm_precision``: the largest activation under fp16/bf16 (fp16 overflow headroom);
- ``seqdm_sampling``: images x steps / s at batch 1/8/32 and with channels_last, as a
  fraction of the peak;
- ``learned``: Seq2point and STGAN training steps and inference;
- ``metrics``: the metrics on the device against the CPU kernel (max abs difference);
- ``e2e``: ``crbench run`` of all methods on the device and on the CPU, rows compared;
- ``seqdm_compile``: sampling at batch 32 with the U-Net under torch.compile (last, as it
  can take minutes; skipped with a note if compile fails or too little time is left);
- ``projection``: device hours of Tables 1-3 at 1000/250/50 sampling steps.

``--device cpu`` degrades the device-vs-CPU comparisons to CPU-vs-CPU (the metrics: the torch
back end against the C kernel) and skips what needs CUDA with a reason. Exit status: 0, 1 if
a section failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "crbench.gpu_check/1"
DEFAULT_BUDGET_S = 330.0  # of the 6 minutes; what starts later is skipped
COMPILE_RESERVE_S = 150.0  # torch.compile starts only with this much of the budget left


class UsageProblem(Exception):
    """Bad command-line input: one line naming the option, the value and what is expected."""


# ---- wheels ------------------------------------------------------------------------------
def _pip(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
           "--no-compile", "--no-cache-dir", "--disable-pip-version-check", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _has_crbench_entry_points() -> bool:
    from importlib.metadata import entry_points

    return "seqdm" in {ep.name for ep in entry_points(group="crbench.methods")}


def install_wheels(wheels: Path, site: Path) -> list[str]:
    """``pip install --no-index --no-deps --target site`` every wheel in ``wheels``, then
    crbench itself (its entry points are the method registry) unless it is installed;
    ``site`` goes first on sys.path. Returns what was done, for the report."""
    done = []
    found = sorted(str(p) for p in wheels.glob("*.whl"))
    if not found:
        raise UsageProblem(f"--wheels: {str(wheels)!r} holds no *.whl file; run "
                           f"`bash scripts/gpu_wheels.sh` where the package index is reachable")
    site.mkdir(parents=True, exist_ok=True)
    res = _pip("--upgrade", "--target", str(site), *found)
    if res.returncode != 0:
        raise RuntimeError(f"pip could not install the wheels: {res.stderr.strip()[-800:]}")
    done.append(f"{len(found)} wheels into {site}")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    if not _has_crbench_entry_points():
        res = _pip("--no-build-isolation", "--target", str(site), str(REPO))
        if res.returncode == 0:
            done.append("crbench from the source tree")
        else:
            link_crbench(site)
            done.append(f"crbench linked (pip failed: {res.stderr.strip()[-300:]})")
        importlib.invalidate_caches()
    return done


def link_crbench(site: Path) -> None:
    """Without a build: ``site`` gets links to the two source packages and a dist-info with
    pyproject.toml's entry points (what the method registry reads)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for name, folder in (("crbench", "crbench"), ("crbench_methods", "methods")):
        link = site / name
        if not link.exists():
            link.symlink_to(REPO / folder, target_is_directory=True)
    info = site / f"crbench-{project['version']}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: crbench\n"
                                   f"Version: {project['version']}\n")
    groups = project.get("entry-points", {})
    text = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
                   for group, eps in groups.items())
    (info / "entry_points.txt").write_text(text)


# ---- sections ----------------------------------------------------------------------------
class Report:
    """The JSON summary, rewritten to ``path`` after every section."""

    def __init__(self, path: Path, plan: Any) -> None:
        self.path, self.plan, self.start = path, plan, time.perf_counter()
        self.data: dict[str, Any] = {"schema": SCHEMA, "sections": {}, "summary": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_jsonable(self.data), indent=2) + "\n")  # sections in order
        tmp.replace(self.path)

    def section(self, name: str, fn: Callable[[], dict[str, Any]], budget_s: float
                ) -> dict[str, Any] | None:
        """Run ``fn`` unless the budget is spent; record ok / skipped / failed."""
        if self.elapsed() > budget_s:
            self.data["sections"][name] = {"status": "skipped", "note": "time budget spent"}
            self.write()
            return None
        t0 = time.perf_counter()
        try:
            result = fn()
            entry = {"status": "ok", **result}
        except Exception as exc:  # recorded; the remaining sections still run
            result = None
            entry = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:800],
                     "traceback": traceback.format_exc()[-2000:]}
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        self.data["sections"][name] = entry
        self.write()
        return result


def _jsonable(x: Any) -> Any:
    """Non-finite floats as strings ("inf", "nan"): the file stays strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def run_sections(report: Report, budget_s: float, work: Path) -> None:
    """Every section in order; later ones use the earlier ones' numbers."""
    import gpu_check_lib as lib
    import gpu_check_pipeline as pipe

    plan = report.plan
    report.section("env", lambda: lib.measure_env(plan), budget_s)
    peak = report.section("matmul", lambda: lib.measure_matmul_peak(plan), budget_s) or {}
    peak_tflops = peak.get("peak_tflops")
    flops = report.section("seqdm_flops", lambda: lib.measure_seqdm_flops(plan), budget_s)
    if flops is None:
        flops = {"forward_flops_per_image": 0.0, "train_flops_per_sample": 0.0}
    report.section("seqdm_train", lambda: lib.measure_seqdm_train(plan, flops, peak_tflops),
                   budget_s)
    report.section("seqdm_precision", lambda: lib.measure_seqdm_precision(plan), budget_s)
    fwd = flops["forward_flops_per_image"]
    sampling = report.section("seqdm_sampling", lambda: lib.measure_seqdm_sampling(
        plan, fwd, peak_tflops), budget_s) or {"rows": []}
    report.section("learned", lambda: pipe.measure_learned(plan), budget_s)
    report.section("metrics", lambda: pipe.measure_metrics(plan), budget_s)
    report.section("e2e", lambda: pipe.measure_e2e(plan, work), budget_s)
    # compile last: its first call can take minutes; it starts only with that much left
    compiled = report.section("seqdm_compile", lambda: lib.measure_seqdm_compile(
        plan, fwd, peak_tflops), budget_s - COMPILE_RESERVE_S) or {"rows": []}
    both = {"rows": sampling["rows"] + compiled["rows"]}
    report.section("projection", lambda: pipe.project_tables(both), math.inf)  # arithmetic
    report.data["summary"] = summarise(report.data["sections"])


def summarise(sections: dict[str, Any]) -> dict[str, Any]:
    """The headline figures."""
    from gpu_check_pipeline import best_sampling

    env = sections.get("env", {})
    out: dict[str, Any] = {"device_name": env.get("device_name"), "date_utc": env.get("date_utc"),
                           "peak_tflops": sections.get("matmul", {}).get("peak_tflops"),
                           "failed": sorted(k for k, v in sections.items()
                                            if v.get("status") == "failed")}
    rows = [r for name in ("seqdm_sampling", "seqdm_compile")
            for r in sections.get(name, {}).get("rows", [])]
    best = best_sampling({"rows": rows})
    if best is not None:
        out.update(sampling_batch=best["batch"], sampling_variant=best["variant"],
                   sampling_images_x_steps_per_s=best["images_x_steps_per_s"],
                   sampling_fraction_of_peak=best.get("fraction_of_peak"))
    train = sections.get("seqdm_train", {}).get("rows", [])
    if train:
        fastest = max(train, key=lambda r: r["samples_per_s"])
        out["train_best"] = {k: fastest.get(k) for k in ("amp", "batch", "samples_per_s",
                                                           "fraction_of_peak", "peak_mem_gib")}
    hours = sections.get("projection", {}).get("hours_by_steps")
    if hours:
        out["tables_1_3_hours_by_steps"] = hours
    return out


# ---- table -------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def table(data: dict[str, Any]) -> str:
    """A human-readable summary: one line per section, then one per measured case."""
    lines = [f"crbench gpu_check ({data['sections'].get('env', {}).get('device_name')}), "
             f"{data.get('elapsed_s')} s"]
    keys = ("amp", "variant", "method", "batch", "seconds_per_iteration", "samples_per_s",
            "images_x_steps_per_s", "call_overhead_s", "train_step_s", "inference_samples_per_s",
            "fraction_of_peak", "peak_mem_gib", "grad_scale", "skipped")
    for name, sec in data["sections"].items():
        extra = sec.get("error") or sec.get("note") or sec.get("skipped") or ""
        lines.append(f"{name:16s} {sec['status']:8s} {sec.get('seconds', 0):8.2f} s  {extra}")
        for row in sec.get("rows", []) if isinstance(sec.get("rows"), list) else []:
            cells = "  ".join(f"{k}={_fmt(row[k])}" for k in keys if k in row)
            lines.append(f"    {cells}")
    for k, v in data.get("summary", {}).items():
        lines.append(f"summary {k}: {_fmt(v)}")
    return "\n".join(lines)


# ---- command line ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--smoke", action="store_true", help="tiny presets and sizes (seconds)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="JSON summary (default results/bench/gpu_check-<device>.json)")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, metavar="S",
                   help=f"no section starts after S seconds (default {DEFAULT_BUDGET_S:g})")
    p.add_argument("--wheels", type=Path, default=None, metavar="DIR",
                   help="pip install --no-index these wheels (scripts/gpu_wheels.sh) first")
    p.add_argument("--site", type=Path, default=Path(tempfile.gettempdir()) / "crbench-site",
                   metavar="DIR", help="where --wheels installs to (default: $TMP/crbench-site)")
    p.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                   help="scratch folder of the end-to-end run (default: a temporary one)")
    return p


def _device(arg: str | None) -> str:
    import torch

    name = arg or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageProblem(f"--device: got {name!r}, expected cuda, cuda:N or cpu") from None
    if dev.type not in ("cuda", "cpu"):
        raise UsageProblem(f"--device: got {name!r}, expected cuda, cuda:N or cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageProblem(f"--device: got {name!r}, but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use --device cpu")
    return name


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.budget_s <= 0:
            raise UsageProblem(f"--budget-s: got {args.budget_s:g}, expected seconds > 0")
        installed = install_wheels(args.wheels, args.site) if args.wheels else []
        device = _device(args.device)
    except UsageProblem as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # pip failed: nothing measured
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 1
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_check_lib as lib

    plan = lib.make_plan(device, args.smoke)
    kind = device.split(":")[0]
    out = args.out or REPO / "results" / "bench" / f"gpu_check-{kind}{'-smoke' * args.smoke}.json"
    report = Report(out, plan)
    report.data["installed"] = installed
    work = args.workdir or Path(tempfile.mkdtemp(prefix="crbench-gpu-check-"))
    try:
        run_sections(report, args.budget_s, work)
    finally:
        report.write()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(report.data))
    print(json.dumps(_jsonable(report.data["summary"]), sort_keys=True))
    print(f"gpu_check: full results in {out}", file=sys.stderr)
    return 1 if report.data["summary"].get("failed") else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
