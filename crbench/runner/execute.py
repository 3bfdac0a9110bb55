"""The run loop of `crbench run`: evaluate methods x L on a split, streaming resumable rows.

Run directory (``--out``; default ``results/run-<split>-<hash8>`` where the hash covers the
settings that change results, so rerunning the same command resumes the same run)::

    RUN/manifest.json
        format, crbench_version, config {data, split, region, mask_convention, protocol,
        seed, checkpoints, and sample_steps / samples when given} (the settings a resumed run
        must share), versions {python, torch, numpy, rasterio, pandas}, git (commit of
        crbench's source tree or null), host, started,
        sessions [one entry per invocation: started, host, metrics_backend (native, opencv
                  or torch: crbench.metrics.ssim.FilterBackend), methods, L, shard, ...],
        runs {"<method>__L<L>__shard<k>of<n>": {method, L, shard, rows, n_index, n_selected,
              n_evaluated, n_skipped, checkpoint, checkpoint_sha256 (of the weights file,
              :func:`crbench.torchutil.checkpoint_sha256`), skipped_file, status, samples,
              spread, scored_bands (the S2 bands the metrics cover: all 13, or the
              method's own bands for a method predicting a subset), updated}},
        skipped {method: {L: distinct non-matching samples skipped over all shards}}
    RUN/skipped/<method>__L<L>__shard<k>of<n>.csv    the skipped samples' keys
    RUN/rows/<method>__L<L>__shard<k>of<n>.csv
        header + one row per sample with exactly :data:`~.store.ROW_COLUMNS` (DESIGN.md): method, L,
        split, roi, patch, input_idx ("0;1;2"), target_idx, coverage (mean input coverage),
        nrmse_all, nrmse_cloudy, nrmse_clear, psnr, ssim, sam, seconds (method.predict wall
        time of the batch / batch size). Floats at full precision, NaN as "nan".
    RUN/rows/<same stem>.uncertainty.csv     when a variance exists (--samples K > 1, or a
        method with ``gives_variance``): crbench.metrics.uncertainty's metrics per sample
    RUN/rows/<same stem>.spread.csv                                 (--samples K > 1)
        for methods that accept ``samples`` (Method.runtime_options): the row's metrics are
        the means over K draws (Method.predict_samples) and this sidecar holds, per sample,
        method, L, roi, patch, samples and <metric>_std (std over the draws, ddof 0). Methods
        without it run once (their manifest entry says samples 1).
    RUN/predictions/<method>/L<L>/<ROIsXXXX>_<id>_patch<n>.tif     (--save-predictions)
        uint16 S2 DN (prediction x 10000), 13 bands named B01..B12, target's transform/CRS.

Read the rows back with :func:`crbench.runner.read_rows` (a run dir, a folder of run
dirs/shards, or a list); the manifest with :func:`crbench.runner.read_manifest` (both in
:mod:`.store`). Status values: :class:`~.config.RunStatus`. The per-batch loop is
:mod:`.evaluate`.

Safety: the data are indexed before anything is created (a run that fails on bad ``--data``
leaves no directory); a resume whose checkpoint's content hash differs from the one the
manifest records for that method and L is refused (rows of two models never mix); one process
at a time writes a shard (``RUN/.lock-shard<k>of<n>``, see :func:`.store.run_lock`).

Resume: rows are appended and fsync'ed after every batch; on start the runner cuts off a
partial last line left by a kill, skips every (roi, patch) already present in any rows file
of that method and L, and evaluates only the rest. Shards: the split's index rows, sorted by
(roi, patch), go round-robin to shards (row i -> shard i % n + 1), so shards are disjoint
and their union is the full run; ``--limit N`` keeps the first N matching samples of a shard.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..constants import N_DATES, S2_BANDS
from ..errors import UsageError
from .config import MethodRun, RunConfig, RunStatus, RunSummary
from .evaluate import count_evaluated, evaluate, scored_bands
from .store import (
    MANIFEST_FORMAT,
    check_checkpoints,
    check_run_dir,
    read_skipped,
    rows_path,
    run_lock,
    skipped_path,
    spread_path,
    uncertainty_path,
    update_manifest,
    write_skipped,
)

if TYPE_CHECKING:
    import pandas as pd
    import torch


# ----------------------------------------------------------------------------- environment


def _git_hash() -> str | None:
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and len(text) >= 7 else None


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "rasterio", "pandas"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            found[pkg] = None
    return found


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _start_manifest(cfg: RunConfig, device: torch.device) -> None:
    from ..metrics.ssim import filter_backend

    session = {"started": _now(), "host": socket.gethostname(), "crbench_version": __version__,
               "git": _git_hash(), "metrics_backend": filter_backend(device).value,
               **cfg.session()}

    def change(old: dict[str, Any] | None) -> dict[str, Any]:
        if old is None:
            old = {"format": MANIFEST_FORMAT, "crbench_version": __version__,
                   "config": cfg.identity(), "versions": _versions(), "git": session["git"],
                   "host": session["host"], "started": session["started"], "sessions": [],
                   "runs": {}, "skipped": {}}
        old.setdefault("sessions", []).append(session)
        return old

    update_manifest(cfg.out, change)


def _record(cfg: RunConfig, mr: MethodRun) -> None:
    stem = Path(mr.rows).stem

    def change(old: dict[str, Any] | None) -> dict[str, Any]:
        data = old or {}
        entry = {k: v for k, v in asdict(mr).items() if k not in ("n_new", "seconds")}
        data.setdefault("runs", {})[stem] = {**entry, "updated": _now()}
        data["skipped"] = skipped_counts(cfg.out, data["runs"])
        return data

    update_manifest(cfg.out, change)


def skipped_counts(run_dir: Path, runs: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{method: {L: skipped samples}} of a manifest's ``runs``: distinct keys over the shards'
    skipped files (overlapping shard layouts count a sample once); entries without such a file
    (older runs) add their ``n_skipped``."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs.values():
        groups.setdefault((r["method"], int(r["L"])), []).append(r)
    out: dict[str, dict[str, int]] = {}
    for (method, L), entries in groups.items():
        files = [r["skipped_file"] for r in entries if r.get("skipped_file")]
        keys = read_skipped(run_dir, files).get((method, L), set())
        old = sum(int(r["n_skipped"]) for r in entries if not r.get("skipped_file"))
        out.setdefault(method, {})[str(L)] = len(keys) + old
    return out


# ----------------------------------------------------------------------------- selection


def select_samples(index: pd.DataFrame, shard: tuple[int, int], limit: int | None
                   ) -> tuple[pd.DataFrame, int, int]:
    """The shard's matching samples (first ``limit`` of them) of an index.

    Index rows are sorted by (roi, patch); row i belongs to shard ``i % n + 1``.

    Returns:
        (selected matching rows, index rows in the shard, non-matching rows skipped up to the
        last selected sample, or in the whole shard when no limit cut it short).
    """
    part, match, n_index = _shard_part(index, shard, limit)
    return part[match].reset_index(drop=True), n_index, int((~match).sum())


def skipped_samples(index: pd.DataFrame, shard: tuple[int, int], limit: int | None
                    ) -> list[tuple[str, int]]:
    """(roi, patch) of the non-matching samples :func:`select_samples` counts as skipped."""
    part, match, _ = _shard_part(index, shard, limit)
    skipped = part[~match]
    return [(str(r), int(p)) for r, p in zip(skipped["roi"], skipped["patch"], strict=True)]


def _shard_part(index: pd.DataFrame, shard: tuple[int, int], limit: int | None
                ) -> tuple[pd.DataFrame, Any, int]:
    """The shard's index rows up to the ``limit``-th match, their match flags, and the number
    of index rows in the whole shard."""
    ordered = index.sort_values(["roi", "patch"], kind="stable").reset_index(drop=True)
    k, n = shard
    part = ordered.iloc[k - 1::n].reset_index(drop=True)
    n_index = len(part)
    match = part["match"].astype(bool).to_numpy()
    if limit is not None and match.sum() > limit:
        last = int(match.nonzero()[0][limit - 1])
        part, match = part.iloc[:last + 1], match[:last + 1]
    return part, match, n_index


# ----------------------------------------------------------------------------- run


def _check_methods(cfg: RunConfig) -> dict[str, bool]:
    """Import every method and check checkpoints exist before any work; name -> trainable."""
    from ..errors import CheckpointError
    from ..registry import find_checkpoint, get_method_class, is_trainable

    trainable = {}
    for name in cfg.methods:
        trainable[name] = is_trainable(get_method_class(name))
        if not trainable[name]:
            continue
        missing = [L for L in cfg.seq_lens if find_checkpoint(cfg.checkpoints, name, L) is None]
        if missing:
            where = (f"no {cfg.checkpoints}/{name}/L<L>/ or {cfg.checkpoints}/{name}/"
                     if cfg.checkpoints else "--checkpoints DIR not given")
            raise CheckpointError(
                f"method {name!r} needs a trained checkpoint for L={missing[0]} ({where}); "
                f"train it with `crbench train {name} --data ROOT --L {missing[0]} --out "
                f"DIR/{name}/L{missing[0]}` and pass --checkpoints DIR")
        for L in cfg.seq_lens:
            _check_checkpoint(name, L, find_checkpoint(cfg.checkpoints, name, L),
                              Path(cfg.checkpoints or ".") / name / f"L{L}")
    return trainable


def check_s1(records: list, methods: tuple[str, ...]) -> None:
    """Refuse methods that need S1 on a split where no patch has S1 at every date (where
    some do, the run skips for those methods the samples whose inputs lack S1, counted and
    named in the manifest).

    Raises:
        UsageError: naming ``methods``, the methods and how many patches lack S1.
    """
    from ..api import Need
    from ..data.index import lacking_s1
    from ..registry import get_method_class

    first = lacking_s1(records)
    needy = [m for m in methods if Need.S1 in get_method_class(m).needs]
    if first is not None and needy:
        raise UsageError(f"methods: {', '.join(needy)} need S1, but all {len(records)} "
                         f"patches lack S1 images for some date (e.g. "
                         f"{first.roi} patch {first.patch}); run only S1-free methods "
                         "(e.g. least_cloudy,mosaicing) on this tree")


def _check_checkpoint(name: str, seq_len: int, path: Path, per_l: Path) -> None:
    """Fail before any work if a checkpoint lacks its config or was trained for another L."""
    from ..errors import CheckpointError
    from ..torchutil import check_weights, read_config

    try:
        config = read_config(path)
        check_weights(path)
    except CheckpointError as exc:
        raise CheckpointError(f"method {name!r} at L={seq_len}: {exc}") from exc
    have = config.get("seq_len")
    if have is not None and have != seq_len:
        raise CheckpointError(
            f"method {name!r} at L={seq_len}: checkpoint {path} was trained with "
            f"seq_len={have}; train one for L={seq_len} with `crbench train {name} --data ROOT "
            f"--L {seq_len} --out {per_l}`")


def _device(cfg: RunConfig) -> torch.device:
    import torch

    from ..torchutil import pick_device

    try:
        device = pick_device(cfg.device)
    except RuntimeError as exc:
        raise UsageError(f"--device: bad value {cfg.device!r} ({exc}); expected e.g. cpu, "
                         "cuda or cuda:0") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device: {cfg.device!r} asked for but CUDA is not available; "
                         "use --device cpu")
    return device


def run(cfg: RunConfig, on_start: Callable[[Path], None] | None = None) -> RunSummary:
    """Evaluate every method at every L of ``cfg`` and write the run directory.

    ``on_start(run_dir)`` is called once the settings, methods and checkpoints have been
    checked, just before the first file is written (the CLI prints where rows go).

    Order: for each L, the split is indexed once (cloud masks from the cache, computed where
    missing), then each method runs over the shard's remaining samples.

    Raises:
        UsageError: bad settings; methods that need S1 on a split without S1
            (:func:`check_s1`); ``cfg.out`` holds a run with other settings, or rows of a
            checkpoint whose weights have changed since (content hash); another process is
            writing the same samples into ``cfg.out`` (names its pid).
        PluginError / CheckpointError: a method cannot be imported or lacks a checkpoint.
        DatasetNotFoundError / DataError: missing or broken data.
        KeyboardInterrupt: Ctrl-C (rows written so far are kept; rerun to resume).
    """
    from .. import distributed
    from ..data.index import scan_tree

    records = scan_tree(cfg.data, cfg.split, cfg.region)  # once: checks, indexes, manifest
    check_s1(records, tuple(cfg.methods))
    trainable = _check_methods(cfg)
    hashes = _checkpoint_hashes(cfg, trainable)
    device = _device(cfg)
    with distributed.session(device) as dist:
        if dist.enabled:  # under torchrun each rank is a sub-shard of the user's shard
            device = distributed.device_for_rank(device)
            cfg = replace(cfg, shard=compose_shard(cfg.shard, dist.rank, dist.world_size),
                          progress=cfg.progress and dist.is_main)
        check_run_dir(cfg.out, cfg.identity())
        check_checkpoints(cfg.out, hashes)
        cache, indexes = _indexes(cfg, records)  # bad --data fails here, before anything
        distributed.barrier()  # every rank has validated before any rank writes
        summary = RunSummary(run_dir=cfg.out)
        with run_lock(cfg.out, cfg.shard):
            check_checkpoints(cfg.out, hashes)  # as another process may have left it
            if on_start is not None:
                on_start(cfg.out)
            _start_manifest(cfg, device)
            _run_all(cfg, summary, device, trainable, (cache, indexes, records), hashes)
    return summary


def _checkpoint_hashes(cfg: RunConfig, trainable: dict[str, bool]) -> dict[tuple[str, int], str]:
    """(method, L) -> content hash of the checkpoint each trainable method loads at L."""
    from ..registry import find_checkpoint
    from ..torchutil import checkpoint_sha256

    by_path: dict[Path, str] = {}
    out = {}
    for name in cfg.methods:
        for L in cfg.seq_lens if trainable[name] else ():
            path = find_checkpoint(cfg.checkpoints, name, L)
            if path is not None:
                if path not in by_path:
                    by_path[path] = checkpoint_sha256(path)
                out[(name, L)] = by_path[path]
    return out


def compose_shard(shard: tuple[int, int], rank: int, world_size: int) -> tuple[int, int]:
    """Shard of rank ``rank`` of ``world_size`` inside the user's shard ``(k, n)``.

    Index row i belongs to user shard ``i % n + 1``; within it, round-robin over ranks gives
    row i to rank r iff ``i % (n * world_size) == (k - 1) + n * r``: shard
    ``(k + n * r, n * world_size)``. Ranks are therefore disjoint and together cover (k, n).
    """
    k, n = shard
    return (k + n * rank, n * world_size)


def _indexes(cfg: RunConfig, records: list) -> tuple[Any, dict[int, pd.DataFrame]]:
    """The mask cache and the split's index at every L from the split's ``records`` (rank 0
    fills the cache first)."""
    from .. import distributed
    from ..data.index import build_index
    from ..data.masks import MaskCache

    cache = MaskCache(cfg.data)
    main = distributed.info().is_main
    indexes = {}
    for L in cfg.seq_lens:
        if main:  # rank 0 fills the mask cache; the others then only read it
            indexes[L] = _index(cfg, L, cache, build_index, records)
        distributed.barrier()
        if L not in indexes:
            indexes[L] = _index(cfg, L, cache, build_index, records)
    return cache, indexes


def _run_all(cfg: RunConfig, summary: RunSummary, device: torch.device,
             trainable: dict[str, bool], data: tuple[Any, dict[int, pd.DataFrame], list],
             hashes: dict[tuple[str, int], str]) -> None:
    cache, indexes, records = data
    dates, no_s1 = partial_dates(cfg, records)
    for L in cfg.seq_lens:
        index = indexes[L]
        selected, n_index, n_skipped = select_samples(index, cfg.shard, cfg.limit)
        skipped = skipped_samples(index, cfg.shard, cfg.limit)
        digest = index_digest(index)  # the same for every method at this L
        for name in cfg.methods:
            todo, lacking = _drop_without_s1(selected, name, no_s1)
            mr = MethodRun(method=name, L=L, shard=f"{cfg.shard[0]}/{cfg.shard[1]}",
                           rows=str(rows_path(cfg.out, name, L, cfg.shard).relative_to(cfg.out)),
                           n_index=n_index, n_selected=len(todo), n_skipped=n_skipped,
                           checkpoint_sha256=hashes.get((name, L)),
                           index_sha256=digest, patch_dates=dates or None,
                           n_skipped_no_s1=len(lacking), skipped_no_s1=lacking or None)
            where = skipped_path(cfg.out, name, L, cfg.shard)
            write_skipped(where, name, L, skipped)
            mr.skipped_file = str(where.relative_to(cfg.out))
            summary.runs.append(mr)
            _run_one(cfg, mr, todo, cache, device, trainable[name])


def _drop_without_s1(selected: pd.DataFrame, name: str, no_s1: set[tuple[str, int, int]]
                     ) -> tuple[pd.DataFrame, list[str]]:
    """For a method that needs S1: the selected samples whose input dates all have S1, and
    "<roi> patch <n>" of those left out; unchanged for other methods or a tree with S1."""
    from ..api import Need
    from ..registry import get_method_class

    if not no_s1 or Need.S1 not in get_method_class(name).needs:
        return selected, []
    keep = [not any((str(r), int(p), int(t)) in no_s1 for t in str(i).split(";"))
            for r, p, i in zip(selected["roi"], selected["patch"], selected["input_idx"],
                               strict=True)]
    lacking = [f"{r} patch {p}" for r, p, k in zip(selected["roi"], selected["patch"], keep,
                                                   strict=True) if not k]
    return selected[keep].reset_index(drop=True), lacking


def _index(cfg: RunConfig, seq_len: int, cache: Any, build_index: Callable[..., Any],
           records: list) -> Any:
    return build_index(cfg.data, cfg.split, seq_len, cfg.region, protocol=cfg.protocol,
                       cache=cache, progress=cfg.progress, workers=max(cfg.workers, 1),
                       min_dates=cfg.min_dates, records=records)


def index_digest(index: pd.DataFrame) -> str:
    """sha256 of an index's rows as CSV: the dates every sample of a run used."""
    return hashlib.sha256(index.to_csv(index=False).encode()).hexdigest()


