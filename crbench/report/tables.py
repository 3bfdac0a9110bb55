"""Result tables of crbench runs (Tables 1-4 of the paper) in Markdown, CSV and LaTeX.

Input is one or several run directories written by ``crbench run`` (``manifest.json`` plus
``rows/*.csv``, one row per method x L x sample, DESIGN.md "Per-sample results"), read by
:mod:`crbench.report.runs`. Shards and several run directories under one folder are merged; a
sample present twice with identical values (e.g. a resumed run) counts once.

Tables (all means over samples, ignoring NaN, as in DESIGN.md):

- Table 1: every method at one L (``L``: the smallest L present unless given), every metric.
- Table 2: methods x L.
- Table 3: 10 % bins of the mean input coverage (``[0, 10)``, ..., ``[90, 100]``, the last
  bin's right edge inclusive) x L x method, with sample counts; empty bins are listed with n=0.
- Table 4: each method next to its ablation variant (:data:`ABLATIONS`), when both are present.
- Spread (when ``rows/*.spread.csv`` exist, i.e. ``crbench run --samples K``): per L and method,
  the mean over samples of each metric's standard deviation over the K draws of an input.

The best mean in each column is marked (bold in Markdown and LaTeX) within each L (and each
coverage bin / ablation pair), using :data:`crbench.metrics.HIGHER_IS_BETTER`. With ``ci`` the
bootstrap 95 % interval of :func:`crbench.metrics.aggregate` is shown as ``mean [low, high]``
(Markdown, LaTeX) or as ``<metric>_low`` / ``<metric>_high`` columns (CSV).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..constants import N_S2_BANDS
from ..errors import UsageError
from ..metrics import HIGHER_IS_BETTER, METRIC_NAMES, aggregate
from ..runner.store import read_skipped
from .runs import manifest_value, method_sort_key

ABLATIONS: dict[str, str] = {"seqdm": "seqdm_no_tts"}
"""Method -> its registered ablation variant, shown side by side in Table 4."""

N_BINS = 10
_BIN_EPS = 1e-9  # coverage k/N * 10 may land a hair below an integer; counts as that bin

MASK_NOTES = {
    "paper": "nrmse_cloudy / nrmse_clear use the 'paper' mask convention: cloudy = cloudy in "
             "every input, clear = clear in at least one input.",
    "toolbox": "nrmse_cloudy / nrmse_clear use the 'toolbox' mask convention: cloudy = cloudy "
               "in at least one input, clear = clear in all inputs.",
}
STGAN_NOTE = ("STGAN with bands=rgbn (its full preset) predicts only B04, B03, B02 and B08; "
              "its other bands come from the mosaicing estimate, so its all-band metrics "
              "partly measure mosaicing (the tiny preset predicts all 13 bands).")
"""Note for STGAN rows of runs that do not record their scored bands (made before crbench
scored a method predicting a band subset on that subset only)."""
BAND_MARKS = ("†", "‡", "§", "¶")
"""Markers of methods scored on a band subset, in order of appearance."""


class Format(enum.Enum):
    """Output format of the tables."""

    MD = "md"
    CSV = "csv"
    TEX = "tex"

    @property
    def suffix(self) -> str:
        """File name suffix."""
        return "." + self.value


def parse_format(value: Format | str) -> Format:
    """``Format`` from its value; UsageError naming ``--format`` otherwise."""
    if isinstance(value, Format):
        return value
    try:
        return Format(str(value).lower())
    except ValueError:
        raise UsageError(f"--format: unknown value {value!r}; expected one of "
                         f"{', '.join(f.value for f in Format)}") from None


# ----------------------------------------------------------------------------- statistics


def coverage_bins(coverage: pd.Series) -> pd.Series:
    """Bin index 0..9 of each coverage in [0, 1]: [0, 0.1) -> 0, ..., [0.9, 1.0] -> 9."""
    idx = np.floor(coverage.to_numpy(dtype=float) * N_BINS + _BIN_EPS)
    return pd.Series(np.clip(idx, 0, N_BINS - 1).astype(int), index=coverage.index)


def bin_label(i: int) -> str:
    """Label of coverage bin ``i``: ``"0-10 %"`` ... ``"90-100 %"``."""
    step = 100 // N_BINS
    return f"{i * step}-{(i + 1) * step} %"


def summarize(rows: pd.DataFrame, by: Sequence[str], ci: bool = False, n_boot: int = 1000,
              seed: int = 0, metrics: Sequence[str] = METRIC_NAMES) -> pd.DataFrame:
    """Per-group means over samples (NaN ignored), sample counts and optionally bootstrap CIs
    of each of ``metrics`` (default: the image metrics).

    Returns:
        One row per group: the ``by`` columns, ``n`` (samples) and for each metric ``m``:
        ``m`` (mean), ``m_low`` and ``m_high`` (CI bounds, NaN unless ``ci``) and ``m_n``
        (samples where ``m`` is defined).
    """
    records = []
    for key, group in rows.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rec: dict[str, Any] = dict(zip(by, key, strict=True))
        rec["n"] = len(group)
        for m in metrics:
            rec.update(_metric_stats(m, group[m].to_numpy(dtype=float), ci, n_boot, seed))
        records.append(rec)
    columns = [*by, "n", *(c for m in metrics for c in (m, f"{m}_low", f"{m}_high", f"{m}_n"))]
    return pd.DataFrame.from_records(records, columns=columns)


def _metric_stats(m: str, values: np.ndarray, ci: bool, n_boot: int, seed: int
                  ) -> dict[str, float]:
    finite = values[~np.isnan(values)]
    if ci and finite.size:
        agg = aggregate(values, n_boot=n_boot, seed=seed)
        return {m: float(agg.mean), f"{m}_low": float(agg.low), f"{m}_high": float(agg.high),
                f"{m}_n": int(agg.n)}
    mean = float(finite.mean()) if finite.size else math.nan
    return {m: mean, f"{m}_low": math.nan, f"{m}_high": math.nan, f"{m}_n": int(finite.size)}


# ----------------------------------------------------------------------------- tables


@dataclass
class Table:
    """One result table: label columns, statistics and notes; :meth:`render` formats it.

    Attributes:
        name: file stem, e.g. ``"table1"``.
        title: one-line caption.
        keys: label columns in display order (e.g. ``["L", "method"]``).
        groups: label columns within whose groups the best value is marked.
        stats: :func:`summarize` output (``keys`` + statistics columns).
        notes: sentences printed under the table.
        ci: whether the bootstrap intervals are shown.
        metrics: the value columns (default: the image metrics).
        higher: per value column, True if higher is better, False if lower, None if neither
            (no best marked); default :data:`crbench.metrics.HIGHER_IS_BETTER`.
        marks: method -> marker appended to its name in Markdown and LaTeX (methods scored
            on a band subset, :func:`band_subset_notes`); CSV keeps the plain names.
    """

    name: str
    title: str
    keys: list[str]
    groups: list[str]
    stats: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    ci: bool = False
    metrics: Sequence[str] = METRIC_NAMES
    higher: dict[str, bool | None] = field(default_factory=lambda: dict(HIGHER_IS_BETTER))
    marks: dict[str, str] = field(default_factory=dict)

    def best_mask(self) -> pd.DataFrame:
        """Boolean frame (metric columns): True where the mean is the best of its group."""
        best = pd.DataFrame(False, index=self.stats.index, columns=list(self.metrics))
        groups = ([(None, self.stats)] if not self.groups
                  else self.stats.groupby(self.groups, sort=False))
        for _, g in groups:
            for m in self.metrics:
                vals = g[m].astype(float)
                if self.higher.get(m) is None or vals.notna().sum() < 2:
                    continue
                target = vals.max() if self.higher[m] else vals.min()
                best.loc[vals.index[np.isclose(vals, target, rtol=0, atol=1e-12)], m] = True
        return best

    def render(self, fmt: Format) -> str:
        """The table as file content in ``fmt`` (Markdown and LaTeX include title and notes;
        CSV is plain data readable by pandas)."""
        return {Format.MD: _to_markdown, Format.CSV: _to_csv, Format.TEX: _to_latex}[fmt](self)


def _sorted(stats: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    order = [stats[k].map(method_sort_key) if k == "method" else stats[k] for k in keys]
    sort_frame = pd.DataFrame({f"_k{i}": col for i, col in enumerate(order)})
    idx = sorted(stats.index, key=lambda i: tuple(sort_frame.loc[i]))
    return stats.loc[idx].reset_index(drop=True)


def _nan_notes(rows: pd.DataFrame) -> list[str]:
    notes = []
    for m in METRIC_NAMES:
        k = int(rows[m].isna().sum())
        if k:
            notes.append(f"{m} is undefined (empty region) for {k} of {len(rows)} sample rows; "
                         "means leave them out.")
        k = int(np.isinf(rows[m].to_numpy(dtype=float)).sum())
        if k:
            notes.append(f"{m} is infinite for {k} of {len(rows)} sample rows (a perfect "
                         "reconstruction, e.g. the target among the inputs under the toolbox "
                         "protocol); the mean of a group holding such a row is infinite.")
    return notes


def table1(rows: pd.DataFrame, L: int, ci: bool = False, n_boot: int = 1000,
           notes: Iterable[str] = ()) -> Table:
    """Table 1: every method at one L with every metric and sample counts."""
    sub = rows[rows["L"] == L]
    stats = _sorted(summarize(sub, ["method"], ci, n_boot), ["method"])
    return Table("table1", f"Table 1: all methods at L = {L}", ["method"], [], stats,
                 [*notes, *_nan_notes(sub)], ci)


def table2(rows: pd.DataFrame, ci: bool = False, n_boot: int = 1000,
           notes: Iterable[str] = ()) -> Table:
    """Table 2: methods x L (best marked within each L)."""
    stats = _sorted(summarize(rows, ["L", "method"], ci, n_boot), ["L", "method"])
    return Table("table2", "Table 2: methods x sequence length L", ["L", "method"], ["L"],
                 stats, [*notes, *_nan_notes(rows)], ci)


def table3(rows: pd.DataFrame, ci: bool = False, n_boot: int = 1000,
           notes: Iterable[str] = ()) -> Table:
    """Table 3: 10 % bins of mean input coverage x L x method (empty bins listed, n = 0)."""
    binned = rows.assign(coverage=coverage_bins(rows["coverage"]))
    stats = summarize(binned, ["L", "coverage", "method"], ci, n_boot)
    have = set(zip(stats["L"], stats["coverage"], stats["method"], strict=True))
    empty = [{"L": L, "coverage": b, "method": m, "n": 0}
             for L, methods in binned.groupby("L")["method"].unique().items()
             for b in range(N_BINS) for m in methods if (L, b, m) not in have]
    if empty:
        filler = pd.DataFrame(empty).reindex(columns=stats.columns)
        for m in METRIC_NAMES:
            filler[f"{m}_n"] = 0
        stats = pd.concat([stats, filler], ignore_index=True)
    stats = _sorted(stats, ["L", "coverage", "method"])
    bin_note = ("coverage = mean cloud coverage of the L inputs; bins are [a, b) except the "
                "last, [90, 100] %.")
    return Table("table3", "Table 3: input cloud coverage bins x L", ["L", "coverage", "method"],
                 ["L", "coverage"], stats, [bin_note, *notes, *_nan_notes(rows)], ci)


def table4(rows: pd.DataFrame, ci: bool = False, n_boot: int = 1000,
           notes: Iterable[str] = ()) -> Table | None:
    """Table 4: each method of :data:`ABLATIONS` next to its variant, per L where both ran;
    None when no pair is present."""
    parts = []
    for base, variant in ABLATIONS.items():
        pair = rows[rows["method"].isin([base, variant])]
        for _, g in pair.groupby("L"):
            if g["method"].nunique() == 2:
                stats = summarize(g, ["L", "method"], ci, n_boot)
                parts.append(_sorted(stats.assign(ablation=base), ["L", "method"]))
    if not parts:
        return None
    stats = pd.concat(parts, ignore_index=True)
    stats = stats[["L", "ablation", *[c for c in stats.columns if c not in ("L", "ablation")]]]
    pairs = ", ".join(f"{b} vs {v}" for b, v in ABLATIONS.items())
    return Table("table4", f"Table 4: ablation ({pairs})", ["L", "ablation", "method"],
                 ["L", "ablation"], stats, list(notes), ci)


def spread_table(spread: pd.DataFrame) -> Table | None:
    """Spread of stochastic methods (:func:`crbench.runner.read_spread` rows): per L, method
    and K, the mean over samples of each metric's std over the K draws; None without rows."""
    if spread.empty:
        return None
    frame = spread.rename(columns={f"{m}_std": m for m in METRIC_NAMES})
    keys = ["L", "method", "samples"]
    stats = _sorted(summarize(frame, keys), keys)
    note = ("Each value is the mean over samples of the standard deviation (ddof 0) of the "
            "metric over the K draws of one input (`crbench run --samples K`); the other "
            "tables hold the means over the draws.")
    return Table("spread", "Spread over K draws per input (mean std of each metric)", keys,
                 keys, stats, [note])


