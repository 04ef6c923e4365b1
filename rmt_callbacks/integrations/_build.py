"""The monitors of an entry point (:func:`rmt_callbacks.watch`, ``RMTCallback``): built from its arguments, with
messages in its own words, and the model and optimizers they read unwrapped and checked before training."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..analysis import resolve_views
from ..monitors import has_lazy_parameters, is_sharded
from ..monitors.dyson import DysonMonitor
from ..monitors.spectrum import SpectrumMonitor

__all__ = ["SHARED", "WORDS", "build_monitors", "check_selection", "unwrap_model", "unwrap_optimizer"]

SHARED = ("include", "exclude", "param_filter", "log_key_prefix", "solver", "overhead_budget")
"""Arguments of :func:`watch` that both monitors take (the selection, the key prefix, the eigensolver, the budget)."""
WORDS = {  # per entry point: how to give |B|, and what that stack calls the batch size and the accumulation
    "watch()": ("batch_size=... (or dataloader=...) to watch()", ("batch_size=", "accumulation=")),
    "RMTCallback()": ("per_device_train_batch_size", ("per_device_train_batch_size", "gradient_accumulation_steps")),
}


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside a wrapper (Accelerate's ``AcceleratedOptimizer``, Lightning's
    ``LightningOptimizer``): the one whose class says what its noise temperature is."""
    while not type(optimizer).__module__.startswith("torch.") and isinstance(
        getattr(optimizer, "optimizer", None), torch.optim.Optimizer
    ):
        optimizer = optimizer.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"watch: expected a torch.optim.Optimizer, got {type(optimizer).__name__} ({optimizer!r})")
    return optimizer


def unwrap_model(model: Any) -> nn.Module:
    """The user's module inside ``DistributedDataParallel`` / ``DataParallel`` (parameter names without
    ``module.``); a sharded model (FSDP) is refused: its weights need a collective gather per analysis."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"watch: model must be a torch.nn.Module, got {type(model).__name__}")
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    if is_sharded(model):
        raise ValueError(
            "watch: the model is sharded (FSDP or DTensor parameters); gathering its weights is a collective the "
            "plain-loop watcher does not run. Train it with Lightning and SpectrumMonitor / DysonMonitor, which "
            "gather FSDP models, or watch an unsharded copy."
        )
    return model


def _check_options(who: str, options: dict[str, Any]) -> None:
    """Refuse an argument neither monitor takes here, saying where it belongs."""
    spectrum = [p for p in inspect.signature(SpectrumMonitor).parameters if p != "every_n_train_steps"]
    dyson = [p for p in inspect.signature(DysonMonitor).parameters if p not in spectrum]
    for key in options:
        if key in ("every_n_train_steps", "every_n_epochs"):
            raise TypeError(f"{who} takes every_n_steps (optimizer steps), not {key}")
        if key not in spectrum:
            where = f"a DysonMonitor argument: pass dyson={{{key!r}: ...}}" if key in dyson else "not an argument"
            raise TypeError(f"{who} got {key}=: {where}; SpectrumMonitor's arguments it takes: {', '.join(spectrum)}")


def check_selection(model: nn.Module, monitors: Sequence[Any]) -> None:
    """Raise, naming watch's arguments, when a monitor's selection matches no matrix of ``model``."""
    if has_lazy_parameters(model):  # their shapes are not known yet: the monitors check after the first forward
        return
    for m in monitors:
        try:
            resolve_views(model, include=m.include, exclude=m.exclude, param_filter=m.param_filter)
        except ValueError as exc:
            raise ValueError(f"watch: {exc}") from None


def build_monitors(
    every_n_steps: int | None,
    dyson: bool | dict[str, Any],
    batch_size: int | None,
    who: str = "watch()",
    **options: Any,
) -> list[Any]:
    """The monitors of :func:`watch` (``who``: the entry point, for messages): a SpectrumMonitor with ``options``,
    and a DysonMonitor unless ``dyson`` is ``False`` (a dict: its own arguments). Bad arguments raise here."""
    _check_options(who, options)
    shared = {k: options[k] for k in SHARED if k in options}
    try:
        monitors: list[Any] = [SpectrumMonitor(every_n_train_steps=every_n_steps, **options)]
    except ValueError as exc:  # its words are the Lightning callback's: say which argument of watch() it was
        raise ValueError(str(exc).replace("every_n_train_steps", "every_n_steps")) from None
    monitors[0].cadence_arg = "every_n_steps"  # what its messages tell the user to change
    if not isinstance(dyson, (bool, dict)):
        raise TypeError(f"dyson must be True, False or a dict of DysonMonitor arguments, got {dyson!r}")
    if dyson is not False:
        own = dyson if isinstance(dyson, dict) else {}
        monitors.append(DysonMonitor(**{"batch_size": batch_size, **shared, **own}))
        monitors[-1].batch_hint, monitors[-1].batch_words = WORDS[who]
        monitors[-1].arg_style = "dyson={{'{}': ...}}"  # its arguments, where this entry point takes them
    return monitors
