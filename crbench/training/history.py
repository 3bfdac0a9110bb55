"""Reading a training run's ``history.csv``: its columns and a one-line summary.

Any learned method's history works: the generic loop's (:mod:`crbench.training.loop`:
``step``, ``seconds``, its losses such as ``l1`` or ``g_l1``, ``lr`` and the ``val_*`` scores of
:mod:`crbench.training.validation`) and SeqDMs' (``iteration``, ``seconds``, ``loss_clear``,
``loss_seq``, ... and the same ``val_*`` columns). Rows without a validation leave the
``val_*`` cells empty (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError

if TYPE_CHECKING:
    import pandas as pd

STEP_COLUMNS = ("step", "iteration")
"""Names of the step counter, the first present is used."""
_NOT_LOSSES = frozenset({*STEP_COLUMNS, "epoch", "seconds", "lr"})
_VAL_ORDER = ("val_nrmse_cloudy", "val_psnr_cloudy", "val_psnr")


def read_history(path: Path) -> pd.DataFrame:
    """``history.csv`` as a DataFrame.

    Raises:
        DataError: the file cannot be read as CSV or has no step/iteration column.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the training history ({exc})") from None
    step_column(frame, path)
    return frame


def step_column(frame: pd.DataFrame, path: Path | str = "history") -> str:
    """The name of the step counter (``step`` or ``iteration``).

    Raises:
        DataError: neither column is present.
    """
    for name in STEP_COLUMNS:
        if name in frame.columns:
            return name
    raise DataError(f"{path}: no {' or '.join(STEP_COLUMNS)} column; expected a training "
                    "history.csv")


def loss_columns(frame: pd.DataFrame) -> list[str]:
    """The loss columns: those named ``loss*`` if any, else every numeric column that is not a
    counter, time, learning rate or validation score (e.g. ``l1``; ``g_l1, g_gan, d``)."""
    named = [c for c in frame.columns if str(c).startswith("loss")]
    if named:
        return named
    return [c for c in frame.columns if c not in _NOT_LOSSES and not str(c).startswith("val_")
            and frame[c].dtype.kind in "fiu"]


def val_columns(frame: pd.DataFrame) -> list[str]:
    """The ``val_*`` columns: ``val_nrmse_cloudy``, ``val_psnr_cloudy``, ``val_psnr`` (those
    present), then any others in file order."""
    order = list(_VAL_ORDER)
    present = [c for c in order if c in frame.columns]
    return present + [c for c in frame.columns if str(c).startswith("val_") and c not in order]


def first_last(frame: pd.DataFrame, column: str) -> tuple[float, float] | None:
    """The first and last finite values of ``column``, or None when it has none."""
    values = [float(v) for v in frame[column] if _finite(v)]
    return (values[0], values[-1]) if values else None


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _fmt(column: str, value: float) -> str:
    return f"{value:.1f}" if "psnr" in column else f"{value:.3g}"


def _changes(frame: pd.DataFrame, columns: Sequence[str], prefix: str = "") -> list[str]:
    parts = []
    for col in columns:
        pair = first_last(frame, col)
        if pair is not None:
            name = col.removeprefix("val_")
            parts.append(f"{prefix}{name} {_fmt(col, pair[0])} -> {_fmt(col, pair[1])}")
    return parts


def summary_line(frame: pd.DataFrame, method: str, seconds: float | None = None) -> str:
    """One line: steps, wall time, first -> last of every loss and validation score.

    E.g. ``seq2point: 300 steps in 23 s; l1 0.41 -> 0.05; val nrmse_cloudy 0.31 -> 0.05,
    val psnr_cloudy 10.2 -> 26.0, val psnr 24.1 -> 31.0``.

    Args:
        frame: a history (:func:`read_history`).
        method: name shown first.
        seconds: wall time to show when the history has no ``seconds`` column.
    """
    step = step_column(frame)
    steps = [int(v) for v in frame[step] if _finite(v)]
    head = f"{method}: {max(steps) if steps else 0} steps"
    if "seconds" in frame.columns and first_last(frame, "seconds") is not None:
        seconds = float(frame["seconds"].max())
    if seconds is not None:
        head += f" in {seconds:.0f} s" if seconds >= 10 else f" in {seconds:.1f} s"
    parts = [head]
    losses = _changes(frame, loss_columns(frame))
    if losses:
        parts.append(", ".join(losses))
    vals = _changes(frame, val_columns(frame), prefix="val ")
    if vals:
        parts.append(", ".join(vals))
    return "; ".join(parts)
