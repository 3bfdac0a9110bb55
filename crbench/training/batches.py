"""Training batches for :mod:`crbench.training`, single-process or sharded over DDP ranks.

``batch_size`` always means the GLOBAL batch. Every epoch has one permutation of the data set,
seeded by (seed, epoch), cut into global batches of ``batch_size`` positions; under
``torchrun`` rank ``r`` of ``world`` loads positions ``r::world`` of each global batch (a
:class:`Share`). The union of the ranks' samples at step ``s`` is therefore exactly the
single-process batch of step ``s``, and since a sample's own randomness (dates, crop) depends
only on (seed, epoch, index) (:class:`crbench.data.dataset.SEN12MSCRTS`), the ranks see the
very same tensors as one process would.

Gradients: DDP averages the ranks' gradients. With per-sample-mean losses and equal shares
that average is the gradient of the global-batch mean loss. The last global batch of an epoch
may not split evenly; each rank then scales its loss by :attr:`Share.weight`
(``n_rank * world / n_global``) so that the average is still the global mean, and a rank left
without a sample re-reads the batch's first one with weight 0 (every rank must take part in
each gradient all-reduce).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..api import Batch, Sample, collate
from ..errors import DatasetNotFoundError, UsageError


@dataclass(frozen=True)
class Share:
    """This rank's part of one global batch.

    Attributes:
        rows: positions in the global batch of this rank's samples, in order (a rank without a
            sample holds ``[0]`` with weight 0).
        global_size: number of samples of the global batch.
        weight: loss factor making the DDP gradient average the global-batch mean
            (1 when the global batch splits evenly).
    """

    rows: tuple[int, ...]
    global_size: int
    weight: float = 1.0

    @classmethod
    def whole(cls, size: int) -> Share:
        """The whole batch in one process."""
        return cls(tuple(range(size)), size, 1.0)

    def take(self, values: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor drawn for the whole global batch (first dim)."""
        if len(self.rows) == values.shape[0]:
            return values
        return values[torch.as_tensor(self.rows, device=values.device)]


def share_of(global_size: int, rank: int = 0, world_size: int = 1) -> Share:
    """Rank ``rank``'s :class:`Share` of a global batch of ``global_size`` samples."""
    rows = tuple(range(rank, global_size, world_size))
    if world_size == 1:
        return Share(rows, global_size, 1.0)
    if not rows:
        return Share((0,), global_size, 0.0)
    return Share(rows, global_size, len(rows) * world_size / global_size)


def check_global_batch(batch_size: int, world_size: int) -> None:
    """UsageError unless the global ``batch_size`` splits evenly over ``world_size`` ranks."""
    if world_size > 1 and batch_size % world_size:
        raise UsageError(f"batch_size: {batch_size} is the global batch and does not split over "
                         f"the {world_size} processes of this torchrun job; expected a multiple "
                         f"of {world_size}")


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The permutation of ``range(n)`` used in ``epoch`` (seeded by seed and epoch)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


class BatchSource(Protocol):
    """Where training batches come from: ``epoch(e, start)`` yields the batches of epoch ``e``
    from position ``start`` on; ``steps_per_epoch`` is its length. A source may also offer
    ``share(epoch_step) -> Share`` (sharded sources do)."""

    steps_per_epoch: int

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]: ...


class RepeatSource:
    """The same batch over and over (for overfitting tests)."""

    def __init__(self, batch: Batch, steps_per_epoch: int = 1) -> None:
        self.batch = batch
        self.steps_per_epoch = steps_per_epoch

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        for _ in range(start, self.steps_per_epoch):
            yield self.batch


