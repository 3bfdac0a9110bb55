"""Exception types. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations


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
