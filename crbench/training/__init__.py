"""Training of the learned methods: the generic loop, its configuration and its batches.

Owns: :mod:`.options` (presets with overrides, :class:`TrainOptions`, LR schedule, value range
helpers), :mod:`.context` (:class:`TrainParts`, what a method hands the loop, and
:class:`StepContext`, what each step receives), :mod:`.batches` (global batches, each rank's
:class:`Share`, batch sources), :mod:`.validation` (the cloudy-region scores every loop logs),
:mod:`.loop` (:class:`Trainer`, checkpoints, resume, :func:`fit_on_dataset`; its docstring
describes the whole protocol) and :mod:`.history` (reading ``history.csv``, its one-line
summary). Within the package, imports go one way: options, batches <- context <- loop;
validation <- loop.

May import: ``crbench.data``, ``crbench.api``, ``crbench.torchutil``, ``crbench.distributed``,
errors and constants; never the runner, the report or the CLI (README, "Architecture"). The
method plugins (``crbench_methods``) import it, from here.
"""

from .batches import (
    BatchSource,
    DatasetSource,
    RepeatSource,
    Share,
    batch_size_of,
    check_global_batch,
    main_first,
    weighted_mean_over_ranks,
)
from .context import PredictFn, StepContext, StepFn, TrainParts
from .loop import (
    HISTORY_FILE,
    Trainer,
    batch_psnr,
    check_in_sync,
    fit_on_dataset,
    seed_everything,
    validation_batches,
    write_history,
)
from .options import (
    TrainOptions,
    check_fit_args,
    check_train_s1,
    from_network_range,
    linear_decay,
    resolve_config,
    to_network_range,
)

__all__ = [
    "HISTORY_FILE", "BatchSource", "DatasetSource", "PredictFn", "RepeatSource", "Share",
    "StepContext", "StepFn", "TrainOptions", "TrainParts", "Trainer", "batch_psnr",
    "batch_size_of", "check_fit_args", "check_global_batch", "check_in_sync", "check_train_s1",
    "fit_on_dataset",
    "from_network_range", "linear_decay", "main_first", "resolve_config", "seed_everything",
    "to_network_range", "validation_batches", "weighted_mean_over_ranks", "write_history",
]
