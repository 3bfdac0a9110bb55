"""Exception types. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, TypeVar

E = TypeVar("E", bound=enum.Enum)


class CrbenchError(Exception):
    """Base class of crbench's user-facing errors; the message is one clear line."""


class UsageError(CrbenchError, ValueError):
    """Bad argument or input value. Message: argument name, bad value, what is expected."""


class DatasetNotFoundError(CrbenchError, FileNotFoundError):
    """The data root, a split or a file is missing; the message says how to fix it."""


class DataError(CrbenchError):
    """A file exists but is unusable (corrupt, wrong band count, S1/S2 mismatch)."""


class CheckpointError(CrbenchError):
    """A checkpoint is missing, unreadable or was made for another configuration."""


class PluginError(CrbenchError):
    """A method plugin could not be found or imported; names the plugin and its package."""


class RegressionError(CrbenchError):
    """`crbench check` found a metric regression (exit code 1)."""


def parse_enum(cls: type[E], value: Any, name: str) -> E:
    """``value`` as a member of enum ``cls`` (members pass through; strings match values).

    Raises:
        UsageError: naming the argument ``name``, the bad value and the allowed values.
    """
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)
        raise UsageError(f"{name}: unknown value {value!r}; expected one of {allowed}") from None


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    """A setting that must be one of ``allowed`` (e.g. a preset's ``norm``).

    Raises:
        UsageError: naming ``name``, the bad value and the allowed values.
    """
    if value not in allowed:
        raise UsageError(f"{name}: unknown value {value!r}; expected one of {', '.join(allowed)}")
