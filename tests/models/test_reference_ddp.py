"""Sharded reference ensembles under real Lightning DDP (CPU, gloo): 2 ranks train the same networks as 1.

Each spawned fit starts two Python processes (10–20 s here), so those tests are ``slow``; the split rule and the
per-network streams have fast tests in test_reference_streams.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from reference_models import EnsembleModule, GaussianRBM, HiddenLayerNetwork, TeacherStudent2x2, fit_reference

MODELS: dict[str, Callable[[], EnsembleModule]] = {  # 3 stream blocks over 2 ranks: an uneven split (1 + 2)
    "rbm": lambda: GaussianRBM(networks=6, batch_size=4, seed=3, networks_per_stream=2),
    "ts": lambda: TeacherStudent2x2(
        networks=6, batch_size=4, batches_per_epoch=5, noise=0.3, seed=3, networks_per_stream=2, data_sets=3
    ),
    "hidden": lambda: HiddenLayerNetwork(networks=6, batch_size=4, noise=0.3, seed=3, networks_per_stream=2),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_two_gloo_ranks_train_the_same_networks_as_one_process(name: str) -> None:
    one, two = MODELS[name](), MODELS[name]()
    fit_reference(one, 7, accelerator="cpu")
    fit_reference(two, 7, devices=2, strategy="ddp_spawn", accelerator="cpu")  # rank 0's final state comes back
    assert not torch.equal(one.weight, MODELS[name]().weight)  # it trained
    torch.testing.assert_close(two.weight, one.weight, rtol=0, atol=0)  # DDP's average of 2: bit-identical
    if isinstance(one, GaussianRBM):  # the chains of rank 1's networks were gathered to rank 0 at the end
        torch.testing.assert_close(two.chains, one.chains, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_a_checkpoint_of_two_ranks_resumes_in_one_process_on_the_same_trajectory(tmp_path: Path) -> None:
    """The checkpoint gathers every rank's chains and every block's generator state."""
    straight = MODELS["rbm"]()
    fit_reference(straight, 10, accelerator="cpu")
    first = MODELS["rbm"]()
    save = ModelCheckpoint(dirpath=tmp_path, filename="rbm", every_n_train_steps=4, save_top_k=-1)
    trainer = pl.Trainer(
        max_steps=4,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        callbacks=[save],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(first)
    resumed = MODELS["rbm"]()
    pl.Trainer(max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(
        resumed, ckpt_path=tmp_path / "rbm.ckpt"
    )
    torch.testing.assert_close(resumed.weight, straight.weight, rtol=0, atol=0)
    torch.testing.assert_close(resumed.chains, straight.chains, rtol=0, atol=0)


def test_more_ranks_than_stream_blocks_is_refused_before_launching() -> None:
    ts = TeacherStudent2x2(networks=6, batch_size=2, batches_per_epoch=2, networks_per_stream=4)  # 2 blocks
    message = (
        r"cannot shard 6 networks in 2 stream blocks of networks_per_stream=4 over 3 ranks: each rank trains whole "
        r"blocks; use at most 2 ranks \(devices × nodes\) or networks_per_stream <= 2"
    )
    with pytest.raises(ValueError, match=message):
        fit_reference(ts, 3, devices=3, strategy="ddp_spawn", accelerator="cpu")
    with pytest.raises(ValueError, match=r"over 4 ranks"):
        fit_reference(ts, 3, devices=2, num_nodes=2, strategy="ddp", accelerator="cpu")
    assert ts.shard == slice(0, 6)  # the check left the module as it was


def test_a_non_ddp_strategy_on_several_ranks_is_refused() -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy

    ts = TeacherStudent2x2(networks=6, batch_size=2, batches_per_epoch=2, networks_per_stream=2)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=ModelParallelStrategy(), logger=False)
    message = r"strategy ModelParallelStrategy on 2 ranks is not supported.*use strategy='ddp' or 'ddp_spawn'"
    with pytest.raises(ValueError, match=message):
        ts.check_trainer(trainer)
