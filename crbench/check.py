"""Metric regression check of a run against a baseline file (``crbench check``).

Baseline file format (JSON, version 1)::

    {
      "crbench_baseline": 1,
      "created": "2026-11-25T08:00:00+00:00",
      "config": {"methods": [...], "L": [...], "rows": 48,
                 "manifests": [{"crbench_version", "git", "config", "versions"}, ...]},
      "tolerances": {"nrmse_all": 0.001, "psnr": 0.05, ...},
      "metrics": {"mosaicing": {"3": {"nrmse_all": 0.0912, ..., "n": 8}, "4": {...}}, ...}
    }

- ``metrics``: per method, per L (a string key), the mean of each metric over the samples
  where it is finite (NaN and infinite values left out; ``null`` when no sample has a finite
  value), ``<metric>_inf``, the number of samples where it is infinite (e.g. PSNR of an
  exact reconstruction), and ``n``, the number of samples evaluated. The file is strict JSON
  (no ``Infinity`` or ``NaN``). Baselines written before ``<metric>_inf`` existed store an
  infinite mean as ``Infinity``; they are still read (such a metric is then compared as one
  mean, infinite whenever a sample is).
- ``tolerances``: absolute tolerance per metric; a metric without one uses
  :data:`DEFAULT_TOLERANCES`.
- ``config``: informative only (what produced the baseline); not compared.

A check fails when a metric's finite mean is worse than the baseline by more than its
tolerance (respecting :data:`crbench.metrics.HIGHER_IS_BETTER`), when the number of samples
with an infinite value moves the wrong way (fewer infinite PSNRs), when a metric that the
baseline defines is undefined now, when the number of evaluated samples differs, or when a
method / L of the baseline is missing from the results. Better values beyond the tolerance
are listed as improvements; methods / L in the results but not in the baseline are listed as
unchecked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import UsageError
from .metrics import HIGHER_IS_BETTER, METRIC_NAMES
from .report import method_sort_key, read_manifests, read_rows
from .report.runs import check_poolable

BASELINE_KEY = "crbench_baseline"
BASELINE_VERSION = 1
DEFAULT_TOLERANCES: dict[str, float] = {
    "nrmse_all": 1e-3, "nrmse_cloudy": 1e-3, "nrmse_clear": 1e-3,
    "psnr": 0.05, "ssim": 1e-3, "sam": 1e-3,
}
"""Absolute tolerances: well above float rounding differences between platforms (the synthetic
CI benchmark is deterministic), far below any real change of a method."""
INF_SUFFIX = "_inf"
"""``<metric>_inf``: the samples where the metric is infinite (a baseline entry key)."""
MANIFEST_KEYS = ("crbench_version", "git", "config", "versions")
"""What a baseline's ``config.manifests`` keeps of each run manifest (no per-session noise)."""


@dataclass(frozen=True)
class Finding:
    """One metric of one method at one L that differs from the baseline beyond tolerance."""

    method: str
    L: int
    metric: str
    value: float
    baseline: float
    tolerance: float
    infinite: bool = False  # value / baseline count the samples where the metric is infinite

    def describe(self) -> str:
        """E.g. ``mosaicing L=3 psnr: 21.3 vs baseline 24.1 (tolerance 0.05, higher is
        better)``."""
        better = "higher" if HIGHER_IS_BETTER[self.metric] else "lower"
        if self.infinite:
            return (f"{self.method} L={self.L} {self.metric}: infinite in {self.value:g} "
                    f"samples vs baseline {self.baseline:g} ({better} is better)")
        return (f"{self.method} L={self.L} {self.metric}: {self.value:.6g} vs baseline "
                f"{self.baseline:.6g} (tolerance {self.tolerance:g}, {better} is better)")


