"""Generic training loop shared by the learned methods (Seq2point, STGAN, SeqDM).

The loop knows nothing about a particular network: a method hands it a :class:`TrainParts`
(:mod:`crbench.training.context`: the model whose weights form the checkpoint, its config, a
``step_fn`` that does one optimisation step on a batch and returns its losses, the
optimizers/schedulers to checkpoint, extra modules such as a GAN discriminator, and a
``predict_fn`` used for validation).

Typical use inside ``TrainableMethod.fit`` (see ``crbench_methods.seq2point``)::

    opts = TrainOptions(seq_len=L, steps=steps, epochs=cfg["epochs"], batch_size=4, ...)
    return fit_on_dataset(data_root, out, opts, build=self.training_parts)

``build(total_steps, device) -> TrainParts`` is called once the data set (and so the number
of steps) is known, right after ``seed_everything(seed)``: build the networks there (or
lazily) so their initialisation follows the seed; put the modules on ``device`` and create
optimizers/schedulers (e.g. ``LambdaLR(opt, linear_decay(total_steps))``).
``step_fn(batch, ctx)`` receives a :class:`StepContext` with ``ctx.device``, ``ctx.step``,
``ctx.total_steps``, ``ctx.autocast()`` and ``ctx.backward_step(loss, "name")``
(GradScaler-aware backward + optimizer step + zero grad for the optimizer ``name``).
The loop steps the schedulers after every step. Use ``LambdaLR``: on resume its LR is
recomputed from the new run's lambda, so a schedule that depends on the total step count
continues correctly. ``step_fn`` returns its losses as ``{name: float}``.

Without a data root, :class:`Trainer` runs on any :class:`BatchSource` (for example
:class:`RepeatSource` for overfitting one batch in tests); with ``out=None`` nothing is
written.

Checkpoints (``crbench.torchutil`` layout) are written into ``out`` at the end of every epoch,
after every validation and at the end: ``model.safetensors``, ``config.json`` and
``trainer.pt`` (step, epoch, optimizers, schedulers, grad scalers, extra modules, RNG states
and the loss history); ``history.csv`` beside them has one row per ``log_every`` steps (mean
losses and learning rate over those steps, ``seconds`` of wall time since the run started,
validations included and continued on resume) and, at every validation, the scores of
:mod:`crbench.training.validation` (``val_psnr`` over whole images, ``val_nrmse_cloudy`` and
``val_psnr_cloudy`` over the pixels cloudy in every input) of ``predict_fn`` on the first
``val_samples`` samples of the val split's fixed sampler under the strict protocol (the target
is never an input, so the region to fill is not empty) on whole images, on ``target_bands``
where the method predicts only some bands.
``resume=True`` restores all of it, refusing a checkpoint whose config differs, and continues
from the stored step: the data order of the interrupted epoch is reproduced (epoch
permutations are seeded by seed + epoch), so 2 + 2 resumed steps give the same weights as 4.
Without a checkpoint in ``out``, ``resume=True`` starts afresh.

Distributed data parallel (``torchrun --nproc_per_node=N -m crbench.cli.main train ...``):
:func:`fit_on_dataset` opens a :func:`crbench.distributed.session` (NCCL on CUDA, one GPU per
local rank; gloo on CPU). ``batch_size`` is the GLOBAL batch: each rank loads its
:class:`~crbench.training.batches.Share` (positions ``rank::world``) of every single-process
batch, so for the same global batch size the run follows single-process training (up to the
order of float summation). The Trainer wraps ``parts.model`` and every ``extra_modules``
entry with trainable parameters in ``DistributedDataParallel``; ``step_fn`` must run its
gradient-producing forward passes through ``ctx.ddp(module)`` (the module itself in a single
process), which averages gradients over ranks: with per-sample-mean losses, the gradient of
the global-batch mean loss (``ctx.backward_step`` applies ``ctx.share.weight`` for uneven last
batches). Random draws made per sample in ``step_fn`` should be drawn for the global batch
and cut to this rank's rows (``share = ctx.batch_share(n)``; draw ``share.global_size`` rows;
``share.take(...)``) so that every rank sees the single-process stream. The losses
``step_fn`` returns are averaged over ranks, so ``history.csv`` holds global-batch means.
Rank 0 alone shows progress, validates (the scores are broadcast) and writes checkpoints and
history.csv; the other ranks wait at a barrier. All ranks restore the checkpoint on resume.
After the first step the ranks' weights are compared: a ``step_fn`` that bypassed
``ctx.ddp`` (ranks drifting apart) is reported.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..api import Batch, collate
from ..errors import CheckpointError, DatasetNotFoundError, PluginError, UsageError
from ..torchutil import (
    TRAINER_FILE,
    check_config,
    eval_mode,
    load_checkpoint,
    load_scaler_state,
    load_trainer_state,
    pick_device,
    read_config,
    save_checkpoint,
)
from .batches import (
    BatchSource,
    DatasetSource,
    Share,
    batch_size_of,
    check_global_batch,
    main_first,
    weighted_mean_over_ranks,
)
from .context import StepContext, TrainParts
from .options import TrainOptions, check_fit_args, check_train_data
from .validation import VAL_COLUMNS, cloudy_region_scores, mean_scores

HISTORY_FILE = "history.csv"


# ----------------------------------------------------------------------------- RNG state
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _py_state_to_list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_state_to_list(state: tuple) -> list:
    version, internal, gauss = state
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, cached = state["numpy_pos"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos),
                         int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- the loop
def batch_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB of images in [0, 1] (20 log10(1 / RMSE)), shape (B,)."""
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


