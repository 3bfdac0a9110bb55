"""Training loop of SeqDMs: Algorithm 2 with AdamW, EMA, mixed precision and checkpoints.

One *iteration* takes one optimiser step on the cloud-free target and its S1 image (Eq. 27)
and, with the temporal training strategy on, a second optimiser step on the fused cloudy
sequence (Eq. 28). ``--no-temporal-training`` (config ``temporal_training=False``) keeps only
the first: the ablation of the paper's Table 4.

Checkpoints: ``model.safetensors`` holds the EMA weights (used for sampling), ``trainer.pt`` the
raw weights, optimiser, grad-scaler, EMA counter, random-generator state and iteration count.

Data: shuffled batches from :class:`crbench.training.DatasetSource` (one permutation per epoch,
seeded by (seed, epoch); a resumed run continues the interrupted epoch's order).

Data-parallel training under ``torchrun`` (NCCL on CUDA, gloo on CPU): ``batch_size`` is the
global batch; each rank loads its share (positions ``rank::world``) of the single-process
batch, the raw network is wrapped in ``DistributedDataParallel`` (gradients averaged over
ranks, which for these per-sample-mean losses is the global-batch mean's gradient), and the
time steps and noise are drawn for the whole global batch from the same generator on every
rank, each keeping its rows (:class:`.seqtis.GlobalDraws`). Gradients, weights and therefore
the EMA are identical on all ranks, and the run follows single-process training with the same
global batch. Rank 0 alone shows progress, validates (the PSNR is broadcast) and writes
checkpoints and history.csv (with global-batch mean losses); the other ranks wait at a barrier.
All ranks load the checkpoint on resume.
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from crbench import distributed
from crbench.api import Batch, Inputs, collate
from crbench.errors import CheckpointError, DataError, UsageError
from crbench.torchutil import autocast, grad_scaler, load_scaler_state, load_trainer_state
from crbench.training.batches import (
    DatasetSource,
    Share,
    check_global_batch,
    main_first,
    weighted_mean_over_ranks,
)
from crbench.training.validation import cloudy_region_scores, mean_scores

from .diffusion import GaussianDiffusion, Losses
from .seqtis import (
    AuxCondition,
    Fusion,
    GlobalDraws,
    LossRegion,
    UnknownState,
    aux_state,
    loss_clear,
    loss_sequence,
)

if TYPE_CHECKING:
    from . import SeqDM

HISTORY_FIELDS = ("iteration", "loss_clear", "loss_seq", "mse_clear", "vb_clear", "val_psnr",
                  "val_nrmse_cloudy", "val_psnr_cloudy",
                  "val_eps_q1", "val_eps_q2", "val_eps_q3", "val_eps_q4", "seconds")


@dataclass
class TrainBatch:
    """One batch in network units ([-1, 1]); ``clear`` is (B, L, 1, H, W), 1 = cloud-free."""

    x0: torch.Tensor
    a0: torch.Tensor
    s2: torch.Tensor
    s1: torch.Tensor
    clear: torch.Tensor


def to_network(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s2, s1, clear) of a batch of Inputs in network units ([-1, 1])."""
    return (inputs.s2 * 2.0 - 1.0, inputs.s1 * 2.0 - 1.0,
            (1.0 - inputs.masks).unsqueeze(2).to(inputs.s2.dtype))


def prepare_batch(batch: Batch, device: torch.device) -> TrainBatch:
    """Move a collated batch to ``device`` in network units. A_0 of Eq. 27 is the target
    date's own S1 image (``batch.target_s1``; SEN12MS-CR-TS has S1 for every date); a batch
    without it (a dataset made without ``target_s1=True``) falls back to the S1 of the input
    date nearest in time."""
    # non-blocking: the training loader pins its batches on CUDA, so the copies overlap
    # with the host's work instead of stalling it
    inputs = batch.inputs.to(device, non_blocking=True)
    s2, s1, clear = to_network(inputs)
    x0 = batch.target.to(device, non_blocking=True) * 2.0 - 1.0
    if batch.target_s1 is not None:
        return TrainBatch(x0=x0, a0=batch.target_s1.to(device, non_blocking=True) * 2.0 - 1.0,
                          s2=s2, s1=s1, clear=clear)
    nearest = [min(range(len(m.input_idx)), key=lambda j, m=m: abs(m.input_idx[j] - m.target_idx))
               for m in batch.meta]
    rows = torch.arange(s1.shape[0], device=device)
    a0 = s1[rows, torch.as_tensor(nearest, device=device)]
    return TrainBatch(x0=x0, a0=a0, s2=s2, s1=s1, clear=clear)


