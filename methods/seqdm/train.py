"""Training loop of SeqDMs: Algorithm 2 with AdamW, EMA, mixed precision and checkpoints.

One *iteration* takes one optimiser step on the cloud-free target and its S1 image (Eq. 27)
and, with the temporal training strategy on, a second optimiser step on the fused cloudy
sequence (Eq. 28). ``--no-temporal-training`` (config ``temporal_training=False``) keeps only
the first: the ablation of the paper's Table 4.

Checkpoints: ``model.safetensors`` holds the EMA weights (used for sampling), ``trainer.pt`` the
raw weights, optimiser, grad-scaler, EMA counter, random-generator state and iteration count.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from crbench.api import Batch, Inputs, collate
from crbench.errors import CheckpointError, DataError
from crbench.torchutil import autocast, grad_scaler, load_trainer_state

from .diffusion import GaussianDiffusion, Losses
from .seqtis import Fusion, loss_clear, loss_sequence

if TYPE_CHECKING:
    from . import SeqDM

HISTORY_FIELDS = ("iteration", "loss_clear", "loss_seq", "mse_clear", "vb_clear", "val_psnr",
                  "seconds")


@dataclass
class TrainBatch:
    """One batch in network units ([-1, 1]); ``clear`` is (B, L, 1, H, W), 1 = cloud-free."""

    x0: torch.Tensor
    a0: torch.Tensor
    s2: torch.Tensor
    s1: torch.Tensor
    clear: torch.Tensor


def to_network(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s2, s1, clear) of a batch of Inputs in network units."""
    return (inputs.s2 * 2.0 - 1.0, inputs.s1 * 2.0 - 1.0,
            (1.0 - inputs.masks).unsqueeze(2).to(inputs.s2.dtype))


def prepare_batch(batch: Batch, device: torch.device) -> TrainBatch:
    """Move a collated batch to ``device``. The target's S1 image (A_0 of Eq. 27) is the S1 of
    the input date nearest in time to the target (the dataset yields no S1 for the target;
    under the toolbox protocol the target is often itself an input, and S1 sees through
    clouds, so the pair is exact or close)."""
    inputs = batch.inputs.to(device)
    s2, s1, clear = to_network(inputs)
    nearest = [min(range(len(m.input_idx)), key=lambda j, m=m: abs(m.input_idx[j] - m.target_idx))
               for m in batch.meta]
    rows = torch.arange(s1.shape[0], device=device)
    a0 = s1[rows, torch.as_tensor(nearest, device=device)]
    return TrainBatch(x0=batch.target.to(device) * 2.0 - 1.0, a0=a0, s2=s2, s1=s1, clear=clear)


class Trainer:
    """Optimises a raw copy of ``ema_net`` and keeps ``ema_net`` as its exponential average."""

    def __init__(self, ema_net: nn.Module, diff: GaussianDiffusion, cfg: dict[str, Any],
                 device: torch.device, seed: int = 0) -> None:
        self.cfg, self.diff, self.device = cfg, diff, device
        self.ema = ema_net.to(device).requires_grad_(False)
        self.model = copy.deepcopy(self.ema).requires_grad_(True).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=float(cfg["lr"]),
                                     weight_decay=float(cfg["weight_decay"]))
        self.scaler = grad_scaler(device)
        self.generator = torch.Generator(device).manual_seed(seed)
        self.iteration = 0
        self.optimizer_steps = 0

    def _update(self, losses: Losses) -> float:
        loss = losses.loss.mean()
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        clip = float(self.cfg["grad_clip"])
        if clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.optimizer_steps += 1
        self._ema_update()
        return float(loss.detach())

    @torch.no_grad()
    def _ema_update(self) -> None:
        decay = float(self.cfg["ema_decay"])
        for e, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            e.copy_(b)

    def iterate(self, b: TrainBatch) -> dict[str, float]:
        """One iteration of Algorithm 2; returns the losses it took steps on."""
        rec: dict[str, float] = {}
        t = self.diff.sample_t(b.x0.shape[0], self.device, self.generator)
        with autocast(self.device):
            losses = loss_clear(self.diff, self.model, b.x0, b.a0, t, self.generator)
        rec["mse_clear"] = float(losses.mse.detach().mean())
        rec["vb_clear"] = float(losses.vb.detach().mean())
        rec["loss_clear"] = self._update(losses)
        if self.cfg["temporal_training"]:
            t = self.diff.sample_t(b.x0.shape[0], self.device, self.generator)
            with autocast(self.device):
                losses = loss_sequence(
                    self.diff, self.model, b.x0, b.s2, b.s1, b.clear, t,
                    fusion=Fusion(self.cfg["fusion"]), shared_noise=bool(self.cfg["shared_noise"]),
                    s=float(self.cfg["fusion_offset"]), generator=self.generator)
            rec["loss_seq"] = self._update(losses)
        self.iteration += 1
        return rec

    def state(self) -> dict[str, Any]:
        """Resumable state (loadable with ``torch.load(weights_only=True)``)."""
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(), "iteration": self.iteration,
                "optimizer_steps": self.optimizer_steps, "generator": self.generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (the EMA weights come from model.safetensors)."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.optimizer_steps = int(state["optimizer_steps"])
        self.generator.set_state(state["generator"])