class Trainer:
    """Runs ``parts.step_fn`` for ``total_steps`` steps with checkpointing and validation.

    Args:
        out: checkpoint directory (None: write nothing).
        total_steps: number of optimisation steps of the whole run.
        device: device the parts live on.
        val_batches: batches for validation (empty: no validation).
        val_every: validate every this many steps (None: at the end of every epoch).
        log_every: one history row per this many steps (mean losses).
        progress: show a tqdm bar on stderr.
        amp: autocast/GradScaler on CUDA.
    """

    def __init__(self, out: Path | None, total_steps: int, device: torch.device,
                 val_batches: Sequence[Batch] = (), val_every: int | None = None,
                 log_every: int = 10, progress: bool = True, amp: bool = True) -> None:
        if total_steps < 1:
            raise UsageError(f"steps: bad value {total_steps}; expected at least 1")
        self.out = Path(out) if out is not None else None
        self.total_steps, self.device = total_steps, device
        self.val_batches, self.val_every = list(val_batches), val_every
        self.log_every, self.progress, self.amp = max(1, log_every), progress, amp
        self.history: list[dict[str, float]] = []
        self.last_scores: dict[str, float] = dict.fromkeys(VAL_COLUMNS, math.nan)
        self._start, self._offset = time.perf_counter(), 0.0

    @property
    def last_psnr(self) -> float:
        """Whole-image PSNR (dB) of the latest validation (NaN before the first)."""
        return self.last_scores["val_psnr"]

    def seconds(self) -> float:
        """Wall time of the run so far (s), including the interrupted runs it resumed."""
        return self._offset + time.perf_counter() - self._start

    def run(self, parts: TrainParts, source: BatchSource, resume: bool = False) -> StepContext:
        """Train until ``total_steps``; returns the final context (``ctx.step``)."""
        ctx = StepContext(self.device, parts.optimizers, self.total_steps, amp=self.amp)
        if resume:
            self._restore(parts, ctx)
        ctx.wrap([parts.model, *parts.extra_modules.values()], parts.unused_parameters)
        spe = source.steps_per_epoch
        if spe < 1:
            raise UsageError(f"batch source: {spe} steps per epoch; expected at least 1")
        window: list[Mapping[str, float]] = []
        show = self.progress and distributed.info().is_main
        bar = tqdm(total=self.total_steps, initial=ctx.step, disable=not show,
                   desc=str(parts.config.get("method", "train")), unit="step", dynamic_ncols=True)
        first = ctx.step
        self._start = time.perf_counter()
        try:
            while ctx.step < self.total_steps:
                ctx.epoch = ctx.step // spe
                for batch in source.epoch(ctx.epoch, ctx.step - ctx.epoch * spe):
                    share = getattr(source, "share", None)
                    ctx.share = (share(ctx.step - ctx.epoch * spe) if share is not None
                                 else Share.whole(batch_size_of(batch)))
                    losses = self._one_step(parts, ctx, batch)
                    if ctx.step == first + 1:
                        check_in_sync([parts.model, *parts.extra_modules.values()])
                    window.append(losses)
                    bar.update(1)
                    self._after_step(parts, ctx, window, spe)
                    post = {k: f"{v:.4f}" for k, v in losses.items() if k != "lr"}
                    val = {"val_nrmse_c": f"{self.last_scores['val_nrmse_cloudy']:.4f}"}
                    bar.set_postfix(post | val, refresh=False)
                    if ctx.step >= self.total_steps:
                        break
        finally:
            bar.close()
        return ctx

    def _one_step(self, parts: TrainParts, ctx: StepContext, batch: Batch) -> Mapping[str, float]:
        parts.model.train()
        for m in parts.extra_modules.values():
            m.train()
        opt = next(iter(parts.optimizers.values()), None)
        lr = float(opt.param_groups[0]["lr"]) if opt is not None else float("nan")
        weight = ctx.share.weight if ctx.share is not None else 1.0
        losses = weighted_mean_over_ranks(dict(parts.step_fn(batch, ctx)), weight)
        losses["lr"] = lr  # the learning rate this step used
        for sched in parts.schedulers.values():
            sched.step()
        ctx.step += 1
        return losses

    def _after_step(self, parts: TrainParts, ctx: StepContext,
                    window: list[Mapping[str, float]], spe: int) -> None:
        last = ctx.step >= self.total_steps
        if ctx.step % self.log_every == 0 or last:
            self._log(parts, ctx, window)
            window.clear()
        epoch_end = ctx.step % spe == 0
        every = self.val_every or spe
        validate = bool(self.val_batches) and (ctx.step % every == 0 or last)
        if validate:  # on rank 0; the others wait for its result
            scores = self.validate(parts) if distributed.info().is_main else None
            self.last_scores = dict(distributed.broadcast_object(scores))
            if not self.history or self.history[-1]["step"] != ctx.step:
                self.history.append({"step": ctx.step, "epoch": ctx.epoch,
                                     "seconds": round(self.seconds(), 3)})
            self.history[-1].update(self.last_scores)
        if self.out is not None and (epoch_end or validate or last):
            self.save(parts, ctx)

    def _log(self, parts: TrainParts, ctx: StepContext,
             window: list[Mapping[str, float]]) -> None:
        row: dict[str, float] = {"step": ctx.step, "epoch": ctx.epoch,
                                 "seconds": round(self.seconds(), 3)}
        for key in window[0] if window else ():
            row[key] = float(np.mean([w[key] for w in window if key in w]))
        self.history.append(row)

    def validate(self, parts: TrainParts) -> dict[str, float]:
        """Mean :data:`~crbench.training.validation.VAL_COLUMNS` scores of
        ``parts.predict_fn`` on the validation batches (NaN without any)."""
        if parts.predict_fn is None or not self.val_batches:
            return dict.fromkeys(VAL_COLUMNS, math.nan)
        scores = []
        with eval_mode(parts.model), torch.no_grad():
            for batch in self.val_batches:
                pred = parts.predict_fn(batch.inputs.to(self.device))
                target = batch.target.to(self.device)
                if parts.target_bands is not None:
                    target = target[:, list(parts.target_bands)]
                scores.append({k: v.cpu() for k, v in cloudy_region_scores(
                    pred, target, batch.inputs.masks).items()})
        return mean_scores(scores)

    # -- checkpoints
    def save(self, parts: TrainParts, ctx: StepContext) -> Path:
        """Write the checkpoint and history.csv into ``out`` (rank 0; the others wait)."""
        assert self.out is not None
        if distributed.info().is_main:
            self._write(parts, ctx)
        distributed.barrier()
        return self.out

    def _write(self, parts: TrainParts, ctx: StepContext) -> None:
        assert self.out is not None
        state = {
            "step": ctx.step, "epoch": ctx.epoch, "total_steps": self.total_steps,
            "optimizers": {k: o.state_dict() for k, o in parts.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in parts.schedulers.items()},
            "scalers": {k: s.state_dict() for k, s in ctx.scalers.items()},
            "extra": {k: m.state_dict() for k, m in parts.extra_modules.items()},
            "rng": _rng_state(),
            "history": self.history,
        }
        save_checkpoint(self.out, parts.model.state_dict(), parts.config, state)
        write_history(self.out / HISTORY_FILE, self.history)

    def _restore(self, parts: TrainParts, ctx: StepContext) -> None:
        if self.out is None or not (self.out / TRAINER_FILE).is_file():
            return  # nothing to resume from: start afresh
        stored = read_config(self.out)
        check_config(stored, self.out, **parts.config)
        weights, _ = load_checkpoint(self.out)
        state = load_trainer_state(self.out)
        assert state is not None
        try:
            parts.model.load_state_dict(weights)
            for name, sd in state["extra"].items():
                parts.extra_modules[name].load_state_dict(sd)
            for name, sd in state["optimizers"].items():
                parts.optimizers[name].load_state_dict(sd)
            for name, sd in state["schedulers"].items():
                parts.schedulers[name].load_state_dict(sd)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"resume: {self.out} does not fit this model ({exc}); "
                                  "use a fresh --out directory") from exc
        for sched in parts.schedulers.values():
            _refresh_lr(sched)
        for name, sd in state["scalers"].items():
            load_scaler_state(ctx.scalers[name], sd)
        ctx.step, ctx.epoch = int(state["step"]), int(state["epoch"])
        _set_rng_state(state["rng"])
        self.history = [r for r in state["history"] if r["step"] <= ctx.step]
        self._offset = max((float(r.get("seconds", 0.0)) for r in self.history), default=0.0)