def partial_dates(cfg: RunConfig, records: list | None = None
                  ) -> tuple[dict[str, str], set[tuple[str, int, int]]]:
    """"<roi> patch <n>" -> "t;t;..." for every patch of the split that lacks a date or an
    S1 image (empty for a complete tree), so the manifest says what a partial run had; and
    the (roi, patch, t) of every date without its S1 image. ``records``: the split's
    :func:`~crbench.data.index.scan_tree` records (default: scanned here)."""
    from ..data.cr import SEN12MSCR, detect_dataset
    from ..data.index import scan_tree

    out, lacking = {}, set()
    if detect_dataset(cfg.data) == SEN12MSCR:  # one cloudy and one clear image per patch
        return out, lacking
    for rec in records if records is not None else scan_tree(cfg.data, cfg.split, cfg.region):
        if len(rec.ts) < N_DATES or not rec.has_s1:
            no_s1 = [t for t, p in zip(rec.ts, rec.s1, strict=True) if p is None]
            lacking |= {(rec.roi, rec.patch, t) for t in no_s1}
            note = f" (no S1 at t = {';'.join(map(str, no_s1))})" if no_s1 else ""
            out[f"{rec.roi} patch {rec.patch}"] = ";".join(map(str, rec.ts)) + note
    return out, lacking


