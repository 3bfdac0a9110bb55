"""Benchmark-suite fixtures: the machine behind every figure, and shared synthetic trees.

Every benchmark's ``extra_info`` gets ``machine`` (CPU model, cores, torch threads and
version, CUDA device, 1-minute load average at the end of the case) and the report header
names the machine once. ``bench_tree`` / ``bench_cache`` are a small synthetic tree
(``crbench.synth``, the real layout) with a warm cloud-mask cache, shared by the modules.

Run: ``python -m pytest benchmarks --benchmark-enable --benchmark-json=results/bench/bench.json``
(or ``tox -e bench``); ``python -m pytest benchmarks`` is a quick smoke run with timing off.
``CRBENCH_BENCH_FULL=1`` adds the heavy full-size cases (minutes each on a CPU).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from benchutil import (
    FULL,
    FULL_ENV,
    benchmarks_enabled,
    load_average,
    machine,
    machine_line,
    warm_cache,
)

os.environ.setdefault("OMP_NUM_THREADS", "1")

TREE_SIZE = 64  # side of the shared tree's images (32 in a smoke run)
TREE_PATCHES = 2  # patches of the one (test-split) ROI: 60 S2 + 60 S1 images


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Header lines: the machine and which cases run."""
    mode = "timed" if benchmarks_enabled(config) else "smoke (timing off)"
    full = "on" if FULL else f"off ({FULL_ENV}=1 adds them)"
    return [f"crbench benchmarks on: {machine_line()}; load average {load_average()}",
            f"crbench benchmarks: {mode}; full-size cases {full}"]


@pytest.fixture(autouse=True)
def _record_machine(request: pytest.FixtureRequest):
    """Put the machine description into the extra_info of every benchmark case."""
    if "benchmark" not in request.fixturenames:
        yield
        return
    bench = request.getfixturevalue("benchmark")
    load_before = load_average()
    yield
    info = machine()
    info["loadavg_1min_before"] = load_before
    bench.extra_info["machine"] = info


@pytest.fixture(scope="session")
def enabled(pytestconfig: pytest.Config) -> bool:
    """True in a timed run (``--benchmark-enable``), False in a smoke run."""
    return benchmarks_enabled(pytestconfig)


@pytest.fixture(scope="session")
def bench_tree(tmp_path_factory: pytest.TempPathFactory, enabled: bool) -> Path:
    """One test-split ROI x 2 patches x 30 dates, 64 x 64 (``crbench.synth``, seed 0); 32 x 32
    in a smoke run."""
    from crbench.synth import synthesize

    root = tmp_path_factory.mktemp("bench_tree")
    synthesize(root, rois=1, patches=TREE_PATCHES, size=TREE_SIZE if enabled else 32, seed=0)
    return root


@pytest.fixture(scope="session")
def bench_cache(bench_tree: Path, tmp_path_factory: pytest.TempPathFactory):
    """A :class:`crbench.data.masks.MaskCache` of ``bench_tree`` holding every mask (warm)."""
    return warm_cache(bench_tree, tmp_path_factory.mktemp("bench_cache"))
