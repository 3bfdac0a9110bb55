"""Configuration of a learned method's training: presets with overrides, run options.

:func:`resolve_config` (a preset merged with ``--set`` overrides, names and types checked),
:class:`TrainOptions` (the run options of ``fit``), :func:`linear_decay` (an LR schedule for
``LambdaLR``) and the [0, 1] <-> [-1, 1] conversions of network inputs and outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError


def resolve_config(presets: Mapping[str, Mapping[str, Any]], preset: str,
                   overrides: Mapping[str, Any], method: str) -> dict[str, Any]:
    """Merge ``overrides`` into ``presets[preset]``, checking names and types.

    Args:
        presets: preset name -> full config dict (every allowed key appears in each preset).
        preset: chosen preset.
        overrides: user values (e.g. from ``--set KEY=VALUE``).
        method: method name, for messages and the ``"method"`` key of the result.

    Returns:
        A new dict with ``method`` and ``preset`` keys added.

    Raises:
        UsageError: unknown preset, unknown key, a value of the wrong type, or a negative
            value for a setting whose preset value is >= 0 (sizes, counts, rates).
    """
    if preset not in presets:
        raise UsageError(f"preset: unknown value {preset!r} for {method}; expected one of "
                         f"{', '.join(presets)}")
    cfg = dict(presets[preset])
    for key, value in overrides.items():
        if key not in cfg:
            raise UsageError(f"{key}: unknown setting for {method}; expected one of "
                             f"{', '.join(sorted(cfg))}")
        cfg[key] = _check_type(key, value, cfg[key])
    cfg.update(method=method, preset=preset)
    return cfg


def _check_type(key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of ``default`` (int -> float allowed), else UsageError."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise UsageError(f"{key}: bad value {value!r}; expected a {type(default).__name__} "
                         f"like {default!r}")
    if isinstance(default, (int, float)) and not isinstance(default, bool) and default >= 0 \
            and value < 0:  # sizes, counts, rates: a negative one cannot build or train
        raise UsageError(f"{key}: bad value {value!r}; expected a value >= 0 like "
                         f"{default!r}")
    return value


def linear_decay(total_steps: int, start_fraction: float = 0.5) -> Callable[[int], float]:
    """LR factor: 1 until ``start_fraction * total_steps``, then linearly down to 0 at the end."""
    start = int(total_steps * start_fraction)
    span = max(total_steps - start, 1)

    def factor(step: int) -> float:
        return 1.0 if step < start else max(0.0, (total_steps - step) / span)

    return factor


def to_network_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2.0 - 1.0


def from_network_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped, float32."""
    return ((x.float() + 1.0) * 0.5).clamp_(0.0, 1.0)


@dataclass
class TrainOptions:
    """Run options of ``fit`` (not part of a model's config).

    ``steps`` wins over ``epochs``; ``val_samples`` fixed-sampler samples of the val split
    (strict protocol) are used for validation every ``val_every`` steps (None: every epoch).
    ``s1_db_range`` is the method's S1 dB range (:attr:`crbench.api.Method.s1_db_range`),
    given to the training and validation datasets (None: the default [-25, 0] dB).

    ``train_sampler`` chooses the training samples: "random" (crbench's: a clear target drawn
    every epoch, L adjacent other dates as inputs) or "fixed" (the toolbox's train.py: one
    sample per patch, the least cloudy date as target and the first L dates in the coverage
    bounds as inputs, the target possibly one of them, every patch kept whether it matches
    or not). ``protocol`` ("toolbox", "strict" or "parity") is the training data's protocol:
    its blank rule for both samplers, and for "fixed" whether the target may be an input.
    """

    seq_len: int
    batch_size: int
    steps: int | None = None
    epochs: int = 1
    device: str | None = None
    resume: bool = False
    seed: int = 0
    progress: bool = True
    workers: int = 0
    region: str = "all"
    crop: int | None = None
    val_samples: int = 4
    val_every: int | None = None
    log_every: int = 10
    s1_db_range: tuple[tuple[float, float], ...] | None = None
    train_sampler: str = "random"
    protocol: str = "toolbox"

    @classmethod
    def from_config(cls, config: dict[str, Any], seq_len: int, batch_size: int | None = None,
                    s1_db_range: Any = None, **run: Any) -> TrainOptions:
        """A method's ``fit`` options: batch size (unless given), epochs, validation and
        training sampler from its preset ``config``, the rest (steps, device, resume, seed,
        progress, workers, region, crop) from ``run``."""
        return cls(seq_len=seq_len, batch_size=batch_size or config["batch_size"],
                   epochs=config["epochs"], val_samples=config["val_samples"],
                   val_every=config["val_every"] or None, s1_db_range=s1_db_range,
                   train_sampler=config.get("train_sampler", "random"), **run)


def check_train_s1(method: str, needs: Iterable[Any], data_root: Path, region: str = "all",
                   s1_methods: Sequence[str] = ()) -> None:
    """Refuse to train ``method``, whose ``needs`` include S1, on a train split where no
    patch has S1 at every date: it would learn from S1 images of zeros. A split with some
    such patches, or with no patch at all (the dataset says so), passes.

    Args:
        method: the method's name; ``needs``: its :class:`crbench.api.Need` set.
        data_root: the tree; ``region``: the training region.
        s1_methods: the registered methods that need S1, named in the message if given.

    Raises:
        UsageError: naming ``data_root``, the tree and the methods that need S1.
    """
    from ..api import Need
    from ..data.index import lacking_s1, scan_tree
    from ..errors import DatasetNotFoundError

    if Need.S1 not in set(needs):
        return
    try:
        records = scan_tree(Path(data_root), "train", region)
    except DatasetNotFoundError:
        return
    first = lacking_s1(records)
    if first is not None:
        which = f" (methods that need S1: {', '.join(s1_methods)})" if s1_methods else ""
        raise UsageError(f"data_root: {data_root} has no S1 for the train split (all "
                         f"{len(records)} patches lack S1 images for some date, e.g. "
                         f"{first.roi} patch {first.patch}); {method} needs S1{which}; train "
                         "it on a tree with S1")


def check_train_data(train_sampler: str, protocol: str) -> None:
    """UsageError for a ``train_sampler`` or ``protocol`` that names none."""
    from ..data.dataset import SamplerKind
    from ..data.sampler import Protocol
    from ..errors import parse_enum

    parse_enum(SamplerKind, train_sampler, "train_sampler")
    Protocol.parse(protocol)


def check_fit_args(steps: int | None, batch_size: int, crop: int | None, workers: int) -> None:
    """UsageError for non-positive steps/batch size/crop or negative workers."""
    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 1),
                             ("crop", crop, 2), ("workers", workers, 0)):
        if value is not None and (not isinstance(value, int) or value < low):
            raise UsageError(f"{name}: bad value {value!r}; expected an integer >= {low}")