def check_in_sync(modules: Sequence[nn.Module]) -> None:
    """Under DDP, PluginError if the ranks' weights differ (a ``step_fn`` that did not run its
    networks through ``ctx.ddp``); a no-op in a single process."""
    if not distributed.info().enabled:
        return
    import torch.distributed as dist

    total = sum((p.detach().double().sum() for m in modules for p in m.parameters()),
                torch.zeros((), dtype=torch.float64))
    device = total.device if dist.get_backend() == "nccl" else torch.device("cpu")
    low, high = total.reshape(1).to(device), total.reshape(1).to(device).clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if float(high - low) > 1e-9 * max(1.0, abs(float(high))):
        raise PluginError("training: the ranks' weights differ after one step; the method's "
                          "step_fn must run its networks through ctx.ddp(module) under torchrun")


def _refresh_lr(sched: Any) -> None:
    """Set a restored LambdaLR's learning rates from *this* run's lambdas at its step.

    The stored optimizer holds the LR of the interrupted run, whose schedule depended on its
    total step count (e.g. 0 after its last step); a resumed run with more steps recomputes it.
    """
    if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
        lrs = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas,
                                                                strict=True)]
        for group, lr in zip(sched.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        sched._last_lr = lrs


def write_history(path: Path, rows: Sequence[Mapping[str, float]]) -> None:
    """Write ``rows`` as CSV (columns: union of keys, step and epoch first)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        frame = pd.DataFrame(columns=["step", "epoch"])
    first = [c for c in ("step", "epoch") if c in frame.columns]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    tmp = path.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


# ----------------------------------------------------------------------------- data-set driver
def _dataset(root: Path, split: str, opts: TrainOptions, sampler: str) -> Any:
    from ..data.dataset import dataset_class

    cls = dataset_class(root)  # SEN12MSCRTS, or SEN12MSCR for that layout
    kwargs: dict[str, Any] = {"split": split, "L": opts.seq_len, "region": opts.region,
                              "sampler": sampler, "seed": opts.seed, "crop": opts.crop,
                              "s1_db_range": opts.s1_db_range}
    if split == "train":  # opts.train_sampler; the toolbox trains on every patch
        kwargs.update(protocol=opts.protocol, only_matching=False)
        return cls(root, **kwargs)
    if sampler == "fixed":  # validation: whole images, the target is never an input
        kwargs.update(protocol="strict", crop=None)
    ds = cls(root, **kwargs)
    if sampler == "fixed" and len(ds) == 0:  # no matching sample: validate on all of them
        ds = cls(root, only_matching=False, **kwargs)
    return ds


def validation_batches(root: Path, opts: TrainOptions) -> list[Batch]:
    """The first ``val_samples`` fixed-sampler samples of the val split under the strict
    protocol (the target is never an input), whole images (``crop`` is for training only), in
    batches of ``batch_size``; empty if none."""
    if opts.val_samples <= 0:
        return []
    try:
        ds = _dataset(root, "val", opts, "fixed")
    except DatasetNotFoundError:
        return []
    n = min(opts.val_samples, len(ds))
    items = [ds[i] for i in range(n)]
    size = max(1, opts.batch_size)
    return [collate(items[i:i + size]) for i in range(0, n, size)]


def fit_on_dataset(data_root: Path, out: Path, opts: TrainOptions,
                   build: Callable[[int, torch.device], TrainParts]) -> Path:
    """Train on the train split of ``data_root`` (``opts.train_sampler``, by default the
    random sampler; ``opts.protocol``); return ``out``.

    Under ``torchrun`` this is data-parallel training over the job's ranks (see the module
    docstring); ``opts.batch_size`` is the global batch and must split evenly over them.

    Args:
        data_root: SEN12MS-CR-TS root.
        out: checkpoint directory (created).
        opts: run options.
        build: ``(total_steps, device) -> TrainParts`` (see the module docstring).

    Raises:
        UsageError: bad options, or a global batch that does not split over the ranks.
    """
    check_fit_args(opts.steps, opts.batch_size, opts.crop, opts.workers)
    check_train_data(opts.train_sampler, opts.protocol)
    device = pick_device(opts.device)
    with distributed.session(device) as dist:
        check_global_batch(opts.batch_size, dist.world_size)
        if dist.enabled:
            device = distributed.device_for_rank(device)
        seed_everything(opts.seed)
        root = Path(data_root)
        train, val = main_first(lambda: (_dataset(root, "train", opts, opts.train_sampler),
                                         validation_batches(root, opts)))
        source = DatasetSource(train, opts.batch_size, opts.seed, opts.workers,
                               pin_memory=device.type == "cuda", rank=dist.rank,
                               world_size=dist.world_size)
        total = opts.steps if opts.steps is not None else opts.epochs * source.steps_per_epoch
        parts = build(total, device)
        trainer = Trainer(out, total, device, val, val_every=opts.val_every,
                          log_every=min(opts.log_every, total), progress=opts.progress)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        ctx = trainer.run(parts, source, resume=opts.resume)
        if ctx.step == 0 or not (out / TRAINER_FILE).is_file():
            trainer.save(parts, ctx)
    return out
