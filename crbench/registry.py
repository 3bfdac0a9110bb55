"""Method registry: built-in and third-party methods are found the same way.

Every method, including crbench's own, is an entry point in the group ``crbench.methods``
(see ``[project.entry-points."crbench.methods"]`` in pyproject.toml)::

    [project.entry-points."crbench.methods"]
    my_method = "my_package.module:MyMethod"

The registry is lazy: :func:`list_methods` reads only installed metadata and never imports a
plugin; a plugin's module is imported by :func:`get_method_class` alone, so one broken plugin
raises a :class:`~crbench.errors.PluginError` naming itself and breaks nothing else.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from .api import Method, TrainableMethod
from .errors import CheckpointError, PluginError, UsageError

GROUP = "crbench.methods"


@dataclass(frozen=True)
class MethodInfo:
    """One registered method, as installed metadata describes it (no import needed).

    Attributes:
        name: registry key (the entry point's name), e.g. ``"mosaicing"``.
        value: the entry point's target, ``"module:attr"``.
        package: name of the distribution that registers it (None if unknown).
        version: that distribution's version (None if unknown).
    """

    name: str
    value: str
    package: str | None
    version: str | None

    @property
    def source(self) -> str:
        """``"package version"`` of the registering distribution, or ``"unknown"``."""
        if self.package is None:
            return "unknown"
        return f"{self.package} {self.version}" if self.version else self.package


def _info(ep: EntryPoint) -> MethodInfo:
    dist = getattr(ep, "dist", None)
    package = dist.metadata["Name"] if dist is not None else None
    version = dist.version if dist is not None else None
    return MethodInfo(name=ep.name, value=ep.value, package=package, version=version)


def _entry_points() -> dict[str, list[EntryPoint]]:
    """Entry points of the group by name (several when two distributions claim one name)."""
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=GROUP):
        same = [e for e in found.get(ep.name, []) if _info(e) == _info(ep)]
        if not same:
            found.setdefault(ep.name, []).append(ep)
    return found


def list_methods() -> list[MethodInfo]:
    """All registered methods, sorted by name, without importing any of them.

    A name claimed by two distributions appears once per distribution (see
    :func:`conflicts`); :func:`get_method_class` refuses such a name.
    """
    return sorted((_info(ep) for eps in _entry_points().values() for ep in eps),
                  key=lambda i: (i.name, i.package or "", i.value))


def conflicts() -> dict[str, list[MethodInfo]]:
    """Names registered by more than one distribution, with every claimant."""
    return {name: [_info(ep) for ep in eps] for name, eps in _entry_points().items()
            if len(eps) > 1}


def method_names() -> list[str]:
    """Sorted registry keys."""
    return sorted(_entry_points())


def _unknown(name: str, known: list[str]) -> UsageError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    listing = ", ".join(known) if known else "none are installed"
    return UsageError(f"method: unknown name {name!r}; {hint}registered methods: {listing} "
                      f"(see `crbench methods`)")


def _duplicate(name: str, eps: list[EntryPoint]) -> PluginError:
    claims = "; ".join(f"{i.value!r} from distribution {i.source}" for i in map(_info, eps))
    return PluginError(f"method {name!r} is registered by more than one distribution ({claims}); "
                       f"uninstall one of them or rename its entry point in group {GROUP!r}")


def get_method_class(name: str) -> type[Method]:
    """Import and return the class registered under ``name``.

    Raises:
        UsageError: no method of that name (the message suggests close matches).
        PluginError: the plugin fails to import, is not a Method subclass, or the name is
            claimed by two distributions; the message names the plugin, its entry point value
            and its distribution.
    """
    eps = _entry_points()
    if name not in eps:
        raise _unknown(name, sorted(eps))
    if len(eps[name]) > 1:
        raise _duplicate(name, eps[name])
    ep = eps[name][0]
    info = _info(ep)
    where = f"method plugin {name!r} ({info.value!r} from distribution {info.source})"
    try:
        obj = ep.load()
    except Exception as exc:  # any import-time failure of third-party code
        raise PluginError(f"{where} failed to import: {type(exc).__name__}: {exc}") from exc
    if not (inspect.isclass(obj) and issubclass(obj, Method)):
        raise PluginError(f"{where} is {obj!r}, not a subclass of crbench.api.Method")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise PluginError(f"{where} is abstract: it does not implement {missing}")
    return obj


def is_trainable(cls: type[Method]) -> bool:
    """True if ``cls`` has weights that must come from a checkpoint."""
    return issubclass(cls, TrainableMethod) or bool(getattr(cls, "trains", False))


def _check_kwargs(name: str, fn: Any, cfg: dict[str, Any], what: str) -> None:
    try:
        inspect.signature(fn).bind_partial(**cfg)
    except TypeError as exc:
        raise UsageError(f"method {name!r}: options {sorted(cfg)} are not accepted by its "
                         f"{what} ({exc})") from exc
    except ValueError:  # no signature available (builtins); let the call decide
        return


def create_method(name: str, checkpoint: Path | None = None, seq_len: int | None = None,
                  **cfg: Any) -> Method:
    """Build a ready-to-predict method.

    Trainable methods are loaded from ``checkpoint`` with ``cls.load(checkpoint,
    seq_len=seq_len, **cfg)`` (``cfg`` then lists config values the checkpoint must have);
    methods without weights are constructed as ``cls(**cfg)``.

    Raises:
        UsageError: unknown name, options the method does not accept, or a checkpoint given
            to a method without weights.
        PluginError: the plugin cannot be imported.
        CheckpointError: a trainable method without ``checkpoint``, or a checkpoint that does
            not exist or was made for another configuration.
    """
    cls = get_method_class(name)
    if not is_trainable(cls):
        if checkpoint is not None:
            raise UsageError(f"checkpoint: method {name!r} has no weights, so checkpoint "
                             f"{str(checkpoint)!r} cannot be used; drop it")
        _check_kwargs(name, cls, cfg, "constructor")
        return cls(**cfg)
    if checkpoint is None:
        at = f" --L {seq_len}" if seq_len is not None else " --L N"
        raise CheckpointError(
            f"method {name!r} must be trained first: run `crbench train {name} --data ROOT"
            f"{at} --out DIR/{name}` and pass `--checkpoints DIR` to `crbench run` "
            f"(looked up as DIR/{name}/L<L>/, else DIR/{name}/)")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint: {str(checkpoint)!r} for method {name!r} is not a "
                              f"directory; expected one written by `crbench train {name}`")
    method = cls.load(checkpoint, seq_len=seq_len, **cfg)  # type: ignore[attr-defined]
    if not isinstance(method, Method):
        raise PluginError(f"method plugin {name!r}: {cls.__name__}.load returned "
                          f"{type(method).__name__}, not a Method")
    return method


def find_checkpoint(checkpoints: Path | None, name: str, seq_len: int) -> Path | None:
    """Checkpoint lookup rule of ``crbench run --checkpoints DIR``.

    ``DIR/<name>/L<seq_len>/`` if it exists, else ``DIR/<name>/`` if it exists, else None.
    """
    if checkpoints is None:
        return None
    per_l = Path(checkpoints) / name / f"L{seq_len}"
    if per_l.is_dir():
        return per_l
    shared = Path(checkpoints) / name
    return shared if shared.is_dir() else None