# ----------------------------------------------------------------------------- rendering


def _fmt_value(m: str, v: float) -> str:
    if v is None or np.isnan(v):
        return "n/a"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    if m not in METRIC_NAMES and v != 0 and abs(v) < 1e-3:
        return f"{v:.2e}"  # e.g. a calibration error in variance units
    return f"{v:.2f}" if m == "psnr" else f"{v:.4f}"


def _cells(t: Table, bold: tuple[str, str]) -> list[list[str]]:
    """Formatted label and value cells per row; ``bold`` = (prefix, suffix) for the best."""
    best = t.best_mask()
    out = []
    for i, row in t.stats.iterrows():
        cells = [_label(k, row[k]) + (t.marks.get(str(row[k]), "") if k == "method" else "")
                 for k in t.keys] + [str(int(row["n"]))]
        for m in t.metrics:
            text = _fmt_value(m, row[m])
            if best.at[i, m]:
                text = f"{bold[0]}{text}{bold[1]}"
            if t.ci and np.isfinite(row[f"{m}_low"]):
                text += f" [{_fmt_value(m, row[f'{m}_low'])}, {_fmt_value(m, row[f'{m}_high'])}]"
            cells.append(text)
        out.append(cells)
    return out


def _label(col: str, v: Any) -> str:
    if col == "L":
        return str(int(v))
    if col == "coverage":
        return bin_label(int(v))
    return str(v)


