r"""The ensemble base of the reference models (per-block random streams, data-parallel shards) and their Trainer.

See :class:`EnsembleModule` and :func:`fit_reference`; the streams are described in reference_models.streams.

References: arXiv:2407.16427, arXiv:2412.20496.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

from .data import step_index_loader
from .streams import TRAIN, block_count, shard_blocks, stream_seed

__all__ = ["EnsembleModule", "fit_reference"]

_RNG_KEY = "reference_models_rng"


class EnsembleModule(pl.LightningModule):
    """Base of the reference models: ``weight`` (E, rows, cols), ``SGD(lr)``, step-index loader, block streams, shards.

    Subclasses call :meth:`save_hyperparameters` (with at least ``lr``, ``seed`` and ``networks_per_stream``),
    create ``self.weight``, and implement ``training_step`` over the networks of :attr:`shard` only, returning
    :meth:`scaled` of their loss (a sum over networks, so that each network's gradient is its own).

    **Random streams.** The networks form stream blocks of ``networks_per_stream`` (reference_models.streams).
    Training noise comes from one generator per block on the module's device (:meth:`generators`), seeded from
    ``(seed, TRAIN, block)``; W₀ and fixed data are drawn on the CPU per block, the same on every device (each
    rank builds them whole at construction, before it knows its shard: a one-off, seconds for the
    teacher–student's noise of 7 500 networks). A network's numbers depend on the seed,
    ``networks_per_stream`` and its index only. The generators' states
    are saved in checkpoints, every block's, and restored on load (on the same device type).

    **Data-parallel shards.** Under Lightning's DDP (``strategy="ddp"``, ``"ddp_spawn"``; CPU gloo or GPU NCCL;
    SLURM through Lightning's environment detection) every rank holds the full ``weight`` but trains only its
    shard: a contiguous range of whole stream blocks, split as evenly as possible over the ``W`` ranks in rank
    order (rank r: blocks ``[r·n_b//W, (r+1)·n_b//W)``, decided in :meth:`setup`). Each rank draws only its
    blocks' noise and advances only their chains, so the work is divided. The loss is multiplied by ``W``
    (:meth:`scaled`): DDP averages the gradients over the ranks and a rank's gradient is zero outside its shard,
    so the average is each network's own gradient — bit for bit when ``W`` is a power of two (otherwise to
    rounding). After every step all ranks hold the same full weights, so rank 0 has every network for analysis
    and logging. One process trains all networks, unscaled.

    DDP would broadcast rank 0's buffers to all ranks before every forward pass, which would overwrite the
    other ranks' RBM chains (and send large fixed buffers every step): every buffer is excluded from that sync
    (``_ddp_params_and_buffers_to_ignore``); each rank builds its buffers from the seed. Buffers that hold one
    row per network and change in training (:attr:`sharded_buffers`, the RBM's chains) are stale outside a
    rank's shard during training; they are gathered to every rank at the end of training and into
    checkpoints, which also gather every block's generator state, so a sharded run resumes on any number of
    ranks. A checkpoint-free continuation of a sharded fit in the same process restarts the generators of the
    blocks that process did not train: resume from a checkpoint instead.

    :meth:`setup` (and :func:`fit_reference`, before launching processes) raises a ``ValueError`` if there are
    more ranks than stream blocks, or several ranks under a strategy other than DDP.
    """

    weight: torch.nn.Parameter
    #: Buffers with one row per network that training changes (gathered from the ranks' shards).
    sharded_buffers: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._generators: dict[int, torch.Generator] = {}
        self._pending_rng: dict[str, Any] | None = None
        self._blocks: range | None = None  # the blocks this process trains; None: all
        self._world_size = 1

    @property
    def hparams(self) -> AttributeDict:
        """The saved hyper-parameters, read as attributes (``self.hparams.lr``).

        ``save_hyperparameters`` stores an ``AttributeDict``; Lightning annotates the property with the looser
        ``AttributeDict | MutableMapping``, on which an attribute is a type error.
        """
        return cast(AttributeDict, super().hparams)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per Lightning epoch (length of the training loader)."""
        raise NotImplementedError

    @property
    def stream_blocks(self) -> int:
        """Number of stream blocks, ⌈E / networks_per_stream⌉."""
        return block_count(self.weight.shape[0], self.hparams["networks_per_stream"])

    @property
    def shard_blocks(self) -> range:
        """The stream blocks this process trains (all of them outside a multi-rank fit)."""
        return range(self.stream_blocks) if self._blocks is None else self._blocks

    @property
    def shard(self) -> slice:
        """The networks this process trains, ``slice(start, stop)`` of the ensemble axis."""
        blocks, per = self.shard_blocks, self.hparams["networks_per_stream"]
        return slice(blocks.start * per, min(self.weight.shape[0], blocks.stop * per))

    def set_shard(self, world_size: int, rank: int) -> None:
        """Train the shard of rank ``rank`` of ``world_size`` from now on (:meth:`setup` calls it).

        Raises:
            ValueError: if ``world_size`` exceeds the number of stream blocks (the message says what to change).
        """
        blocks, per, networks = self.stream_blocks, self.hparams["networks_per_stream"], self.weight.shape[0]
        if world_size > blocks:
            raise ValueError(
                f"cannot shard {networks} networks in {blocks} stream blocks of networks_per_stream={per} over "
                f"{world_size} ranks: each rank trains whole blocks; use at most {blocks} ranks (devices × nodes) "
                f"or networks_per_stream <= {max(1, networks // world_size)}"
            )
        self._blocks, self._world_size = shard_blocks(blocks, world_size, rank), int(world_size)

    def check_trainer(self, trainer: pl.Trainer) -> None:
        """Raise the errors :meth:`setup` would raise under ``trainer``, without changing the shard.

        Raises:
            ValueError: several ranks under a strategy other than DDP, or more ranks than stream blocks.
        """
        world = trainer.world_size
        if world > 1 and not isinstance(trainer.strategy, DDPStrategy):
            raise ValueError(
                f"strategy {type(trainer.strategy).__name__} on {world} ranks is not supported: the reference "
                "models shard their networks over data-parallel ranks; use strategy='ddp' or 'ddp_spawn'"
            )
        blocks, current = self._blocks, self._world_size
        try:
            self.set_shard(world, 0)
        finally:
            self._blocks, self._world_size = blocks, current

    def setup(self, stage: str) -> None:
        """Take this rank's shard from ``trainer.world_size`` and ``trainer.global_rank``."""
        self.check_trainer(self.trainer)
        self.set_shard(self.trainer.world_size, self.trainer.global_rank)

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        """The shard's loss times the world size, so that DDP's gradient average is each network's gradient."""
        return loss if self._world_size == 1 else loss * float(self._world_size)

    @property
    def _ddp_params_and_buffers_to_ignore(self) -> list[str]:
        """Read by ``torch.nn.parallel.DistributedDataParallel``: no buffer is broadcast from rank 0 (see above)."""
        return [name for name, _ in self.named_buffers()]

    def generators(self) -> list[torch.Generator]:
        """The training generators of :attr:`shard_blocks` on the module's device, in block order.

        Created on first use, seeded ``stream_seed(seed, TRAIN, block)`` or set to a loaded checkpoint's state,
        and re-created, seeded afresh, after a move to another device.
        """
        device, seed = self.device, self.hparams["seed"]
        pending = self._pending_rng
        if pending is not None and pending["device_type"] != device.type:
            warnings.warn(
                f"the checkpoint's generator states are for {pending['device_type']}, this run is on {device.type}: "
                "the training noise restarts from the seed (resume on the device type that saved the checkpoint)",
                stacklevel=2,
            )
            pending = self._pending_rng = None
        gens = []
        for b in self.shard_blocks:
            gen = self._generators.get(b)
            if gen is None or gen.device != device:
                gen = torch.Generator(device=device)
                gen.manual_seed(stream_seed(seed, TRAIN, b))
                if pending is not None:
                    if b not in pending["states"]:
                        raise ValueError(f"the checkpoint holds no generator state for stream block {b}")
                    gen.set_state(pending["states"].pop(b).clone())  # a view at an offset crashes set_state
                self._generators[b] = gen
            gens.append(gen)
        if pending is not None and not pending["states"]:
            self._pending_rng = None
        return gens

    def on_fit_start(self) -> None:
        self.generators()

    def on_train_end(self) -> None:
        if self._distributed():  # every rank gets every network's rows (exact: a sum with zeros)
            for name in self.sharded_buffers:
                buf = getattr(self, name)
                buf.copy_(self._gathered_rows(buf, self.shard))

    def _distributed(self) -> bool:
        return self._world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()

    def _gathered_rows(self, tensor: torch.Tensor, rows: slice | range) -> torch.Tensor:
        """``tensor`` with the rows of every rank's shard (each rank contributes ``rows``), by one all-reduce."""
        if not self._distributed():
            return tensor
        full = torch.zeros_like(tensor, device=self.device)
        full[rows] = tensor[rows].to(self.device)
        torch.distributed.all_reduce(full)
        return full.to(tensor.device)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])

    def train_dataloader(self) -> DataLoader[int]:
        return step_index_loader(self.steps_per_epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        blocks, gens = self.shard_blocks, self.generators()
        states = {b: gen.get_state() for b, gen in zip(blocks, gens, strict=True)}
        if self._distributed():  # all ranks call this hook: gather every block's state and every network's rows
            table = torch.zeros(self.stream_blocks, states[blocks.start].numel(), dtype=torch.uint8)
            for b, state in states.items():
                table[b] = state
            states = {b: row.clone() for b, row in enumerate(self._gathered_rows(table, blocks))}
            for name in self.sharded_buffers:
                checkpoint["state_dict"][name] = self._gathered_rows(getattr(self, name), self.shard)
        checkpoint[_RNG_KEY] = {
            "device_type": self.device.type,
            "networks_per_stream": self.hparams["networks_per_stream"],
            "states": states,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get(_RNG_KEY)
        self._generators, self._pending_rng = {}, None
        if rng is None or "states" not in rng:
            warnings.warn(
                "the checkpoint holds no per-block generator states (saved by an earlier reference_models or "
                "without on_save_checkpoint): the training noise restarts from the seed",
                stacklevel=2,
            )
            return
        per = self.hparams["networks_per_stream"]
        if rng["networks_per_stream"] != per:
            raise ValueError(
                f"the checkpoint's random streams are blocks of networks_per_stream={rng['networks_per_stream']}, "
                f"this model's of networks_per_stream={per}: build the model with the checkpoint's hyper-parameters"
            )
        self._pending_rng = {"device_type": rng["device_type"], "states": dict(rng["states"])}


def fit_reference(
    module: pl.LightningModule,
    steps: int,
    *,
    callbacks: Sequence[pl.Callback] = (),
    logger: Any = False,
    enable_progress_bar: bool = False,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: Any = "auto",
) -> pl.Trainer:
    """Train ``module`` for ``steps`` optimizer steps and return the finished ``Trainer``.

    The one place a reference model's ``Trainer`` is built (``rmt_callbacks.reproduce`` trains through it too):
    no checkpoints, model summary or sanity steps, no epoch limit. A ``logger`` gets about 50 logging points
    per run and at least one per epoch: ``log_every_n_steps = max(1, min(steps // 50, module.steps_per_epoch))``.
    Lightning's advisory warnings about data-loader workers and logging intervals do not apply to the
    step-index loaders and are silenced for this call only.

    Args:
        module: the model to train.
        steps: optimizer steps, ``>= 1``.
        callbacks: Lightning callbacks (monitors, progress bars, recorders).
        logger: a Lightning logger, or ``False`` for none.
        enable_progress_bar: Lightning's own progress bar.
        accelerator: Lightning's accelerator name.
        devices: devices per node (Lightning's ``devices``: a count, ``"auto"`` or a list as a string).
        num_nodes: machines (Lightning's ``num_nodes``).
        strategy: Lightning's strategy (``"auto"``, ``"ddp"``, ``"ddp_spawn"``, or a strategy object).

    Raises:
        ValueError: if ``steps < 1``, or (for an :class:`EnsembleModule`) the Trainer has more ranks than the
            module has stream blocks or several ranks under a strategy other than DDP: raised here, before any
            process is launched.
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    steps = int(steps)
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=-1,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        callbacks=list(callbacks),
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=enable_progress_bar,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(steps // 50, getattr(module, "steps_per_epoch", steps))),
    )
    if isinstance(module, EnsembleModule):
        module.check_trainer(trainer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*log_every_n_steps.*")
        trainer.fit(module)
    return trainer
