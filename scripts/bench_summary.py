"""Markdown summary of a pytest-benchmark run, for the README's Performance section.

Usage::

    python scripts/bench_summary.py [results/bench/bench.json] [--out FILE]

Reads the JSON written by ``tox -e bench`` (``python -m pytest benchmarks --benchmark-enable
--benchmark-json=results/bench/bench.json``) and prints two Markdown tables: every benchmark
with its mean time, its key figures (ratios measured side by side, throughputs, peak memory)
and the machine it ran on (from the ``machine`` entry that ``benchmarks/conftest.py`` puts in
each case's extra_info); then one row per method and preset with inference samples/s,
training-step time and peak memory. Exit status 2 (one line on stderr) if the file is missing
or is not a pytest-benchmark JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT = Path("results/bench/bench.json")

# extra_info key -> label, in the order shown in the "key figures" column
KEY_FIGURES: tuple[tuple[str, str], ...] = (
    ("speedup", "speedup"), ("cpu_speedup", "CPU-time speedup"),
    ("speedup_warm_vs_cold", "warm/cold speedup"),
    ("speedup_warm_vs_compute", "warm/compute speedup"),
    ("speedup_2_vs_1", "2/1 workers speedup"),
    ("images_per_s_1_worker", "img/s 1 worker"), ("images_per_s_2_workers", "img/s 2 workers"),
    ("crbench_samples_per_s", "crbench samples/s"), ("toolbox_samples_per_s", "toolbox samples/s"),
    ("images_x_steps_per_s", "images x steps/s"), ("seconds_per_step", "s/step"),
    ("samples_per_s", "samples/s"), ("step_s", "s/step"),
    ("sampling_overhead_vs_network", "step/forward"), ("x_mosaicing", "x mosaicing"),
    ("peak_mem_mib", "peak MiB"), ("required_speedup", "required"),
)
SHAPE_KEYS = ("preset", "image_side", "batch", "steps", "torch_threads", "backend")


class SummaryError(Exception):
    """The input cannot be summarised (the message says why)."""


def fmt(value: object) -> str:
    """Numbers to 3 significant digits (integers and large values without exponent)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e6:
            digits = max(0, 2 - int(f"{abs(value):e}".split("e")[1])) if value else 0
            return f"{value:,.{digits}f}"
        return f"{value:.3g}"
    return str(value)


def fmt_seconds(seconds: float) -> str:
    """Seconds in s, ms or µs."""
    if seconds >= 1:
        return f"{fmt(seconds)} s"
    if seconds >= 1e-3:
        return f"{fmt(seconds * 1e3)} ms"
    return f"{fmt(seconds * 1e6)} µs"


def machine_short(info: dict | None) -> str:
    """E.g. ``AMD EPYC, 2 cores, 2 threads, CPU, load 3.3``."""
    if not info:
        return "?"
    where = f"CUDA {info['cuda_device']}" if info.get("cuda_device") else "CPU"
    load = info.get("loadavg_1min")
    return (f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores, "
            f"{info.get('torch_threads', '?')} threads, {where}"
            + (f", load {load:.1f}" if isinstance(load, (int, float)) else ""))


def machine_long(info: dict | None) -> str:
    """The full machine description of a run."""
    if not info:
        return "unknown machine"
    gpu = f"CUDA device {info['cuda_device']}" if info.get("cuda_device") else "no CUDA device"
    return (f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores, torch "
            f"{info.get('torch', '?')} ({info.get('torch_threads', '?')} threads), {gpu}, "
            f"Python {info.get('python', '?')}")


def key_figures(extra: dict) -> str:
    """The case's shape and its main figures, ``; ``-separated."""
    shape = [f"{k}={extra[k]}" for k in SHAPE_KEYS if k in extra and extra[k] not in (None, "-")]
    seen: set[str] = set()
    figures = []
    for key, label in KEY_FIGURES:
        if key in extra and extra[key] is not None and label not in seen:
            seen.add(label)
            figures.append(f"{label} {fmt(extra[key])}")
    return "; ".join([", ".join(shape), *figures] if shape else figures)


def load(path: Path) -> list[dict]:
    """The ``benchmarks`` list of a pytest-benchmark JSON file.

    Raises:
        SummaryError: missing or unreadable file, or no ``benchmarks`` list.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SummaryError(f"{path}: no such file; run `tox -e bench` (or python -m pytest "
                           "benchmarks --benchmark-enable --benchmark-json=results/bench/"
                           "bench.json) first") from None
    except (OSError, json.JSONDecodeError) as err:
        raise SummaryError(f"{path}: not readable as JSON ({err})") from None
    benches = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benches, list):
        raise SummaryError(f"{path}: no 'benchmarks' list; expected a pytest-benchmark JSON "
                           "(--benchmark-json)")
    return benches


def benchmark_table(benches: list[dict]) -> list[str]:
    """One row per benchmark case."""
    lines = ["| benchmark | mean time | key figures | machine |", "|---|---|---|---|"]
    for b in benches:
        extra = b.get("extra_info", {})
        name = b.get("fullname", b.get("name", "?")).replace("benchmarks/", "")
        lines.append(f"| `{name}` | {fmt_seconds(b['stats']['mean'])} | "
                     f"{key_figures(extra) or '-'} | {machine_short(extra.get('machine'))} |")
    return lines


def methods_table(benches: list[dict]) -> list[str]:
    """Per method and preset: inference samples/s, training step, peak memory."""
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for b in benches:
        extra = b.get("extra_info", {})
        if "method" not in extra:
            continue
        row = rows.setdefault((extra["method"], str(extra.get("preset", "-"))), {})
        if "step_s" in extra:
            opt = extra.get("optimizer_steps_per_iteration")
            opt = f", {opt} optimizer steps" if opt else ""
            row.update(train=f"{fmt(extra['step_s'])} s (batch {extra.get('batch')}, "
                             f"{extra.get('image_side')} px{opt})",
                       train_mem=fmt(extra.get("peak_mem_mib")))
        elif "samples_per_s" in extra:
            steps = f", {extra['steps']} steps" if "steps" in extra else ""
            row.update(infer=f"{fmt(extra['samples_per_s'])} (batch {extra.get('batch')}, "
                             f"{extra.get('image_side')} px{steps})",
                       infer_mem=fmt(extra.get("peak_mem_mib")))
    lines = ["| method | preset | inference samples/s | peak MiB (inference) | "
             "training step | peak MiB (training) |", "|---|---|---|---|---|---|"]
    for (method, preset), row in rows.items():
        lines.append(f"| {method} | {preset} | {row.get('infer', '-')} | "
                     f"{row.get('infer_mem', '-')} | {row.get('train', '-')} | "
                     f"{row.get('train_mem', '-')} |")
    return lines


def summarize(benches: list[dict]) -> str:
    """The whole Markdown summary."""
    machines = {machine_long(b.get("extra_info", {}).get("machine")) for b in benches}
    out = [f"Machine: {m}." for m in sorted(machines)]
    out += ["", *benchmark_table(benches)]
    methods = methods_table(benches)
    if len(methods) > 2:
        out += ["", *methods]
    out += ["", "Peak memory: CUDA `max_memory_allocated`, on CPU the peak resident-set growth "
                "during the call. Load = 1-minute load average at the end of the case."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print (or write) the summary; 0 on success, 2 on a bad input file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="?", type=Path, default=DEFAULT,
                        help=f"pytest-benchmark JSON (default {DEFAULT})")
    parser.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = parser.parse_args(argv)
    try:
        text = summarize(load(args.json))
    except SummaryError as err:
        print(f"bench_summary: {err}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