@dataclass
class CheckReport:
    """Outcome of :func:`check_results`.

    Attributes:
        baseline: the baseline file.
        regressions: metrics worse than the baseline beyond tolerance (or now undefined).
        improvements: metrics better than the baseline beyond tolerance.
        missing: baseline entries (method / L) absent from the results.
        count_changes: method / L whose number of evaluated samples differs.
        unchecked: method / L in the results that the baseline does not cover.
        checked: number of method / L entries compared.
    """

    baseline: Path
    regressions: list[Finding] = field(default_factory=list)
    improvements: list[Finding] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    count_changes: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing regressed, went missing or changed its sample count."""
        return not (self.regressions or self.missing or self.count_changes)

    def failures(self) -> list[str]:
        """One line per failure."""
        return ([f"regression: {f.describe()}" for f in self.regressions]
                + [f"missing: {m}" for m in self.missing]
                + [f"sample count changed: {c}" for c in self.count_changes])

    def summary(self) -> str:
        """Multi-line text: verdict, failures, improvements and unchecked entries."""
        verdict = "OK" if self.ok else f"FAILED ({len(self.failures())} problems)"
        lines = [f"check against {self.baseline}: {verdict}; {self.checked} method/L entries "
                 "compared"]
        lines += [f"  {line}" for line in self.failures()]
        lines += [f"  improvement: {f.describe()}" for f in self.improvements]
        lines += [f"  unchecked (not in baseline): {u}" for u in self.unchecked]
        return "\n".join(lines)


def aggregate_means(rows: pd.DataFrame) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """``{method: {str(L): {metric: finite mean or None, metric_inf: samples where it is
    infinite, "n": samples}}}`` from per-sample rows."""
    out: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for (method, L), group in rows.groupby(["method", "L"], sort=False):
        entry: dict[str, float | int | None] = {}
        for m in METRIC_NAMES:
            values = group[m].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            entry[m] = float(finite.mean()) if len(finite) else None
            entry[f"{m}{INF_SUFFIX}"] = int(np.isinf(values).sum())
        entry["n"] = len(group)
        out.setdefault(str(method), {})[str(int(L))] = entry
    return {m: out[m] for m in sorted(out, key=method_sort_key)}


def write_baseline(results: Path | list[Path], path: Path,
                   tolerances: dict[str, float] | None = None) -> Path:
    """Write a baseline file from the results' aggregate means.

    Args:
        results: run directory (or several) as for :func:`crbench.report.read_rows`.
        path: the baseline file to (over)write; parent directories are created.
        tolerances: per-metric absolute tolerances overriding :data:`DEFAULT_TOLERANCES`.

    Raises:
        UsageError: no rows, or an unknown metric in ``tolerances``.
    """
    tol = _merge_tolerances(tolerances or {}, "--tolerance")
    found = read_manifests(results)
    check_poolable(found)
    rows = read_rows(results)
    manifests = [{k: m[k] for k in MANIFEST_KEYS if k in m} for m in found]
    doc = {
        BASELINE_KEY: BASELINE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {"methods": sorted(rows["method"].unique(), key=method_sort_key),
                   "L": sorted(int(v) for v in rows["L"].unique()), "rows": len(rows),
                   "manifests": manifests},
        "tolerances": tol,
        "metrics": aggregate_means(rows),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n")
    return path


def load_baseline(path: Path) -> dict[str, Any]:
    """Read and validate a baseline file.

    Raises:
        UsageError: missing, unreadable, not JSON, or not a version-1 crbench baseline.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--baseline: {path} does not exist; create it with `crbench check "
                         f"--results DIR --baseline {path} --write`")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"--baseline: {path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get(BASELINE_KEY) != BASELINE_VERSION:
        raise UsageError(f"--baseline: {path} is not a crbench baseline; expected a JSON "
                         f'object with "{BASELINE_KEY}": {BASELINE_VERSION}')
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict) or not all(
            isinstance(v, dict) and all(isinstance(e, dict) for e in v.values())
            for v in metrics.values()):
        raise UsageError(f'--baseline: {path}: "metrics" must map method -> L -> '
                         "{metric: value}")
    for method, per_L in metrics.items():
        for L, entry in per_L.items():
            unknown = sorted(set(entry) - set(METRIC_NAMES) - {"n"}
                             - {f"{m}{INF_SUFFIX}" for m in METRIC_NAMES})
            if unknown or not str(L).isdigit():
                raise UsageError(f"--baseline: {path}: entry {method} L={L} has unknown "
                                 f"keys {unknown or [L]}; expected L digits and metrics "
                                 f"{', '.join(METRIC_NAMES)}")
    doc["tolerances"] = _merge_tolerances(doc.get("tolerances") or {}, f"--baseline {path}")
    return doc


