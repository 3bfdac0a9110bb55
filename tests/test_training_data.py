"""Training batches (crbench.training.batches): each rank's share of a global batch, loss weights
for uneven batches, and persistent DataLoader workers that follow the epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crbench.data.dataset import SEN12MSCRTS
from crbench.errors import UsageError
from crbench.training.batches import (
    DatasetSource,
    ShardedBatchSampler,
    check_global_batch,
    epoch_order,
    share_of,
)


@pytest.mark.parametrize(("n", "batch", "world"), [(10, 4, 2), (7, 3, 3), (5, 4, 4), (9, 2, 1)])
def test_ranks_share_exactly_the_single_process_batches(n: int, batch: int, world: int) -> None:
    single = ShardedBatchSampler(n, batch, seed=3)
    ranks = [ShardedBatchSampler(n, batch, seed=3, rank=r, world_size=world)
             for r in range(world)]
    for epoch, start in ((0, 0), (2, 1)):
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch, start)
        expected = list(single)
        per_rank = [list(s) for s in ranks]
        assert all(len(p) == len(expected) == len(single) for p in per_rank)
        for step, want in enumerate(expected):
            assert {e for e, _ in want} == {epoch}
            real = [per_rank[r][step] for r in range(world)
                    if share_of(len(want), r, world).weight > 0]
            # disjoint, and together exactly the single-process batch
            assert sorted(k for keys in real for k in keys) == sorted(want)
    assert [i for b in single.global_batches() for i in b] == epoch_order(n, 3, 2)[batch:]


@pytest.mark.parametrize(("size", "world"), [(4, 2), (3, 2), (1, 3), (5, 4)])
def test_share_weights_give_the_global_mean(size: int, world: int) -> None:
    values = torch.arange(1.0, size + 1.0) ** 2
    shares = [share_of(size, r, world) for r in range(world)]
    assert sorted(r for s in shares if s.weight > 0 for r in s.rows) == list(range(size))
    ddp_average = sum(s.weight * float(s.take(values).mean()) for s in shares) / world
    assert ddp_average == pytest.approx(float(values.mean()))


def test_global_batch_must_split_over_ranks() -> None:
    check_global_batch(4, 2)
    check_global_batch(3, 1)
    with pytest.raises(UsageError, match=r"batch_size: 3 .* multiple of 2"):
        check_global_batch(3, 2)


def test_persistent_workers_follow_the_epoch(synth_root: Path) -> None:
    ds = SEN12MSCRTS(synth_root, split="train", L=3, sampler="random", crop=16, seed=1)
    runs = {}
    for workers in (0, 2):
        source = DatasetSource(ds, batch_size=2, seed=5, workers=workers)
        assert source.loader.persistent_workers == (workers > 0)
        runs[workers] = [[(b.target, [(m.roi, m.patch, m.target_idx) for m in b.meta])
                          for b in source.epoch(e)] for e in range(3)]
    for e in range(3):  # workers give exactly the in-process batches, epoch after epoch
        for (t0, m0), (t2, m2) in zip(runs[0][e], runs[2][e], strict=True):
            assert m0 == m2 and torch.equal(t0, t2)
    crops = [torch.cat([t for t, _ in epoch]).sum() for epoch in runs[2]]
    assert len({float(c) for c in crops}) == 3  # new crops/dates every epoch, also in workers