class EpochItems(torch.utils.data.Dataset):
    """Items addressed as ``(epoch, index)``: sets the data set's epoch per item, so persistent
    DataLoader workers (which hold their own copy of the data set) follow the epoch."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class ShardedBatchSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Batch sampler of ``(epoch, index)`` keys: this rank's share of every global batch of
    the epoch's permutation, from global batch ``start`` on. Set the epoch with
    :meth:`set_epoch` before iterating; it runs in the main process, so workers need nothing."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        check_global_batch(batch_size, world_size)
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from its global batch ``start`` on."""
        self.epoch, self.start = int(epoch), int(start)

    def global_batches(self) -> list[list[int]]:
        """The remaining global batches (data-set indices) of the current epoch."""
        order = epoch_order(self.n, self.seed, self.epoch)
        bs = self.batch_size
        return [order[i:i + bs] for i in range(self.start * bs, self.n, bs)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.global_batches():
            rows = share_of(len(batch), self.rank, self.world_size).rows
            yield [(self.epoch, batch[r]) for r in rows]

    def __len__(self) -> int:
        return max(0, math.ceil(self.n / self.batch_size) - self.start)


class DatasetSource:
    """Shuffled mini-batches of a map-style data set, reproducible per (seed, epoch).

    Args:
        dataset: map-style data set of :class:`~crbench.api.Sample` (``set_epoch`` honoured).
        batch_size: the global batch size (split over ``world_size`` ranks).
        seed: seed of the epoch permutations.
        workers: DataLoader worker processes (kept alive across epochs when > 0).
        pin_memory: page-locked batches (for CUDA).
        rank: this process's rank.
        world_size: number of ranks.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int, seed: int = 0,
                 workers: int = 0, pin_memory: bool = False, rank: int = 0,
                 world_size: int = 1) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise DatasetNotFoundError("training data: the train split has no samples; check "
                                       "--data and --region")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.sampler = ShardedBatchSampler(n, batch_size, seed, rank, world_size)
        self.steps_per_epoch = math.ceil(n / batch_size)
        self.loader = torch.utils.data.DataLoader(
            EpochItems(dataset), batch_sampler=self.sampler, collate_fn=collate,
            num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0)

    def share(self, epoch_step: int) -> Share:
        """This rank's share of global batch ``epoch_step`` of an epoch."""
        n = len(self.dataset)  # type: ignore[arg-type]
        size = min(self.batch_size, n - epoch_step * self.batch_size)
        return share_of(size, self.rank, self.world_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """This rank's batches of ``epoch`` from global batch ``start`` on."""
        self.sampler.set_epoch(epoch, start)
        yield from self.loader


def batch_size_of(batch: Batch) -> int:
    """Number of samples in a batch."""
    return int(batch.target.shape[0])


def weighted_mean_over_ranks(values: dict[str, float], weight: float,
                             keys: Sequence[str] | None = None) -> dict[str, float]:
    """Global-batch means of per-rank means ``values`` (see :class:`Share`); a no-op outside
    a process group."""
    from .. import distributed

    if not distributed.info().enabled:
        return dict(values)
    import torch.distributed as dist

    names = list(keys if keys is not None else sorted(values))
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))  # NCCL: CUDA only
    packed = torch.tensor([values[k] * weight for k in names], dtype=torch.float64,
                          device=device)
    reduced = distributed.all_reduce_mean(packed).cpu().tolist()
    return {**values, **dict(zip(names, reduced, strict=True))}


def main_first(fn: Any) -> Any:
    """``fn()`` on rank 0, then on the other ranks (rank 0 fills the mask cache; the others
    only read it). If rank 0 fails, the other ranks raise instead of waiting forever."""
    from .. import distributed
    from ..errors import DataError

    info = distributed.info()
    if not info.enabled:
        return fn()
    result, failure = None, None
    if info.is_main:
        try:
            result = fn()
        except Exception as exc:  # reported on every rank below, re-raised on rank 0
            failure = exc
    message = distributed.broadcast_object(None if failure is None else
                                           f"{type(failure).__name__}: {failure}")
    if failure is not None:
        raise failure
    if message is not None:
        raise DataError(f"rank 0 could not prepare the training data ({message})")
    return fn() if not info.is_main else result