_ARROWS = {True: "↑", False: "↓", None: ""}
_TEX_ARROWS = {True: r"$\uparrow$", False: r"$\downarrow$", None: ""}


def _to_markdown(t: Table) -> str:
    head = [*t.keys, "n", *(f"{m} {_ARROWS[t.higher.get(m)]}".strip() for m in t.metrics)]
    align = ["---"] * len(t.keys) + ["---:"] * (1 + len(t.metrics))
    lines = [f"### {t.title}", "", "| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(c) + " |" for c in _cells(t, ("**", "**"))]
    if t.notes:
        lines += ["", *(f"- {n}" for n in t.notes)]
    return "\n".join(lines) + "\n"


def _to_csv(t: Table) -> str:
    cols = [*t.keys, "n"]
    for m in t.metrics:
        cols += [m, f"{m}_low", f"{m}_high"] if t.ci else [m]
    frame = t.stats[cols].copy()
    if "coverage" in t.keys:
        frame["coverage"] = frame["coverage"].map(lambda b: bin_label(int(b)))
    if "L" in frame:
        frame["L"] = frame["L"].astype(int)
    return frame.to_csv(index=False)


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
                "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "†": r"$^\dagger$", "‡": r"$^\ddagger$",
                "§": r"\S{}", "¶": r"\P{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX special characters."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def _to_latex(t: Table) -> str:
    head = [*(tex_escape(k) for k in t.keys), "$n$",
            *(f"{tex_escape(m)} {_TEX_ARROWS[t.higher.get(m)]}".strip() for m in t.metrics)]
    spec = "l" * len(t.keys) + "r" * (1 + len(t.metrics))
    lines = [r"\begin{table}[ht]", r"\centering", f"\\caption{{{tex_escape(t.title)}}}",
             f"\\label{{tab:crbench-{t.name}}}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(head) + r" \\", r"\midrule"]
    first = t.keys[0] if t.groups else None
    previous = None
    cells_all = _cells(t, ("\\textbf{", "}"))
    for (_, row), cells in zip(t.stats.iterrows(), cells_all, strict=True):
        if first is not None and previous is not None and row[first] != previous:
            lines.append(r"\midrule")
        previous = row[first] if first is not None else None
        lines.append(" & ".join(tex_escape(c) if j < len(t.keys) else c.replace("%", r"\%")
                                for j, c in enumerate(cells)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if t.notes:
        lines += [r"\par\smallskip\footnotesize", " ".join(tex_escape(n) for n in t.notes)]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- notes


def manifest_notes(manifests: Sequence[dict[str, Any]], methods: Iterable[str]) -> list[str]:
    """Notes shared by all tables: skipped samples, mask convention, STGAN's bands."""
    notes = []
    skipped = skipped_by_L(manifests)
    if skipped:
        per_L = ", ".join(f"L={L}: {n}" for L, n in sorted(skipped.items()))
        notes.append(f"Samples skipped because they do not match the fixed sampler's "
                     f"conditions (not enough qualifying inputs or a cloudy target): {per_L}.")
    conventions = {str(manifest_value(m, "mask_convention")) for m in manifests
                   if manifest_value(m, "mask_convention") is not None}
    for c in sorted(conventions):
        notes.append(MASK_NOTES.get(c, f"Mask convention: {c}."))
    if "stgan" in set(methods) and "stgan" not in recorded_bands(manifests):
        notes.append(STGAN_NOTE)
    return notes


def recorded_bands(manifests: Sequence[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Method -> the S2 bands its rows were scored on, from the manifests' run entries
    (``scored_bands``; entries of older runs, without it, are left out).

    Raises:
        UsageError: one method scored on different bands in the runs given (their rows
            cannot share a mean).
    """
    out: dict[str, tuple[str, ...]] = {}
    for m in manifests:
        runs = m.get("runs") if isinstance(m.get("runs"), dict) else {}
        for r in runs.values():
            if not isinstance(r, dict) or not isinstance(r.get("scored_bands"), list):
                continue
            name, bands = str(r.get("method")), tuple(map(str, r["scored_bands"]))
            if out.setdefault(name, bands) != bands:
                raise UsageError(f"--results: method {name} was scored on different bands in "
                                 f"the runs given ({', '.join(out[name])} and "
                                 f"{', '.join(bands)}); report each run separately")
    return out


def band_subset_notes(manifests: Sequence[dict[str, Any]], methods: Iterable[str]
                      ) -> tuple[dict[str, str], list[str]]:
    """Markers and notes for the methods scored on a band subset (the bands they predict
    themselves): ``({method: marker}, notes)``; empty when every method has all 13."""
    present = set(methods)
    subsets = {k: v for k, v in recorded_bands(manifests).items()
               if k in present and len(v) < N_S2_BANDS}
    marks, notes = {}, []
    for i, name in enumerate(sorted(subsets, key=method_sort_key)):
        mark = BAND_MARKS[i % len(BAND_MARKS)] * (1 + i // len(BAND_MARKS))
        marks[name] = mark
        notes.append(f"{mark} {name}: scored on {', '.join(subsets[name])} only (the bands it "
                     "predicts itself; its other output bands, e.g. STGAN's mosaicing fill, are "
                     "not scored), so its values are not directly comparable with 13-band rows.")
    return marks, notes


def skipped_by_L(manifests: Sequence[dict[str, Any]]) -> dict[int, int]:
    """Non-matching samples skipped per L, each sample counted once.

    A run directory that records the skipped samples (``RUN/skipped/``, next to the
    manifest's ``_path``) contributes their keys, merged over shards, methods and runs, so
    overlapping shard layouts or a run given twice count a sample once. Older manifests add
    their ``skipped`` counts (``{L: n}``, or ``{method: {L: n}}``: the largest count over
    methods, since every method sees the same samples), summed over manifests.
    """
    keys: dict[int, set[tuple[str, int]]] = {}
    out: dict[int, int] = {}
    for m in manifests:
        runs = m.get("runs") if isinstance(m.get("runs"), dict) else {}
        files = [r["skipped_file"] for r in runs.values()
                 if isinstance(r, dict) and r.get("skipped_file")]
        if files and "_path" in m:
            for (_, L), found in read_skipped(Path(m["_path"]).parent, files).items():
                keys.setdefault(L, set()).update(found)
            continue
        for L, n in _manifest_skipped(m).items():
            out[L] = out.get(L, 0) + n
    for L, found in keys.items():
        out[L] = out.get(L, 0) + len(found)
    return out


def _manifest_skipped(m: dict[str, Any]) -> dict[int, int]:
    value = manifest_value(m, "skipped")
    per_L: dict[int, int] = {}
    if not isinstance(value, dict):
        return per_L
    for k, v in value.items():
        if isinstance(v, dict):
            for L, n in v.items():
                per_L[int(L)] = max(per_L.get(int(L), 0), int(n))
        elif str(k).isdigit():
            per_L[int(k)] = int(v)
    return per_L
