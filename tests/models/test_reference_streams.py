"""Per-network random streams and data-parallel shards of whole stream blocks (reference_models.streams, .ensemble)."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from reference_models import EnsembleModule, GaussianRBM, HiddenLayerNetwork, TeacherStudent2x2, fit_reference
from reference_models.streams import INIT, block_count, normal_by_block_, randn_by_block, shard_blocks, stream_seed

MODELS = {
    "rbm": lambda e, **kw: GaussianRBM(networks=e, batch_size=3, seed=7, **kw),
    "ts": lambda e, **kw: TeacherStudent2x2(networks=e, batch_size=3, batches_per_epoch=4, noise=0.3, seed=7, **kw),
    "hidden": lambda e, **kw: HiddenLayerNetwork(networks=e, batch_size=3, noise=0.3, seed=7, **kw),
}


def test_stream_seed_is_the_documented_seed_sequence_hash() -> None:
    for triple in ((0, 0, 0), (1, 2, 3), (2**40, 1, 7499)):
        expected = int(np.random.SeedSequence(list(triple)).generate_state(1, np.uint64)[0]) >> 1
        assert stream_seed(*triple) == expected < 2**63
    seeds = {stream_seed(s, p, b) for s in range(4) for p in range(4) for b in range(50)}
    assert len(seeds) == 4 * 4 * 50  # no two (seed, purpose, block) share a seed (the old linear rule did)


@pytest.mark.parametrize("blocks", [1, 2, 3, 5, 8, 13, 469])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_shards_are_contiguous_near_equal_whole_block_ranges_in_rank_order(blocks: int, world: int) -> None:
    if world > blocks:
        with pytest.raises(ValueError, match=rf"{world} ranks cannot share {blocks} stream blocks"):
            shard_blocks(blocks, world, 0)
        return
    shards = [shard_blocks(blocks, world, r) for r in range(world)]
    assert [b for s in shards for b in s] == list(range(blocks))  # every block once, in rank order
    sizes = [len(s) for s in shards]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert [s.start for s in shards] == [r * blocks // world for r in range(world)]  # the documented rule


def test_block_count_and_bad_ranks() -> None:
    assert [block_count(e, 4) for e in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
    assert block_count(7500, 16) == math.ceil(7500 / 16)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size = 2\), got 2"):
        shard_blocks(4, 2, 2)


def test_block_draws_do_not_depend_on_the_ensemble_size() -> None:
    small, large = (randn_by_block(e, 4, (3, 2), seed=1, purpose=INIT) for e in (6, 16))
    assert small.shape == (6, 3, 2) and torch.equal(small, large[:6])
    block1 = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(stream_seed(1, INIT, 1)), dtype=torch.float64)
    assert torch.equal(large[4:8], block1)  # block 1 = networks 4..7, one draw of its own stream
    out = torch.empty(8, 5)
    with pytest.raises(ValueError, match=r"out must be contiguous with 3 blocks × 4 = 12 rows, got shape \(8, 5\)"):
        normal_by_block_(out, [None] * 3, 4)
    with pytest.raises(ValueError, match=r"not contiguous"):
        normal_by_block_(torch.empty(5, 8).mT, [None] * 2, 4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_networks_trajectory_does_not_depend_on_the_other_networks(name: str) -> None:
    """E = 6 (a short last block), 8 and 16 with networks_per_stream = 4 share the first 6 networks exactly."""
    runs = [MODELS[name](e, networks_per_stream=4) for e in (6, 8, 16)]
    first = [m.weight.detach().clone() for m in runs]
    for model in runs:
        fit_reference(model, 5)
    for model, w0 in zip(runs[1:], first[1:], strict=True):
        assert torch.equal(w0[:6], first[0])
        assert torch.equal(model.weight[:6], runs[0].weight)
        if isinstance(model, GaussianRBM):
            assert torch.equal(model.chains[:6], runs[0].chains)  # type: ignore[union-attr]
    assert not torch.equal(runs[0].weight, first[0])  # it trained
    other = MODELS[name](6, networks_per_stream=3)  # another block size: other streams
    assert not torch.equal(other.weight, first[0][:6])


class _Shard(pl.Callback):
    """Makes the module train rank ``rank`` of ``world``'s shard in a one-process fit (after its setup)."""

    def __init__(self, world: int, rank: int) -> None:
        self.world, self.rank = world, rank

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        pl_module.set_shard(self.world, self.rank)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_shard_trains_exactly_its_networks_as_the_full_ensemble_does(name: str) -> None:
    """Rank 1 of 2 alone: its networks follow the one-process run, the others stay at W₀.

    Without DDP's average over 2 ranks the shard's loss (scaled by 2) doubles the step, so it runs at half the
    learning rate: (α/2)·(2g) = αg exactly.
    """
    full, part = MODELS[name](10, networks_per_stream=3, lr=0.2), MODELS[name](10, networks_per_stream=3, lr=0.1)
    w0 = part.weight.detach().clone()
    fit_reference(full, 5)
    fit_reference(part, 5, callbacks=[_Shard(2, 1)])  # 4 blocks over 2 ranks: rank 1 has blocks 2, 3
    assert part.shard_blocks == range(2, 4) and part.shard == slice(6, 10)
    assert torch.equal(part.weight[6:], full.weight[6:])
    assert torch.equal(part.weight[:6], w0[:6])
    assert len(part.generators()) == 2  # only its blocks' streams were made


def test_ddp_ignores_every_buffer_of_an_ensemble() -> None:
    ts = TeacherStudent2x2(networks=2, batches_per_epoch=2)
    names = {n for n, _ in ts.named_buffers()}
    assert names == {"teacher", "inputs", "input_moments", "data_set_index", "noise_mean"}
    assert set(ts._ddp_params_and_buffers_to_ignore) == names
    assert isinstance(ts, EnsembleModule) and "weight" not in ts._ddp_params_and_buffers_to_ignore


def test_networks_per_stream_is_validated_by_name() -> None:
    for make in MODELS.values():
        with pytest.raises(ValueError, match=r"networks_per_stream must be an int >= 1, got 0"):
            make(4, networks_per_stream=0)
