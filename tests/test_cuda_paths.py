"""The CUDA code paths that a CPU can still check (issue 15).

A tensor made from host data inside a loop (``torch.as_tensor(list, device=...)``) is a
host-to-device copy on CUDA, which waits for the stream, and ``float(tensor)`` / ``.item()``
a device-to-host copy that waits for all queued work. Both show on CPU as dispatcher ops
(``aten.lift_fresh``, ``aten._local_scalar_dense``), so a dispatch mode counts them here.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from crbench.torchutil import amp_dtype, autocast, load_scaler_state
from crbench_methods.seqdm import SeqDM
from crbench_methods.seqdm.seqtis import GlobalDraws, RowDraws, sample
from crbench_methods.seqdm.train import TrainBatch, Trainer

# ops that become host <-> device copies with a synchronisation on CUDA
SYNC_OPS = {"aten.lift_fresh.default", "aten._local_scalar_dense.default",
            "aten.nonzero.default", "aten.item.default"}


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched while active."""

    def __init__(self, ignore: tuple[torch.Tensor, ...] = ()) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.ignore = {id(t) for t in ignore}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not (args and id(args[0]) in self.ignore):
            self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))

    def syncs(self) -> dict[str, int]:
        return {k: v for k, v in self.ops.items() if k in SYNC_OPS}


def _sequence(b: int = 2, L: int = 3, side: int = 16):
    g = torch.Generator().manual_seed(0)
    s2 = torch.rand(b, L, 13, side, side, generator=g) * 2 - 1
    s1 = torch.rand(b, L, 2, side, side, generator=g) * 2 - 1
    clear = (torch.rand(b, L, 1, side, side, generator=g) > 0.5).float()
    return s2, s1, clear


def test_sampling_loop_copies_nothing_between_host_and_device() -> None:
    """Algorithm 1 with respaced steps and per-band clipping (clip_range=data): after the
    first call has built its device tables, no step copies host data or reads a value back
    (before the fix: 3 per step, the timestep map and the two clip bounds)."""
    m = SeqDM(preset="tiny", progress=False)
    m.set_band_range([-0.9] * 13, [0.5] * 13)
    s2, s1, clear = _sequence()
    diff = m._spaced_diffusion(4)

    def run() -> torch.Tensor:
        return sample(diff, m._net_fn, s2, s1, clear,
                      generator=RowDraws([1, 2], torch.device("cpu")))

    first = run()
    with OpCounter() as counter:
        again = run()
    assert counter.ops["aten.convolution.default"] > 0  # the network did run under the mode
    assert counter.syncs() == {}
    assert torch.equal(first, again)  # cached tables change no value


def test_global_draws_index_is_made_once() -> None:
    g = torch.Generator().manual_seed(0)
    draws = GlobalDraws(g, rows=[1, 3], global_size=4)
    like = torch.zeros(1)
    draws.randn((2, 5), like)
    with OpCounter() as counter:
        out = draws.randn((2, 5), like)
    assert tuple(out.shape) == (2, 5) and counter.syncs() == {}


def test_training_iteration_reads_its_losses_back_once() -> None:
    """Algorithm 2 (both optimiser steps) reads its four logged losses with one copy
    (before: one per loss, each waiting for the GPU before the next step was queued)."""
    m = SeqDM(preset="tiny")
    trainer = Trainer(m.net, m.diffusion, m.config, torch.device("cpu"), seed=0)
    s2, s1, clear = _sequence(side=16)
    batch = TrainBatch(x0=s2[:, 0], a0=s1[:, 0], s2=s2, s1=s1, clear=clear)
    trainer.iterate(batch)
    # AdamW reads its step counters, host tensors on every device (no copy on CUDA)
    steps = tuple(state["step"] for state in trainer.opt.state.values())
    with OpCounter(ignore=steps) as counter:
        rec = trainer.iterate(batch)
    assert set(rec) == {"mse_clear", "vb_clear", "loss_clear", "loss_seq"}
    assert all(isinstance(v, float) and v == v for v in rec.values())
    assert sum(counter.syncs().values()) <= 1, counter.syncs()
    assert trainer.optimizer_steps == 4


def test_amp_dtype_on_cpu_and_cuda() -> None:
    """Full precision on CPU whatever is asked; on CUDA the requested dtype (the paper's fp16)
    or the default, bf16 where supported."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype(cpu) is None and amp_dtype(cpu, torch.float16) is None
    assert amp_dtype(cuda, torch.float16) is torch.float16
    assert amp_dtype(cuda, torch.bfloat16) is torch.bfloat16
    if torch.cuda.is_available():
        want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert amp_dtype(cuda) is want
    x = torch.ones(2, 2)
    with autocast(cpu, dtype=torch.float16):
        assert (x @ x).dtype is torch.float32  # no autocast on CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_trainer_scales_its_loss() -> None:
    m = SeqDM(preset="tiny")
    trainer = Trainer(m.net, m.diffusion, m.config, torch.device("cuda"), seed=0,
                      amp_dtype=torch.float16)
    assert trainer.scaler.is_enabled()


def test_resume_on_an_fp16_gpu_of_a_run_without_loss_scaling() -> None:
    """A checkpoint written where the GradScaler is disabled (CPU, or a bf16 GPU) stores an
    empty scaler state, which torch refuses to load into an enabled scaler (an fp16-only GPU).
    An enabled CPU GradScaler stands in for the fp16 one: resuming must start it at its
    initial scale instead of raising."""
    m = SeqDM(preset="tiny")
    first = Trainer(m.net, m.diffusion, m.config, torch.device("cpu"), seed=0)
    s2, s1, clear = _sequence(side=16)
    first.iterate(TrainBatch(x0=s2[:, 0], a0=s1[:, 0], s2=s2, s1=s1, clear=clear))
    state = first.state()
    assert state["scaler"] == {}  # disabled: nothing to store
    second = Trainer(m.net, m.diffusion, m.config, torch.device("cpu"), seed=0)
    second.scaler = torch.amp.GradScaler("cpu", enabled=True)
    second.load_state(state)
    assert second.iteration == 1 and second.scaler.get_scale() == 2.0**16
    scaled = torch.amp.GradScaler("cpu", enabled=True, init_scale=128.0)
    load_scaler_state(second.scaler, scaled.state_dict())  # a real state still loads
    assert second.scaler.get_scale() == 128.0


def test_row_seeds_copy_the_batch_once_and_keep_their_values() -> None:
    """The per-sample seeds (the sampling noise of every SeqDMs row) are what hashing each
    sample's bytes one by one gave, also for a non-contiguous batch and K > 1, now that the
    batch leaves the device in one copy and the digests run in threads."""
    import hashlib

    from crbench_methods.seqdm import _row_seeds

    g = torch.Generator().manual_seed(0)
    s2 = torch.rand(3, 2, 13, 8, 8, generator=g).transpose(-1, -2)  # non-contiguous
    digests = [hashlib.sha256(x.float().numpy().tobytes()).digest()[:8] for x in s2]
    want = [int.from_bytes(hashlib.sha256(f"5|{j}|".encode() + d).digest()[:8], "little") >> 1
            for j in range(2) for d in digests]
    assert _row_seeds(s2, 2, 5) == want