def runtime_options(cfg: RunConfig, accepted: frozenset[str]) -> dict[str, Any]:
    """The ``--steps`` / ``--samples`` values to pass to a method whose class accepts
    ``accepted`` (:attr:`crbench.api.Method.runtime_options`); defaults are not passed.
    A stochastic method that accepts ``sample_seed`` gets the run's ``--seed``; one that
    accepts ``protocol`` gets ``--protocol`` (always, default or not)."""
    options = {**cfg.sampling(), "sample_seed": cfg.seed, "protocol": cfg.protocol.value}
    return {k: v for k, v in options.items() if k in accepted}


def _create(cfg: RunConfig, mr: MethodRun, ckpt: Path | None, device: torch.device) -> Any:
    """The method with its runtime options; sets ``mr.samples`` / ``mr.spread`` /
    ``mr.uncertainty`` and ``mr.scored_bands``."""
    from ..registry import create_method, get_method_class

    options = runtime_options(cfg, get_method_class(mr.method).runtime_options)
    mr.samples = options.get("samples", 1)
    if mr.samples > 1:
        mr.spread = str(spread_path(cfg.out, mr.method, mr.L, cfg.shard).relative_to(cfg.out))
    try:
        method = create_method(mr.method, checkpoint=ckpt, seq_len=mr.L, **options).to(device)
    except UsageError as exc:
        if not options:
            raise
        given = " ".join(f"--{'steps' if k == 'sample_steps' else k} {v}"
                         for k, v in options.items())
        raise UsageError(f"method {mr.method!r} with {given}: {exc}") from exc
    # the instance decides: a checkpoint may lack the class's variance (UnCRtainTS with MSE)
    if mr.samples > 1 or method.gives_variance:
        mr.uncertainty = str(uncertainty_path(cfg.out, mr.method, mr.L, cfg.shard)
                             .relative_to(cfg.out))
    subset = scored_bands(method)
    mr.scored_bands = [S2_BANDS[i] for i in subset] if subset else list(S2_BANDS)
    return method


def _run_one(cfg: RunConfig, mr: MethodRun, selected: pd.DataFrame, cache: Any,
             device: torch.device, trainable: bool) -> None:
    """One method at one L, keeping the manifest's status up to date."""
    from ..registry import find_checkpoint

    start = time.perf_counter()
    ckpt = find_checkpoint(cfg.checkpoints, mr.method, mr.L) if trainable else None
    mr.checkpoint = str(ckpt) if ckpt else None
    _record(cfg, mr)
    try:
        method = _create(cfg, mr, ckpt, device)
        evaluate(cfg, mr, method, selected, cache, device)
    except KeyboardInterrupt:
        mr.status = RunStatus.INTERRUPTED.value
        raise
    except BaseException:
        mr.status = RunStatus.FAILED.value
        raise
    else:
        mr.status = RunStatus.DONE.value
    finally:
        mr.seconds = time.perf_counter() - start
        mr.n_evaluated = count_evaluated(cfg, mr, selected)  # from the files, race-free
        _record(cfg, mr)
