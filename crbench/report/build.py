"""``crbench report``: the tables of one or several runs written to files, and the figures.

:func:`build_report` reads the rows and manifests (:mod:`.runs`), builds Tables 1-4 and the
spread table (:mod:`.tables`) and, when uncertainty sidecars exist, the calibration table
(:mod:`.calibration`), writes them in one format and optionally draws Figures 3 and 4
(:mod:`.figures`), the two cloud-coverage figures (:mod:`.coverage_figures`) and the
reliability diagram (:mod:`.calibration`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..runner.store import read_spread, read_uncertainty
from .calibration import calibration_table, reliability_figure
from .coverage_figures import coverage_figures
from .figures import make_figures
from .runs import (
    DEFAULT_RESULTS_ROOT,
    REPORT_DIR,
    as_dirs,
    check_poolable,
    pick_latest_run,
    read_manifests,
    read_rows,
)
from .tables import (
    Format,
    Table,
    band_subset_notes,
    manifest_notes,
    parse_format,
    skipped_by_L,
    spread_table,
    table1,
    table2,
    table3,
    table4,
)


@dataclass
class ReportResult:
    """What :func:`build_report` produced.

    Attributes:
        results: the result directories read.
        out_dir: where the table (and figure) files were written.
        fmt: table format.
        tables: the tables, in order.
        files: table files written.
        figures: figure files written (PNG and PDF).
        messages: remarks about figures (skipped methods, missing categories).
        passed_over: newer run directories without rows that the default ``--results``
            (the most recent run) passed over.
    """

    results: list[Path]
    out_dir: Path
    fmt: Format
    tables: list[Table]
    files: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    passed_over: list[Path] = field(default_factory=list)

    def text(self) -> str:
        """All tables as the CLI prints them (CSV tables get ``# title`` / ``# note`` lines)."""
        parts = []
        for t in self.tables:
            body = t.render(self.fmt)
            if self.fmt is Format.CSV:
                body = "\n".join([f"# {t.title}", body.rstrip("\n"),
                                  *(f"# note: {n}" for n in t.notes)]) + "\n"
            parts.append(body)
        return "\n".join(parts)


def build_report(results: Path | Sequence[Path] | None = None, *, by_coverage: bool = False,
                 fmt: Format | str = Format.MD, ci: bool = False, L: int | None = None,
                 out: Path | None = None, figures: bool = False, n_boot: int = 1000,
                 results_root: Path = DEFAULT_RESULTS_ROOT, progress: bool = False
                 ) -> ReportResult:
    """Build Tables 1, 2, 4 (and 3 with ``by_coverage``, and the spread table when the runs
    drew several samples per input), write them to files and optionally draw Figures 3 and 4
    and the coverage figures (histogram of Table 3's bins, metrics by coverage bin).

    Args:
        results: run directory (or several, or a folder of runs / shards); default the most
            recent run under ``results_root`` (:func:`latest_run`).
        by_coverage: add Table 3.
        fmt: ``md``, ``csv`` or ``tex``.
        ci: show bootstrap 95 % intervals.
        L: the L of Table 1 (default: the smallest L present).
        out: output directory (default ``<first results dir>/report``).
        figures: draw Figures 3 and 4 and the coverage figures into ``<out>/figures`` (the
            coverage figures whether or not ``by_coverage`` adds Table 3).
        n_boot: bootstrap resamples for ``ci``.
        results_root: where to look for the most recent run when ``results`` is None.
        progress: progress bars (stderr) while drawing figures.

    Raises:
        UsageError: no rows, bad format, ``L`` not present, or runs of different split, mask
            convention or protocol (:func:`.runs.check_poolable`).
    """
    fmt = parse_format(fmt)
    passed_over: list[Path] = []
    if results is None:
        latest, passed_over = pick_latest_run(results_root)
    dirs = [latest] if results is None else as_dirs(results)
    for d in dirs:
        if not d.is_dir():
            raise UsageError(f"--results: {d} is not a directory; expected a run directory "
                             "of `crbench run`")
    manifests = read_manifests(dirs)
    check_poolable(manifests)
    rows = read_rows(dirs)
    Ls = sorted(int(v) for v in rows["L"].unique())
    if L is None:
        L = Ls[0]
    elif L not in Ls:
        raise UsageError(f"--L: no results at L={L}; the results hold L = "
                         f"{', '.join(map(str, Ls))}")
    marks, band_notes = band_subset_notes(manifests, rows["method"].unique())
    notes = [*manifest_notes(manifests, rows["method"].unique()), *band_notes]
    tables = [table1(rows, L, ci, n_boot, notes), table2(rows, ci, n_boot, notes)]
    if by_coverage:
        tables.append(table3(rows, ci, n_boot, notes))
    t4 = table4(rows, ci, n_boot, notes)
    if t4 is not None:
        tables.append(t4)
    spread = spread_table(read_spread(dirs))
    if spread is not None:
        tables.append(spread)
    uncertainty = read_uncertainty(dirs)
    calibration = calibration_table(uncertainty)
    if calibration is not None:
        tables.append(calibration)
    for t in tables:
        t.marks = marks
    out_dir = Path(out) if out is not None else dirs[0] / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ReportResult(dirs, out_dir, fmt, tables, passed_over=passed_over)
    for t in tables:
        path = out_dir / f"{t.name}{fmt.suffix}"
        path.write_text(t.render(fmt))
        result.files.append(path)
    if figures:
        fig_dir = out_dir / "figures"
        drawn = make_figures(rows, manifests, dirs, fig_dir, L=L, progress=progress)
        coverage = coverage_figures(rows, fig_dir, skipped_by_L(manifests))
        result.figures = [*drawn.files, *coverage.files,
                          *reliability_figure(uncertainty, fig_dir)]
        result.messages = [*drawn.messages, *coverage.messages]
    return result
