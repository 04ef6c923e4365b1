r"""``RMTCallback``: the monitors in a Hugging Face ``transformers.Trainer``.

.. code-block:: python

    from rmt_callbacks.integrations.transformers import RMTCallback

    args = TrainingArguments(..., report_to=["mlflow"])
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[RMTCallback(every_n_steps=50)])
    trainer.train()

The callback runs :func:`rmt_callbacks.watch`'s :class:`~rmt_callbacks.integrations.loop.Watcher` (so the
records equal those of the Lightning callbacks and of a plain loop) at the Trainer's optimizer steps
(``state.global_step``). It logs into the MLflow run that Hugging Face's own ``MLflowCallback`` opened
(``report_to`` with ``"mlflow"``; ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME`` as it reads them), or
into a run the user started. With ``trainer=`` it also sends its scalars to the Trainer's other reporters
(TensorBoard, W&B, …) through their ``on_log``, at the analysed step. The noise temperature: :math:`\alpha` is the
group's learning rate at each update (the scheduler's, read by a pre-hook on the optimizer), :math:`|B|` =
``per_device_train_batch_size`` × ``gradient_accumulation_steps`` × ``world_size``.

Needs ``pip install "rmt-callbacks[transformers]"``; ``import rmt_callbacks`` never imports ``transformers``.

References: ``transformers.TrainerCallback``, ``transformers.integrations.MLflowCallback``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from transformers import TrainerCallback
from transformers.integrations import get_reporting_integration_callbacks

from ..monitors import OnceMessages
from ._build import build_monitors
from ._host import world
from .loop import Watcher, resolve_sinks

__all__ = ["RMTCallback"]


class RMTCallback(TrainerCallback):
    r"""Spectra, random-matrix fits and Dyson Brownian motion of the weights, logged while a ``Trainer`` trains.

    Args:
        every_n_steps: analyse every this many optimizer steps (``None``: every 50, within ``overhead_budget``).
        dyson: also run a DysonMonitor (``True``), or not, or one with these arguments (a dict).
        trainer: the ``Trainer`` this callback is added to; only needed to send the scalars to its reporters other
            than MLflow (``trainer.add_callback(RMTCallback(trainer=trainer))``).
        options: any SpectrumMonitor argument (``include``, ``exclude``, ``analyses``, ``log_key_prefix``,
            ``overhead_budget``, …); not watch's batch, accumulation or MLflow ones: the Trainer supplies those.

    Raises:
        ValueError, TypeError: a bad argument (here, before training); at train begin, a selection matching nothing.
    """

    def __init__(
        self,
        every_n_steps: int | None = None,
        *,
        dyson: bool | dict[str, Any] = True,
        trainer: Any = None,
        **options: Any,
    ) -> None:
        for key in ("batch_size", "accumulation", "dataloader", "max_steps", "tracking_uri", "run_id", "experiment"):
            if key in options:
                raise TypeError(f"RMTCallback takes no {key}=: the Trainer's arguments and MLflow run supply it")
        build_monitors(every_n_steps, dyson, None, "RMTCallback()", **options)  # bad arguments raise now
        self.every_n_steps, self.dyson, self.options, self.trainer = every_n_steps, dyson, options, trainer
        self.watcher: Watcher | None = None
        self._said = OnceMessages()
        self._args: Any = None
        self._state: Any = None
        self._reporters: tuple[type, ...] = ()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.watcher is not None:  # a second train() with the same callback: the first run's records are done
            self.watcher.close()
        self._args, self._state = args, state
        others = [name for name in _reporters(args) if name != "mlflow"]
        self._reporters = tuple(get_reporting_integration_callbacks(others)) if self.trainer is not None else ()
        if others and self.trainer is None:
            self._said.once(
                ("reporters",),
                f"RMTCallback: report_to also names {', '.join(others)}; the random-matrix scalars go to MLflow only. "
                "Add the callback with trainer.add_callback(RMTCallback(trainer=trainer)) to send them there too.",
            )
        forward = self._forward if self._reporters else None
        rank = world()[0] if world()[1] > 1 else int(getattr(args, "process_index", 0))
        # no MLflow run open: none is opened behind the Trainer's back
        sinks = resolve_sinks(tracking_uri=None, run_id=None, experiment=None, log=forward, rank=rank, create=False)
        if not sinks[0]:  # nothing to log into: no watcher (its monitors would only say the same in Lightning's words)
            self._said.once(
                ("nowhere",),
                "RMTCallback: no MLflow run is active (report_to has no 'mlflow', no mlflow.start_run()) and no other "
                "reporter is reachable, so nothing is analysed. Set report_to=['mlflow'], or start an MLflow run.",
            )
        self._said.emit()
        if not sinks[0]:
            self.watcher = None
            return
        size = args.per_device_train_batch_size
        monitors = build_monitors(self.every_n_steps, self.dyson, size, "RMTCallback()", **self.options)
        self.watcher = Watcher(
            model,
            kwargs["optimizer"],
            monitors,
            accumulation=int(args.gradient_accumulation_steps),
            max_steps=int(state.max_steps) if state.max_steps and state.max_steps > 0 else None,
            replicas=int(args.world_size),
            start_step=int(state.global_step),
            sinks=sinks,
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watcher is not None:
            self._state = state
            self.watcher.step(int(state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watcher is not None:
            self._state = state
            self.watcher.close()  # after MLflowCallback ended its run: MLflow takes the writes all the same

    def _forward(self, metrics: dict[str, float], step: int) -> None:
        """The scalars to each other reporter's ``on_log``, as if the Trainer had logged them at ``step``."""
        if self.trainer is None or self._state is None:
            return
        state = dataclasses.replace(self._state, global_step=step)
        callbacks: list[Any] = self.trainer.callback_handler.callbacks
        for callback in callbacks:
            if isinstance(callback, self._reporters):
                cast(Any, callback).on_log(self._args, state, self.trainer.control, logs=dict(metrics))


def _reporters(args: Any) -> list[str]:
    report_to = getattr(args, "report_to", None) or []
    return [report_to] if isinstance(report_to, str) else [str(r) for r in report_to if r != "none"]