def _stat_draws(ds: torch.utils.data.Dataset, n_samples: int) -> list[torch.Tensor]:
    """The clear targets of ``n_samples`` items of ``ds`` in [-1, 1] units, spread evenly over
    the split; a split of fewer items is drawn again in later epochs (the random sampler
    then picks other target dates and crops), and ``ds``'s epoch is restored."""
    n = len(ds)
    epoch = getattr(ds, "epoch", 0)
    cycle = hasattr(ds, "set_epoch") and n < n_samples
    count = n_samples if cycle else min(n, n_samples)
    targets = []
    try:
        for k in range(count):
            if cycle:
                ds.set_epoch(k // n)
            targets.append(ds[k % n if cycle else k * n // count].target * 2 - 1)
    finally:
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
    return targets


def band_stats(ds: torch.utils.data.Dataset, n_samples: int = 64, margin: float = 0.05
               ) -> tuple[list[float], list[float], list[float]]:
    """Per-band minimum, maximum and mean of the clear targets of ``n_samples`` draws from
    ``ds`` (:func:`_stat_draws`) in [-1, 1] units, rounded to 4 decimals. The minimum and
    maximum are widened by ``margin`` on each side (within [-1, 1]): the range sampling clips
    its x0 estimates to (config ``clip_range``). The mean is ``prediction="edm"``'s mu, the
    prior of a fill no date sees: on a split of a few patches (the demo's has 8) one epoch's
    targets are a few dates only, so the draws go on over later epochs."""
    x = torch.stack(_stat_draws(ds, n_samples)).transpose(0, 1).flatten(1)  # (13, pixels)
    low = (x.amin(dim=1) - margin).clamp(min=-1.0)
    high = (x.amax(dim=1) + margin).clamp(max=1.0)
    return tuple([round(float(v), 4) for v in row]  # type: ignore[return-value]
                 for row in (low, high, x.mean(dim=1)))


class Trainer:
    """Optimises a raw copy of ``ema_net`` and keeps ``ema_net`` as its exponential average.

    Call :meth:`distribute` (after loading any resume state) to train data-parallel.
    """

    def __init__(self, ema_net: nn.Module, diff: GaussianDiffusion, cfg: dict[str, Any],
                 device: torch.device, seed: int = 0, amp_dtype: torch.dtype | None = None
                 ) -> None:
        self.cfg, self.diff, self.device, self.amp_dtype = cfg, diff, device, amp_dtype
        self.ema = ema_net.to(device).requires_grad_(False)
        self.model = copy.deepcopy(self.ema).requires_grad_(True).train()
        self.net: nn.Module = self.model  # what forward passes go through (DDP wrapper)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=float(cfg["lr"]),
                                     weight_decay=float(cfg["weight_decay"]))
        self.scaler = grad_scaler(device, amp_dtype)
        self.generator = torch.Generator(device).manual_seed(seed)
        self.iteration = 0
        self.optimizer_steps = 0

    def distribute(self) -> None:
        """Wrap the raw network in DistributedDataParallel when in a process group."""
        if distributed.info().enabled and self.net is self.model:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)

    def _update(self, losses: Losses, weight: float = 1.0) -> torch.Tensor:
        loss = losses.loss.mean()
        self.opt.zero_grad(set_to_none=True)
        # weight != 1: uneven last global batch under DDP (see crbench.training.batches.Share)
        self.scaler.scale(loss if weight == 1.0 else loss * weight).backward()
        self.scaler.unscale_(self.opt)
        clip = float(self.cfg["grad_clip"])
        if clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self._ema_update()
        self.optimizer_steps += 1
        return loss.detach()

    def ema_rate(self) -> float:
        """The EMA decay of the next update: ``ema_decay``, or with ``ema_warmup``
        min(ema_decay, (1 + n) / (10 + n)) after n optimiser steps, so that a short run's EMA
        is not dominated by the initial weights."""
        decay = float(self.cfg["ema_decay"])
        if self.cfg.get("ema_warmup", False):
            n = self.optimizer_steps
            decay = min(decay, (1.0 + n) / (10.0 + n))
        return decay

    @torch.no_grad()
    def _ema_update(self) -> None:
        decay = self.ema_rate()
        for e, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            e.copy_(b)

    def iterate(self, b: TrainBatch, share: Share | None = None) -> dict[str, float]:
        """One iteration of Algorithm 2; returns the losses it took steps on (global-batch
        means when ``share`` is this rank's part of a global batch under DDP)."""
        share = share if share is not None else Share.whole(b.x0.shape[0])
        draws: torch.Generator | GlobalDraws = self.generator
        if share.global_size != b.x0.shape[0]:
            draws = GlobalDraws(self.generator, share.rows, share.global_size)
        # losses stay on the device until the iteration ends: one device-to-host copy (and
        # synchronisation) per iteration instead of one per value
        rec: dict[str, torch.Tensor] = {}
        t = share.take(self.diff.sample_t(share.global_size, self.device, self.generator))
        with autocast(self.device, dtype=self.amp_dtype):
            losses = loss_clear(self.diff, self.net, b.x0, b.a0, t, draws,
                                AuxCondition(self.cfg["aux_condition"]))
        rec["mse_clear"] = losses.mse.detach().mean()
        rec["vb_clear"] = losses.vb.detach().mean()
        rec["loss_clear"] = self._update(losses, share.weight)
        if self.cfg["temporal_training"]:
            t = share.take(self.diff.sample_t(share.global_size, self.device, self.generator))
            with autocast(self.device, dtype=self.amp_dtype):
                losses = loss_sequence(
                    self.diff, self.net, b.x0, b.s2, b.s1, b.clear, t,
                    fusion=Fusion(self.cfg["fusion"]), shared_noise=bool(self.cfg["shared_noise"]),
                    s=float(self.cfg["fusion_offset"]),
                    region=LossRegion(self.cfg["seq_loss_region"]),
                    unknown=UnknownState(self.cfg["seq_unknown"]), generator=draws,
                    aux=AuxCondition(self.cfg["aux_condition"]))
            rec["loss_seq"] = self._update(losses, share.weight)
        self.iteration += 1
        values = torch.stack([v.float() for v in rec.values()]).tolist()
        return weighted_mean_over_ranks(dict(zip(rec, values, strict=True)), share.weight)

    def state(self) -> dict[str, Any]:
        """Resumable state (loadable with ``torch.load(weights_only=True)``)."""
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(), "iteration": self.iteration,
                "optimizer_steps": self.optimizer_steps, "generator": self.generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (the EMA weights come from model.safetensors)."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        load_scaler_state(self.scaler, state["scaler"])
        self.iteration = int(state["iteration"])
        self.optimizer_steps = int(state["optimizer_steps"])
        self.generator.set_state(state["generator"])


def _loader(ds: torch.utils.data.Dataset, batch_size: int, workers: int,
            device: torch.device) -> torch.utils.data.DataLoader:
    """Validation batches in order (workers kept alive between validations)."""
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
        drop_last=False, pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def _batches(source: DatasetSource, iteration: int) -> Iterator[tuple[Batch, Share]]:
    """Endless (batch, share) pairs from ``iteration`` on; the random sampler draws new dates
    and crops every epoch."""
    spe = source.steps_per_epoch
    epoch, start = divmod(iteration, spe)
    while True:
        for k, batch in enumerate(source.epoch(epoch, start), start=start):
            yield batch, source.share(k)
        epoch, start = epoch + 1, 0


def _datasets(data_root: Path, L: int, region: str, crop: int | None, seed: int
              ) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
    from crbench.data.dataset import dataset_class

    cls = dataset_class(data_root)  # SEN12MSCRTS, or SEN12MSCR (L = 1) for that layout
    train = cls(data_root, split="train", L=L, region=region, sampler="random", seed=seed,
                crop=crop, target_s1=True)
    if len(train) == 0:
        raise DataError(f"data_root: {data_root} has no usable training sample for L={L} in "
                        f"region {region!r} (the train split needs a cloud-free target date)")
    try:
        # strict protocol: the target is never an input, so the cloudy region is not empty;
        # whole images, as evaluation sees them
        val = cls(data_root, split="val", L=L, region=region, sampler="fixed",
                  protocol="strict", target_s1=True)
    except FileNotFoundError:
        val = None
    return train, (val if val is not None and len(val) > 0 else None)


VAL_T_BUCKETS = 4  # eps-MSE is logged at the centre of each quarter of the diffusion steps


@torch.no_grad()
def eps_mse_by_t(method: SeqDM, batch: Batch, n_buckets: int = VAL_T_BUCKETS
                 ) -> dict[str, float]:
    """Eq. 27 noise-prediction MSE of the (EMA) network on the clear targets of ``batch`` at
    the centre step of each of ``n_buckets`` equal ranges of t, with a fixed noise draw
    (columns ``val_eps_q1`` for the quarter nearest the data ... ``val_eps_q4`` nearest pure
    noise; under ``prediction="x0"`` or ``"edm"`` the noise its x0 estimate implies). The
    noise is hardest to tell at small t; a model that shrinks its estimate (the failure of the
    literal Eq. 28, see the package docstring) shows a high ``val_eps_q4``."""
    b = prepare_batch(batch, method.device)
    diff, total = method.diffusion, method.diffusion.num_timesteps
    gen = torch.Generator(method.device).manual_seed(0)
    out = {}
    for k in range(n_buckets):
        lo, hi = k * total // n_buckets, (k + 1) * total // n_buckets
        t = torch.full((b.x0.shape[0],), (lo + hi) // 2, device=method.device, dtype=torch.long)
        noise = torch.randn(b.x0.shape, generator=gen, device=method.device)
        a_t = aux_state(diff, b.a0, t, torch.randn(b.a0.shape, generator=gen,
                                                   device=method.device),
                        AuxCondition(method.config["aux_condition"]))
        x_t = diff.q_sample(b.x0, t, noise)
        net_out = method._net_fn(x_t, a_t, diff.model_timesteps(t))
        eps = diff.x0_from_head(net_out.float().chunk(2, dim=1)[0], x_t, t)[1]
        out[f"val_eps_q{k + 1}"] = float(((eps - noise) ** 2).mean())
    return out


@torch.no_grad()
def validate(method: SeqDM, loader: torch.utils.data.DataLoader | None, max_batches: int,
             steps: int) -> dict[str, float]:
    """Validation of the EMA model on at most ``max_batches`` validation batches: samples of
    Algorithm 1 with ``steps`` sampling steps scored by
    :func:`crbench.training.validation.cloudy_region_scores` (means over samples, NaN left
    out), and :func:`eps_mse_by_t` (means over batches). Empty without validation data."""
    if loader is None or max_batches <= 0:
        return {}
    scores, eps = [], []
    for k, batch in enumerate(loader):
        if k >= max_batches:
            break
        pred = method.sample(batch.inputs.to(method.device), steps=steps, samples=1,
                             progress=False)[0]
        scores.append(cloudy_region_scores(pred, batch.target, batch.inputs.masks))
        eps.append({key: torch.tensor([v]) for key, v in eps_mse_by_t(method, batch).items()})
    return mean_scores([*scores, *eps])


def _append_history(path: Path, rows: list[dict[str, Any]]) -> None:
    new = not path.is_file()
    if not new:
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        if tuple(header) != HISTORY_FIELDS:  # written by an older version: rewrite in full
            with path.open(newline="") as fh:
                rows = [*csv.DictReader(fh), *rows]
            new = True
            path.unlink()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def run_training(method: SeqDM, data_root: Path, out: Path, *, steps: int | None,
                 batch_size: int,
                 device: torch.device, resume: bool, seed: int, progress: bool, workers: int,
                 region: str, crop: int | None) -> Path:
    """Train ``method`` (its ``net`` ends up holding the EMA weights); see SeqDM.fit.
    ``steps=None`` trains ``epochs`` (config) passes over the train split.

    Under torchrun: data-parallel over the job's ranks (module docstring); ``batch_size`` is
    the global batch and must split evenly over them (UsageError otherwise).
    """
    with distributed.session(device) as dist:
        check_global_batch(batch_size, dist.world_size)
        if dist.enabled:
            device = distributed.device_for_rank(device)
            method.to(device)
        return _train(method, Path(data_root), Path(out), steps=steps, batch_size=batch_size,
                      device=device, resume=resume, seed=seed,
                      progress=progress and dist.is_main, workers=workers, region=region,
                      crop=crop)


def _trainer(method: SeqDM, out: Path, device: torch.device, seed: int, resume: bool
             ) -> Trainer:
    trainer = Trainer(method.net, method.diffusion, method.config, device, seed)
    if resume:
        state = load_trainer_state(out)
        if state is None:
            raise CheckpointError(f"resume: {out} holds no trainer.pt to resume from; train "
                                  f"without --resume first")
        trainer.load_state(state)
    trainer.distribute()
    return trainer


def _checkpoint(method: SeqDM, trainer: Trainer, out: Path, rows: list[dict[str, Any]]) -> None:
    """Rank 0 writes the checkpoint and the new history rows; the others wait."""
    if distributed.info().is_main:
        method.save(out, trainer_state=trainer.state())
        _append_history(out / "history.csv", rows)
    distributed.barrier()


def _total_steps(steps: int | None, cfg: dict[str, Any], source: DatasetSource) -> int:
    """``steps``, or where None the config's ``epochs`` passes over the train split."""
    if steps is not None:
        return int(steps)
    epochs = cfg.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise UsageError(f"epochs: got {epochs!r}, expected an integer >= 1 (or give --steps)")
    return epochs * source.steps_per_epoch


def _validate_now(method: SeqDM, loader: torch.utils.data.DataLoader | None,
                  cfg: dict[str, Any]) -> dict[str, float]:
    """Rank 0 validates; every rank gets its scores."""
    scores = (validate(method, loader, int(cfg["val_batches"]), int(cfg["val_sample_steps"]))
              if distributed.info().is_main else None)
    return distributed.broadcast_object(scores)


def _train(method: SeqDM, data_root: Path, out: Path, *, steps: int | None, batch_size: int,
           device: torch.device, resume: bool, seed: int, progress: bool, workers: int,
           region: str, crop: int | None) -> Path:
    cfg = method.config
    torch.manual_seed(seed)
    main = distributed.info().is_main
    train_ds, val_ds = main_first(lambda: _datasets(data_root, int(cfg["train_L"]), region,
                                                    crop, seed))
    if cfg["band_range"] is None or cfg["band_mean"] is None:  # the same on every rank
        low, high, mean = band_stats(train_ds)
        if cfg["band_range"] is None:
            method.set_band_range(low, high)
        if cfg["band_mean"] is None:
            method.set_band_mean(mean)
    trainer = _trainer(method, out, device, seed, resume)
    val_loader = None if val_ds is None or not main else _loader(val_ds, batch_size, workers,
                                                                 device)
    info = distributed.info()
    source = DatasetSource(train_ds, batch_size, seed, workers, device.type == "cuda",
                           rank=info.rank, world_size=info.world_size)
    batches = _batches(source, trainer.iteration)
    steps = _total_steps(steps, cfg, source)
    every = max(1, int(cfg["ckpt_every"]))
    rows: list[dict[str, Any]] = []
    if trainer.iteration == 0 and val_ds is not None and int(cfg["val_batches"]) > 0:
        # the learning curve's starting point
        rows.append({"iteration": 0, "seconds": 0.0, **_validate_now(method, val_loader, cfg)})
    start = time.perf_counter()
    bar = tqdm(total=steps, initial=min(trainer.iteration, steps), desc="seqdm training",
               disable=not progress)
    while trainer.iteration < steps:
        batch, share = next(batches)
        rec = trainer.iterate(prepare_batch(batch, device), share)
        rec.update(iteration=trainer.iteration, seconds=round(time.perf_counter() - start, 3))
        rows.append(rec)
        bar.update(1)
        if trainer.iteration % every == 0 or trainer.iteration == steps:
            rec.update(_validate_now(method, val_loader, cfg))
            _checkpoint(method, trainer, out, rows)
            rows = []
    bar.close()
    if distributed.broadcast_object(bool(rows) or not (out / "model.safetensors").is_file()):
        _checkpoint(method, trainer, out, rows)
    return out
