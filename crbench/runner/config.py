"""Settings and outcomes of ``crbench run``, shared by the run loop and the evaluation loop.

:class:`RunConfig` (the validated settings of one invocation, with the identity a resumed run
directory must share), :class:`MethodRun` (one method x L x shard, as the manifest's ``runs``
holds it), :class:`RunSummary`, :class:`RunStatus` and :func:`parse_shard`. Nothing here
imports the other modules of :mod:`crbench.runner`.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError, parse_enum

DEFAULT_RESULTS = Path("results")


class RunStatus(enum.Enum):
    """State of one method x L x shard in the manifest."""

    RUNNING = "running"  # also what a killed run leaves behind
    DONE = "done"
    INTERRUPTED = "interrupted"  # Ctrl-C
    FAILED = "failed"


def parse_shard(text: str | tuple[int, int]) -> tuple[int, int]:
    """Parse ``"k/n"`` (1 <= k <= n) into ``(k, n)``.

    Raises:
        UsageError: anything else, naming the bad value and the expected form.
    """
    if isinstance(text, tuple):
        k, n = text
    else:
        parts = str(text).strip().split("/")
        try:
            k, n = (int(p) for p in parts) if len(parts) == 2 else (0, 0)
        except ValueError:
            k, n = 0, 0
    if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
        raise UsageError(f"--shard: bad value {text!r}; expected k/n with 1 <= k <= n, e.g. "
                         "1/4 for the first of four shards")
    return k, n


def _positive(name: str, value: int | None, allow_none: bool = False, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name}: bad value {value!r}; expected an integer >= {minimum}")


@dataclass
class RunConfig:
    """Settings of one ``crbench run`` invocation (validated and normalized on creation).

    Attributes:
        data: dataset root.
        methods: registry names to evaluate.
        seq_lens: the L values.
        split: "test", "val", "train" or "all".
        region: region name.
        checkpoints: directory with ``<method>/L<L>/`` or ``<method>/`` checkpoints.
        out: run directory; None -> :func:`default_out`.
        shard: (k, n) or "k/n".
        limit: evaluate only the first N matching samples of the shard.
        mask_convention: "paper" or "toolbox" (crbench.metrics.MaskConvention).
        protocol: "toolbox", "strict" or "parity" (crbench.data.sampler.Protocol); also
            passed to methods that list ``"protocol"`` in their runtime options (mosaicing).
        batch_size: samples per batch.
        workers: DataLoader worker processes (also used to compute missing masks).
        device: torch device; None -> CUDA if available, else CPU.
        save_predictions: write GeoTIFF predictions.
        seed: seed for stochastic methods (reseeded per batch from seed, method, L, sample).
        min_dates: index only patches with at least this many dates (partial trees);
            None -> L + 1.
        progress: show progress bars (stderr).
        sample_steps: ``--steps``: respaced sampling steps, passed to methods that accept
            ``sample_steps``; None -> each method's own setting (the checkpoint's).
        samples: ``--samples``: K draws per input for methods that accept ``samples``; rows
            hold the mean metric over the draws, ``rows/*.spread.csv`` the spread. Other
            methods run once.
    """

    data: Path
    methods: Sequence[str]
    seq_lens: Sequence[int]
    split: str = "test"
    region: str = "all"
    checkpoints: Path | None = None
    out: Path | None = None
    shard: tuple[int, int] | str = (1, 1)
    limit: int | None = None
    mask_convention: Any = "paper"
    protocol: Any = "toolbox"
    batch_size: int = 8
    workers: int = 0
    device: str | None = None
    save_predictions: bool = False
    seed: int = 0
    progress: bool = True
    sample_steps: int | None = None
    samples: int = 1
    min_dates: int | None = None

    def __post_init__(self) -> None:
        from ..data.index import check_split_region
        from ..data.sampler import Protocol, check_seq_len
        from ..metrics import MaskConvention

        self.data = Path(self.data).expanduser().resolve()
        if isinstance(self.methods, str):
            self.methods = [m for m in self.methods.split(",") if m.strip()]
        self.methods = list(dict.fromkeys(m.strip() for m in self.methods))
        if not self.methods:
            raise UsageError("--methods: empty; expected a comma-separated list of registered "
                             "methods (see `crbench methods`), e.g. least_cloudy,mosaicing")
        if not self.seq_lens:
            raise UsageError("--L: empty; expected one or more sequence lengths, e.g. 3 4 5")
        self.seq_lens = list(dict.fromkeys(check_seq_len(L) for L in self.seq_lens))
        check_split_region(self.split, self.region)
        if self.checkpoints is not None:
            self.checkpoints = Path(self.checkpoints).expanduser().resolve()
        self.shard = parse_shard(self.shard)
        _positive("--limit", self.limit, allow_none=True)
        _positive("--batch-size", self.batch_size)
        _positive("--workers", self.workers, minimum=0)
        _positive("--steps", self.sample_steps, allow_none=True)
        _positive("--samples", self.samples)
        if self.min_dates is not None:
            from ..data.index import check_min_dates

            check_min_dates(self.min_dates, 1)
        self.mask_convention = parse_enum(MaskConvention, self.mask_convention,
                                           "--mask-convention")
        self.protocol = Protocol.parse(self.protocol)
        self.out = Path(self.out) if self.out is not None else default_out(self)

    def identity(self) -> dict[str, Any]:
        """The settings that change result values; a resumed run dir must share them.
        ``sample_steps`` / ``samples`` appear only when not default, so runs without them keep
        their identity (and default run directory)."""
        ident = {"data": str(self.data), "split": self.split, "region": self.region,
                 "mask_convention": self.mask_convention.value,
                 "protocol": self.protocol.value, "seed": self.seed,
                 "checkpoints": str(self.checkpoints) if self.checkpoints else None}
        ident.update(self.sampling())
        if self.min_dates is not None:
            ident["min_dates"] = self.min_dates
        return ident

    def sampling(self) -> dict[str, int]:
        """``--steps`` / ``--samples`` as given (only the non-default ones)."""
        out = {"sample_steps": self.sample_steps} if self.sample_steps is not None else {}
        return {**out, "samples": self.samples} if self.samples != 1 else out

    def session(self) -> dict[str, Any]:
        """The per-invocation settings (recorded, free to change between resumes)."""
        return {"methods": list(self.methods), "L": list(self.seq_lens),
                "shard": f"{self.shard[0]}/{self.shard[1]}", "limit": self.limit,
                "batch_size": self.batch_size, "workers": self.workers, "device": self.device,
                "save_predictions": self.save_predictions,
                "sample_steps": self.sample_steps, "samples": self.samples}




def default_out(cfg: RunConfig, results: Path = DEFAULT_RESULTS) -> Path:
    """``results/run-<split>-<hash8>``; the hash covers :meth:`RunConfig.identity`, so the
    same command resumes the same directory and other settings get another one."""
    digest = hashlib.sha256(json.dumps(cfg.identity(), sort_keys=True).encode()).hexdigest()
    return Path(results) / f"run-{cfg.split}-{digest[:8]}"


@dataclass
class MethodRun:
    """Outcome of one method at one L for the shard (what the manifest's ``runs`` holds)."""

    method: str
    L: int
    shard: str
    rows: str
    n_index: int = 0  # index rows (patches) of the shard
    n_selected: int = 0  # matching samples selected (after --limit)
    n_evaluated: int = 0  # selected samples with a row (this session or before)
    n_new: int = 0  # rows written by this session
    n_skipped: int = 0  # non-matching samples skipped
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None  # content hash of the checkpoint's weights
    skipped_file: str | None = None  # the non-matching samples (relative to the run dir)
    status: str = RunStatus.RUNNING.value
    samples: int = 1  # draws per input (1 for methods that do not accept --samples)
    spread: str | None = None  # spread sidecar (relative to the run dir) when samples > 1
    uncertainty: str | None = None  # uncertainty sidecar (relative) when a variance exists
    seconds: float = 0.0  # wall time of this session for this method x L
    index_sha256: str | None = None  # of the index rows (which dates each sample used)
    patch_dates: dict[str, str] | None = None  # "roi patch" -> its dates, partial patches only
    n_skipped_no_s1: int = 0  # samples left out because an input date lacks S1 (S1 methods)
    skipped_no_s1: list[str] | None = None  # "roi patch n" of those samples
    scored_bands: list[str] | None = None  # the S2 bands the metrics cover (Method.bands)


@dataclass
class RunSummary:
    """What :func:`run` did."""

    run_dir: Path
    runs: list[MethodRun] = field(default_factory=list)