def _loader(ds: torch.utils.data.Dataset, batch_size: int, shuffle: bool, workers: int,
            seed: int, device: torch.device) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate,
        drop_last=False, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed))


def _forever(loader: torch.utils.data.DataLoader, epoch: int) -> Iterator[Batch]:
    """Endless batches; the random sampler draws new dates and crops every epoch."""
    while True:
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def _datasets(data_root: Path, L: int, region: str, crop: int | None, seed: int
              ) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
    from crbench.data.dataset import SEN12MSCRTS

    train = SEN12MSCRTS(data_root, split="train", L=L, region=region, sampler="random",
                        seed=seed, crop=crop)
    if len(train) == 0:
        raise DataError(f"data_root: {data_root} has no usable training sample for L={L} in "
                        f"region {region!r} (the train split needs a cloud-free target date)")
    try:
        val = SEN12MSCRTS(data_root, split="val", L=L, region=region, sampler="fixed", crop=crop)
    except FileNotFoundError:
        val = None
    return train, (val if val is not None and len(val) > 0 else None)


@torch.no_grad()
def validate(method: SeqDM, loader: torch.utils.data.DataLoader | None, max_batches: int,
             steps: int) -> float:
    """Mean PSNR (DESIGN.md: 20 log10(1 / RMSE) over all bands, in [0, 1]) of the EMA model's
    samples with ``steps`` sampling steps, over at most ``max_batches`` validation batches."""
    if loader is None or max_batches <= 0:
        return math.nan
    psnrs = []
    for k, batch in enumerate(loader):
        if k >= max_batches:
            break
        pred = method.sample(batch.inputs.to(method.device), steps=steps, samples=1,
                             progress=False)[0]
        rmse = ((pred - batch.target.to(pred.device)) ** 2).mean(dim=(1, 2, 3)).sqrt()
        psnrs.extend((20 * torch.log10(1.0 / rmse.clamp(min=1e-10))).tolist())
    return float(sum(psnrs) / len(psnrs)) if psnrs else math.nan


def _append_history(path: Path, rows: list[dict[str, Any]]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def run_training(method: SeqDM, data_root: Path, out: Path, *, steps: int, batch_size: int,
                 device: torch.device, resume: bool, seed: int, progress: bool, workers: int,
                 region: str, crop: int | None) -> Path:
    """Train ``method`` (its ``net`` ends up holding the EMA weights); see SeqDM.fit."""
    cfg = method.config
    torch.manual_seed(seed)
    train_ds, val_ds = _datasets(Path(data_root), int(cfg["train_L"]), region, crop, seed)
    trainer = Trainer(method.net, method.diffusion, cfg, device, seed)
    if resume:
        state = load_trainer_state(out)
        if state is None:
            raise CheckpointError(f"resume: {out} holds no trainer.pt to resume from; train "
                                  f"without --resume first")
        trainer.load_state(state)
    val_loader = (None if val_ds is None
                  else _loader(val_ds, batch_size, False, workers, seed, device))
    batches = _forever(_loader(train_ds, batch_size, True, workers, seed + trainer.iteration,
                               device), trainer.iteration)
    every = max(1, int(cfg["ckpt_every"]))
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = tqdm(total=steps, initial=min(trainer.iteration, steps), desc="seqdm training",
               disable=not progress)
    while trainer.iteration < steps:
        rec = trainer.iterate(prepare_batch(next(batches), device))
        rec.update(iteration=trainer.iteration, seconds=round(time.perf_counter() - start, 3))
        rows.append(rec)
        bar.update(1)
        if trainer.iteration % every == 0 or trainer.iteration == steps:
            rec["val_psnr"] = validate(method, val_loader, int(cfg["val_batches"]),
                                       int(cfg["val_sample_steps"]))
            method.save(out, trainer_state=trainer.state())
            _append_history(out / "history.csv", rows)
            rows = []
    bar.close()
    if rows or not (out / "model.safetensors").is_file():
        method.save(out, trainer_state=trainer.state())
        _append_history(out / "history.csv", rows)
    return out
