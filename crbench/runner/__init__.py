"""``crbench run``: evaluate methods x L on a split into a resumable run directory.

Owns: :mod:`.config` (:class:`RunConfig`, :class:`MethodRun` and the other shared settings and
outcome types), :mod:`.store` (the run directory's files: append-safe row CSVs, spread
sidecars, the manifest), :mod:`.evaluate` (the per-batch loop: predict, score, append rows)
and :mod:`.execute` (:func:`run`: checks, indexing, sharding, manifest bookkeeping). Within
the package, imports go one way: store, config <- evaluate <- execute.

May import: the layers below it (``crbench.data``, ``crbench.metrics``, ``crbench.registry``,
``crbench.api``, ``crbench.torchutil``, ``crbench.distributed``, errors, constants); never
``crbench.report``, ``crbench.check``, ``crbench.demo`` or ``crbench.cli`` (README,
"Architecture").
"""

from .config import MethodRun, RunConfig, RunStatus, RunSummary, default_out, parse_shard
from .execute import compose_shard, run, runtime_options, select_samples
from .store import ROW_COLUMNS, read_manifest, read_rows, read_spread

__all__ = ["ROW_COLUMNS", "MethodRun", "RunConfig", "RunStatus", "RunSummary", "compose_shard",
           "default_out", "parse_shard", "read_manifest", "read_rows", "read_spread", "run",
           "runtime_options", "select_samples"]
