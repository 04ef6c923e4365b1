r"""Full, unsharded copies of the weights on rank zero, under DDP, FSDP (``FullyShardedDataParallel``) and FSDP2.

A monitor that analyses on rank zero only needs the *full* matrices there. Under plain training and DDP every
rank holds them; under FSDP each rank holds a shard, and gathering them is a collective that **every rank must
enter, in the same order**. :func:`snapshot_module` (a module tree of copies that
:func:`rmt_callbacks.analysis.resolve_views` reads like the user's model) is therefore called by every rank at an
analysis step; rank zero gets detached CPU copies, the other ranks ``None``. (A monitor that is not sharded copies
only the views it analyses, :func:`snapshot_views`, with no collective.)

.. math::

    \text{snapshot}_0 = \{\, n \mapsto \operatorname{cpu}(\operatorname{clone}(W_n^{\text{full}})) \,\},\qquad
    \text{snapshot}_{r>0} = \texttt{None}.

How each layout is gathered:

* plain / DDP (no ``FullyShardedDataParallel`` module, no ``DTensor`` parameter): no collective; rank zero copies
  its own parameters, the other ranks return at once.
* FSDP1 (``FullyShardedDataParallel`` anywhere under ``trainer.strategy.model``, ``use_orig_params`` either way):
  ``FullyShardedDataParallel.summon_full_params(root, writeback=False, rank0_only=True, offload_to_cpu=...)`` on
  every rank; rank zero copies the parameters inside the context. ``offload_to_cpu`` is used only when the shards
  live off the CPU (with CPU shards it crashes the process in torch 2.13, so it is left off there).
* FSDP2 / DTensor (``fully_shard``, Lightning's ``ModelParallelStrategy``, tensor parallelism): ``full_tensor()``
  on every rank for **every** ``DTensor`` parameter, one at a time, in ``named_parameters()`` order (the same on
  every rank: it follows the module structure); rank zero keeps a CPU copy of those selected, the others drop each
  full tensor at once (peak memory: one full parameter).

Names are the user-visible ones: wrapper levels (FSDP1's ``_fsdp_wrapped_module``, activation checkpointing's
``_checkpoint_wrapped_module``, ``torch.compile``'s ``_orig_mod``) are skipped, so ``"fc._fsdp_wrapped_module.weight"``
is reported as ``"fc.weight"``, the name ``named_parameters()`` gives on the unwrapped model.

No hang: the collectives issued depend only on the module structure, never on ``names`` (which matters on rank
zero only) nor on values. The caller must make the *decision* to call a pure function of what every rank agrees
on (``trainer.global_step``, ``trainer.current_epoch``, ``trainer.sanity_checking``, ``trainer.loggers``, state
loaded from the same checkpoint) and call before any ``if not trainer.is_global_zero: return``. A failed copy on
rank zero (out of memory, say) leaves that parameter out with a warning, and the loop goes on, so rank zero still
enters every collective the others do.

Verified on CPU with two gloo processes (``tests/reliability/test_fsdp.py``): DDP (Lightning ``strategy="ddp"``),
FSDP1 (Lightning ``FSDPStrategy``, sub-classed past its GPU-only check, modules wrapped in ``configure_model`` with
``device_id=cpu``) and FSDP2 (Lightning ``ModelParallelStrategy`` with ``fully_shard`` in ``configure_model``):
snapshots equal the parameters of the same model trained in one process, bit for bit, with the same names and the
same matrix views. On GPU (``offload_to_cpu=True`` and Lightning's own FSDP wrapping): ``benchmarks/gpu_check_fsdp.py``.

References: PyTorch ``FullyShardedDataParallel.summon_full_params``, ``DTensor.full_tensor``; Lightning #17512.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm

from ..spectral import MatrixView
from ..spectral.selection import WRAPPER_ATTRS, unwrap, user_name

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = [
    "WRAPPER_ATTRS",
    "copy_stored",
    "is_sharded",
    "snapshot_module",
    "snapshot_views",
    "stand_in",
    "strategy_root",
    "unwrap",
    "user_name",
]

_Row = tuple[str, nn.Module, str, torch.Tensor]  # (user-visible name, owning module, attribute, parameter)


def _rows(model: nn.Module) -> Iterator[_Row]:
    """Parameters of the unwrapped tree in ``named_parameters()`` order (modules and parameters once each)."""
    seen_modules: set[int] = set()
    seen_params: set[int] = set()

    def walk(module: nn.Module, prefix: str) -> Iterator[_Row]:
        module = unwrap(module)
        if id(module) in seen_modules:
            return
        seen_modules.add(id(module))
        for attr, param in module._parameters.items():
            if param is not None and id(param) not in seen_params:
                seen_params.add(id(param))
                yield f"{prefix}{attr}", module, attr, param
        for child_name, child in module._modules.items():
            if child is not None:
                yield from walk(child, f"{prefix}{child_name}.")

    yield from walk(model, "")


def _copy(name: str, tensor: torch.Tensor) -> torch.Tensor | None:
    """A detached CPU clone, or ``None`` (with a warning) when the copy fails, e.g. out of host memory."""
    try:
        return tensor.detach().to("cpu", copy=True)
    except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
        warnings.warn(f"could not copy parameter {name!r} to the CPU for analysis: {exc}", RuntimeWarning, stacklevel=3)
        return None


def _layout(root: nn.Module, model: nn.Module) -> str:
    """``"fsdp1"``, ``"dtensor"`` or ``"local"``."""
    if torch.distributed.is_available():
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.tensor import DTensor

        if any(isinstance(m, FullyShardedDataParallel) for m in root.modules()):
            return "fsdp1"
        if any(isinstance(p, DTensor) for p in model.parameters()):
            return "dtensor"
    return "local"


def is_sharded(model: nn.Module, root: nn.Module | None = None) -> bool:
    """Whether gathering ``model``'s full weights is a collective (FSDP1 under ``root``, or a ``DTensor`` parameter).

    The same on every rank (it reads the module structure only), so it may decide whether to call
    :func:`snapshot_module` at all: when it is ``False`` only rank zero needs to.

    Args:
        model: the user's module.
        root: the outermost module the strategy trains (``trainer.strategy.model``); ``None``: ``model``.

    Returns:
        ``True`` under FSDP1 or FSDP2 / tensor parallelism, ``False`` for plain and DDP training.

    Examples:
        >>> is_sharded(nn.Linear(3, 2))
        False
    """
    return _layout(model if root is None else root, model) != "local"


def _gather_rows(root: nn.Module, model: nn.Module, names: Sequence[str] | None, rank_zero: bool) -> list[_Row] | None:
    wanted = None if names is None else set(names)
    keep = (lambda n: wanted is None or n in wanted) if rank_zero else (lambda n: False)
    layout = _layout(root, model)
    if layout == "local" and not rank_zero:
        return None
    out: list[_Row] = []
    if layout == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel

        offload = any(p.device.type != "cpu" for p in root.parameters())  # CPU shards: offloading crashes
        with FullyShardedDataParallel.summon_full_params(
            root, writeback=False, rank0_only=True, offload_to_cpu=offload
        ):
            out = [(n, m, a, c) for n, m, a, p in _rows(model) if keep(n) and (c := _copy(n, p)) is not None]
    else:
        from torch.distributed.tensor import DTensor

        for n, m, a, p in _rows(model):  # every rank, every DTensor, same order: the structure decides, not names
            full = p.full_tensor() if isinstance(p, DTensor) else p
            if keep(n) and (c := _copy(n, full)) is not None:
                out.append((n, m, a, c))
            del full
    return out if rank_zero else None


def snapshot_module(
    trainer: pl.Trainer, pl_module: pl.LightningModule, names: Sequence[str] | None = None
) -> nn.Module | None:
    """A stand-in for ``pl_module`` holding full CPU copies of its parameters, on rank zero; ``None`` elsewhere.

    The stand-in has the user-visible module tree (the same module classes and attributes, wrappers removed) and,
    as ``nn.Parameter`` (``requires_grad=False``), the snapshot of the selected parameters; no buffers but those
    of parametrizations and of old-style ``spectral_norm`` hooks (shared, read only: a parametrized or hook-normed
    weight is read as the weight it applies, from its gathered ``weight_g``/``weight_v``/``weight_orig``). It is for
    reading (``named_parameters``, ``get_submodule``,
    :func:`rmt_callbacks.analysis.resolve_views`), never for a forward pass. Every rank must call it at the same
    steps (a collective under FSDP; see the module docstring).

    Args:
        trainer: the running ``Trainer``.
        pl_module: the ``LightningModule`` being trained.
        names: user-visible parameter names to copy (``None``: all); read on rank zero only: unknown names are
            left out, and no collective depends on them.

    Returns:
        The stand-in module on rank zero, ``None`` on the other ranks. Its ``named_parameters()`` are the
        selected parameters' user-visible names, in the order ``named_parameters()`` gives on the unwrapped model,
        each a detached CPU clone of the full parameter (its dtype kept).

    Raises:
        TypeError: ``pl_module`` is not an ``nn.Module``, or ``names`` is not a sequence of str.

    References: PyTorch ``FullyShardedDataParallel.summon_full_params``, ``DTensor.full_tensor``.

    Examples:
        >>> from types import SimpleNamespace
        >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> trainer = SimpleNamespace(strategy=SimpleNamespace(model=net), is_global_zero=True)  # one process
        >>> copies = dict(snapshot_module(trainer, net, names=["0.weight", "2.weight"]).named_parameters())
        >>> list(copies), torch.equal(copies["0.weight"], net[0].weight), copies["0.weight"] is net[0].weight
        (['0.weight', '2.weight'], True, False)
        >>> snapshot_module(SimpleNamespace(strategy=trainer.strategy, is_global_zero=False), net) is None
        True
    """
    if not isinstance(pl_module, nn.Module):
        raise TypeError(f"pl_module must be an nn.Module, got {type(pl_module).__name__}")
    if names is not None and (isinstance(names, str) or not all(isinstance(n, str) for n in names)):
        raise TypeError(f"names must be None or a sequence of str, got {names!r}")
    root = strategy_root(trainer)  # an nn.Module or None: an FSDP1 wrapper around pl_module is only found there
    rows = _gather_rows(pl_module if root is None else root, pl_module, names, trainer.is_global_zero)
    return None if rows is None else stand_in(pl_module, rows)


def stand_in(model: nn.Module, rows: Sequence[_Row]) -> nn.Module:
    """Shallow copies of ``model``'s unwrapped modules holding the tensors of ``rows`` as their only parameters.

    Examples:
        >>> net = nn.Sequential(nn.Linear(3, 2), nn.Conv1d(1, 1, 2))
        >>> copy = stand_in(net, [("1.weight", net[1], "weight", torch.ones(1, 1, 2))])
        >>> [(n, tuple(p.shape)) for n, p in copy.named_parameters()], type(copy[1]).__name__, copy[1].kernel_size
        ([('1.weight', (1, 1, 2))], 'Conv1d', (2,))
    """
    clones: dict[int, nn.Module] = {}

    def clone(module: nn.Module, *, buffers: bool = False) -> nn.Module:
        module = unwrap(module)
        if id(module) not in clones:
            copy = clones[id(module)] = object.__new__(type(module))  # no __init__: attributes only, shared
            kept = dict(module._buffers) if buffers else {}  # a parametrization's own state (spectral norm's u, v)
            for hook in module._forward_pre_hooks.values():  # old-style spectral_norm: its u, v on the module
                if isinstance(hook, SpectralNorm):
                    kept.update(
                        {k: module._buffers[k] for k in (f"{hook.name}_u", f"{hook.name}_v") if k in module._buffers}
                    )
            kept = {k: None if b is None else b.detach().to("cpu", copy=True) for k, b in kept.items()}  # as the rows
            copy.__dict__.update(module.__dict__, _parameters={}, _buffers=kept, _non_persistent_buffers_set=set())
            inner = isinstance(module, parametrize.ParametrizationList)
            copy.__dict__["_modules"] = {
                k: None if c is None else clone(c, buffers=inner) for k, c in module._modules.items()
            }
        return clones[id(module)]

    root = clone(model)
    for _, owner, attr, tensor in rows:
        copy = clone(owner)
        copy.__dict__.pop(attr, None)  # FSDP1 without use_orig_params may leave a plain tensor attribute
        copy._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
    return root


def strategy_root(trainer: pl.Trainer) -> nn.Module | None:
    """The outermost module the strategy trains (``trainer.strategy.model``), or ``None``."""
    root = getattr(trainer.strategy, "model", None)
    return root if isinstance(root, nn.Module) else None


def snapshot_views(views: Sequence[MatrixView]) -> list[MatrixView]:
    """Detached copies of the views, taken now (the optimizer moves on while the worker reads them).

    On CUDA the copies are made on a side stream that waits for the training stream, and the training stream
    waits for the copies (device-side, the host does not block), so the next optimizer step cannot overwrite a
    weight before it was copied and the analysis never queues behind training kernels.
    """
    cuda = [v for v in views if v.matrix.is_cuda]
    if not cuda:
        return [MatrixView(v.name, copy_stored(v.matrix), v.source) for v in views]
    side = torch.cuda.Stream(device=cuda[0].matrix.device)
    side.wait_stream(torch.cuda.current_stream(cuda[0].matrix.device))
    with torch.cuda.stream(side):
        out = [MatrixView(v.name, copy_stored(v.matrix), v.source) for v in views]
    torch.cuda.current_stream(cuda[0].matrix.device).wait_stream(side)
    side.synchronize()  # the copies are complete before the worker thread (another stream) reads them
    return out


def copy_stored(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` that stores what ``t`` stores: a broadcast (stride-0) dimension stays broadcast.

    Examples:
        >>> big = torch.zeros(1, 1).expand(10_000, 10_000)
        >>> c = copy_stored(big)
        >>> c.shape, c.stride(), c.untyped_storage().nbytes()
        (torch.Size([10000, 10000]), (0, 0), 4)
    """
    t = t.detach()
    base = t
    for dim in range(t.ndim):
        if t.stride(dim) == 0 and t.shape[dim] > 1:
            base = base.narrow(dim, 0, 1)
    return t.clone() if base is t else base.clone().expand(t.shape)