def _merge_tolerances(given: dict[str, Any], where: str) -> dict[str, float]:
    unknown = sorted(set(given) - set(METRIC_NAMES))
    if unknown:
        raise UsageError(f"{where}: unknown metric(s) {', '.join(unknown)} in tolerances; "
                         f"expected some of {', '.join(METRIC_NAMES)}")
    out = dict(DEFAULT_TOLERANCES)
    for k, v in given.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: tolerance of {k} is {v!r}; expected a number") from None
        if not out[k] >= 0:
            raise UsageError(f"{where}: tolerance of {k} is {v!r}; expected a number >= 0")
    return out


def check_results(results: Path | list[Path], baseline_path: Path) -> CheckReport:
    """Compare the results' aggregate means with a baseline file (see the module docstring).

    Raises:
        UsageError: bad baseline file or no result rows.
    """
    doc = load_baseline(baseline_path)
    check_poolable(read_manifests(results))
    current = aggregate_means(read_rows(results))
    report = CheckReport(Path(baseline_path))
    tol = doc["tolerances"]
    for method, per_L in doc["metrics"].items():
        for L, base in sorted(per_L.items(), key=lambda kv: int(kv[0])):
            now = current.get(method, {}).get(str(int(L)))
            if now is None:
                have = ", ".join(f"L={k}" for k in current.get(method, {})) or "no L at all"
                report.missing.append(f"{method} L={int(L)} is in the baseline but not in the "
                                      f"results (results have {have} for {method})")
                continue
            report.checked += 1
            _compare(report, method, int(L), now, base, tol)
    for method, per_L in current.items():
        for L in per_L:
            if L not in doc["metrics"].get(method, {}):
                report.unchecked.append(f"{method} L={L}")
    return report


def _compare(report: CheckReport, method: str, L: int, now: dict[str, Any],
             base: dict[str, Any], tol: dict[str, float]) -> None:
    if "n" in base and base["n"] is not None and int(base["n"]) != now["n"]:
        report.count_changes.append(f"{method} L={L}: {now['n']} samples evaluated, baseline "
                                    f"{int(base['n'])}")
    for m in METRIC_NAMES:
        if m not in base:
            continue
        b = math.nan if base[m] is None else float(base[m])
        v = math.nan if now[m] is None else float(now[m])
        n_inf, b_inf = int(now[f"{m}{INF_SUFFIX}"]), base.get(f"{m}{INF_SUFFIX}")
        if b_inf is None and math.isinf(b):  # an older baseline: one mean over all samples
            v = math.inf if n_inf else v
        elif int(b_inf or 0) != n_inf:
            _judge(report, Finding(method, L, m, n_inf, int(b_inf or 0), 0.0, infinite=True),
                   n_inf - int(b_inf or 0))
        if b == v or (math.isnan(b) and math.isnan(v)):
            continue
        finding = Finding(method, L, m, v, b, tol[m])
        if math.isnan(v):
            report.regressions.append(finding)
        elif math.isnan(b):
            report.improvements.append(finding)
        else:
            _judge(report, finding, v - b)


def _judge(report: CheckReport, finding: Finding, change: float) -> None:
    """File ``finding`` by ``change`` (now - baseline) against its tolerance and direction."""
    gain = change if HIGHER_IS_BETTER[finding.metric] else -change
    if gain < -finding.tolerance:
        report.regressions.append(finding)
    elif gain > finding.tolerance:
        report.improvements.append(finding)
