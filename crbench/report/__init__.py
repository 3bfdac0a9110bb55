"""``crbench report``: Tables 1-4, Figures 3-4 and the coverage figures of one or several
run directories.

Owns: :mod:`.runs` (reading rows and manifests, the latest run, method display order,
:func:`manifest_value`), :mod:`.tables` (statistics, the tables and their Markdown / CSV /
LaTeX rendering), :mod:`.figures` (Figures 3 and 4, matplotlib, and the figure helpers:
method styles, saving), :mod:`.coverage_figures` (the coverage histogram and the metrics by
coverage bin, the pictures of Table 3) and :mod:`.build` (:func:`build_report`). Within the
package, imports go one way: runs <- tables, figures <- coverage_figures <- build (figures
and build also import runs and tables directly).

May import: ``crbench.runner.store`` (the run directory's files), ``crbench.metrics``,
``crbench.data`` and the layers below them; never ``crbench.check``, ``crbench.demo`` or
``crbench.cli`` (README, "Architecture").
"""

from .build import ReportResult, build_report
from .runs import (
    METHOD_ORDER,
    latest_run,
    manifest_value,
    method_sort_key,
    read_manifests,
    read_rows,
)
from .tables import (
    ABLATIONS,
    Format,
    Table,
    bin_label,
    coverage_bins,
    manifest_notes,
    parse_format,
    spread_table,
    summarize,
    table1,
    table2,
    table3,
    table4,
    tex_escape,
)

__all__ = [
    "ABLATIONS", "METHOD_ORDER", "Format", "ReportResult", "Table", "bin_label",
    "build_report", "coverage_bins", "latest_run", "manifest_notes", "manifest_value",
    "method_sort_key", "parse_format", "read_manifests", "read_rows", "spread_table",
    "summarize", "table1", "table2", "table3", "table4", "tex_escape",
]
