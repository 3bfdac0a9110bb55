"""Helpers shared by the benchmark modules: machine description, opt-in flags, peak memory.

Imported by ``benchmarks/conftest.py`` and the ``test_bench_*`` modules (pytest puts this
directory on ``sys.path``; the module name is unique on purpose).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

FULL_ENV = "CRBENCH_BENCH_FULL"
FULL = os.environ.get(FULL_ENV) == "1"  # heavy full-size cases, opt-in
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CPU = DEVICE.type == "cpu"


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    """1-minute load average (other work on a shared machine), or None if unknown."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def machine() -> dict[str, object]:
    """What a figure ran on: CPU, cores, torch threads and version, CUDA device, load."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(), "cores": usable_cores(), "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "cuda_device": cuda, "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "loadavg_1min": load_average(),
    }


def machine_line(info: dict[str, object] | None = None) -> str:
    """One line for reports, e.g. ``AMD EPYC, 2 cores, torch 2.13.0 (2 threads), CPU only``."""
    m = info or machine()
    gpu = f"CUDA {m['cuda_device']}" if m.get("cuda_device") else "CPU only"
    return (f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} "
            f"threads), {gpu}")


def benchmarks_enabled(config: pytest.Config) -> bool:
    """True when this run times benchmarks (``--benchmark-enable``), False for a smoke run."""
    session = getattr(config, "_benchmarksession", None)
    if session is not None:
        return not session.disabled
    return bool(config.getoption("benchmark_enable", False)) or not config.getoption(
        "benchmark_disable", False)


def sync() -> None:
    """Wait for queued CUDA work (no-op on CPU), so that timings cover the whole call."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], times: list[float]) -> Callable[[], None]:
    """``fn`` wrapped to append its wall-clock seconds (CUDA synchronised) to ``times``."""
    def run() -> None:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return run


def _proc_status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Peak:
    """Peak memory of one call.

    Attributes:
        mib: peak MiB above the level before the call (CUDA: allocated tensor memory; CPU:
            resident set size), None where it cannot be measured.
        kind: "cuda_max_memory_allocated" or "cpu_peak_rss_delta".
    """

    mib: float | None
    kind: str

    def info(self, prefix: str = "") -> dict[str, object]:
        """extra_info entries: ``<prefix>peak_mem_mib`` and ``<prefix>peak_mem_kind``."""
        mib = None if self.mib is None else round(self.mib, 1)
        return {f"{prefix}peak_mem_mib": mib, f"{prefix}peak_mem_kind": self.kind}


def _libc():
    """glibc through ctypes, or None (other C libraries, other systems)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_MMAP_MAX = 32 * 2**20  # glibc's largest dynamic mmap threshold (64-bit)


def peak_memory(fn: Callable[[], object]) -> Peak:
    """Run ``fn`` once and measure the memory it needed at its peak.

    On CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before the call. On
    CPU (Linux): the process's peak resident set size (``VmHWM`` after resetting it through
    ``/proc/self/clear_refs``) minus the resident size before the call, which counts what
    the call allocated and touched, including buffers it freed before returning. So that
    memory freed by earlier work and kept by the C allocator does not hide the call's
    allocations, glibc is told for the call to serve blocks of 64 KiB and more with mmap
    (returned to the system when freed) and its free memory is trimmed first; afterwards the
    threshold is set to 32 MiB, glibc's usual steady state. This makes the measured call a
    little slower (page faults on fresh buffers), so time other rounds than this one.
    """
    if torch.cuda.is_available():
        sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        sync()
        return Peak((torch.cuda.max_memory_allocated() - before) / 2**20,
                    "cuda_max_memory_allocated")
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        libc.malloc_trim(0)
    try:
        before = _proc_status_kib("VmRSS")
        if before is None or not _reset_rss_peak():
            fn()
            return Peak(None, "cpu_peak_rss_delta")
        fn()
        peak = _proc_status_kib("VmHWM")
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)
            libc.malloc_trim(0)
    return Peak(None if peak is None else max(peak - before, 0) / 1024, "cpu_peak_rss_delta")


def measured(fn: Callable[[], object], times: list[float], peaks: list[Peak]
             ) -> Callable[[], None]:
    """``fn`` wrapped for ``benchmark.pedantic``: every call appends its seconds to ``times``;
    the first call also measures its peak memory (:func:`peak_memory`) into ``peaks``."""
    def run() -> None:
        t0 = time.perf_counter()
        if peaks:
            fn()
        else:
            peaks.append(peak_memory(fn))
        sync()
        times.append(time.perf_counter() - t0)
    return run


def warm_cache(root: Path, cache_dir: Path, workers: int = 1):
    """A :class:`crbench.data.masks.MaskCache` of ``root`` in ``cache_dir`` after computing
    every S2 mask of the tree (a new object, so it reads what is on disk)."""
    from crbench.data.masks import MaskCache

    paths = sorted(root.glob("ROIs*/*/S2/*/*.tif"))
    stats = MaskCache(root, cache_dir=cache_dir).precompute(paths, workers=workers,
                                                            progress=False)
    if stats.failed or stats.total != len(paths):
        raise RuntimeError(f"mask precompute failed: {stats.failed[:3]}")
    return MaskCache(root, cache_dir=cache_dir)
