"""What a method hands the training loop (:class:`TrainParts`) and what each of its steps
receives (:class:`StepContext`); see :mod:`crbench.training.loop` for how they are used."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import distributed
from ..api import Batch, Inputs
from ..torchutil import autocast, grad_scaler
from .batches import Share

StepFn = Callable[[Batch, "StepContext"], Mapping[str, float]]
PredictFn = Callable[[Inputs], torch.Tensor]


@dataclass
class TrainParts:
    """What a method gives the loop. See :mod:`crbench.training.loop`.

    Attributes:
        model: module whose ``state_dict`` is the checkpoint's ``model.safetensors``.
        config: the method's JSON-able config (``config.json``; checked on resume).
        step_fn: one optimisation step on a batch -> losses.
        optimizers: name -> optimizer (checkpointed; ``ctx.backward_step`` uses the names).
        schedulers: name -> LR scheduler, stepped after every step.
        extra_modules: name -> module saved in ``trainer.pt`` only (e.g. a discriminator).
        predict_fn: Inputs -> prediction in [0, 1] for validation (None: no validation).
        target_bands: target bands compared with ``predict_fn``'s output (None: all).
        unused_parameters: True when a step may leave trainable parameters out of the graph
            (e.g. a frozen branch); DDP then looks for them every step (slower).
    """

    model: nn.Module
    config: dict[str, Any]
    step_fn: StepFn
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any] = field(default_factory=dict)
    extra_modules: dict[str, nn.Module] = field(default_factory=dict)
    predict_fn: PredictFn | None = None
    target_bands: Sequence[int] | None = None
    unused_parameters: bool = False


class StepContext:
    """Per-run state handed to ``step_fn``: device, counters, AMP helpers, DDP wrappers and
    this rank's :class:`Share` of the current global batch (``ctx.share``)."""

    def __init__(self, device: torch.device, optimizers: Mapping[str, torch.optim.Optimizer],
                 total_steps: int, amp: bool = True) -> None:
        self.device = device
        self.optimizers = dict(optimizers)
        self.total_steps = total_steps
        self.amp = amp
        self.step = 0
        self.epoch = 0
        self.scalers = {name: grad_scaler(device) for name in self.optimizers}
        self.share: Share | None = None  # set by the Trainer for every batch
        self._ddp: dict[int, nn.Module] = {}

    def batch_share(self, local_size: int) -> Share:
        """This rank's :class:`Share` of the current global batch (the whole batch of
        ``local_size`` samples when no Trainer set one)."""
        return self.share if self.share is not None else Share.whole(local_size)

    def ddp(self, module: nn.Module) -> nn.Module:
        """``module``'s DistributedDataParallel wrapper under torchrun, else ``module``.
        Forward passes whose gradients should be averaged over ranks go through it."""
        return self._ddp.get(id(module), module)

    def wrap(self, modules: Sequence[nn.Module], find_unused: bool = False) -> None:
        """Wrap the modules with trainable parameters in DDP (only in a process group)."""
        if not distributed.info().enabled:
            return
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        for module in modules:
            if id(module) not in self._ddp and any(p.requires_grad
                                                   for p in module.parameters()):
                self._ddp[id(module)] = DistributedDataParallel(
                    module, device_ids=ids, find_unused_parameters=find_unused)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision on CUDA (see crbench.torchutil.autocast), no-op on CPU."""
        return autocast(self.device, enabled=self.amp)

    def backward_step(self, loss: torch.Tensor, name: str) -> None:
        """Backward ``loss``, step optimizer ``name`` through its GradScaler, zero its grads."""
        opt, scaler = self.optimizers[name], self.scalers[name]
        if self.share is not None and self.share.weight != 1.0:  # uneven last global batch
            loss = loss * self.share.weight  # under DDP (see Share)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
