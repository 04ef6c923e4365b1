"""The tests' shared toy kit: one configurable Lightning module, a loader of random data and a silent Trainer.

``tests`` is on ``sys.path`` (``pythonpath`` in ``[tool.pytest.ini_options]``), so every test file, in any
directory, imports it as ``from scaffold import Toy, quiet_trainer, random_loader``; processes spawned from a test
(``ddp_spawn``, ``torch.multiprocessing``) inherit that path.

* :class:`Toy`: a regression (or classification) on a chain of layers, trained with SGD. Special-purpose modules
  (bad matrices, hostile names, parameters that change mid-run) subclass it and override ``forward`` or
  ``training_step``; they keep its optimizer, loss and switches.
* :func:`random_loader`: Gaussian inputs and Gaussian (or computed) targets from one seeded generator.
* :func:`quiet_trainer`: ``pl.Trainer`` on the CPU with no progress bar, model summary, checkpoints or logger unless
  asked for; its root directory is the working directory, which ``tests/conftest.py`` makes the test's own.

>>> model = Toy(8, 12, 4, seed=0)  # fc1: Linear(8, 12), tanh, fc2: Linear(12, 4); mse, SGD(lr=0.05)
>>> [name for name, _ in model.named_parameters()]
['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
>>> x, y = next(iter(random_loader(32, 8, 4, batch_size=16, seed=1)))
>>> model(x).shape == y.shape == (16, 4)
True
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": nn.functional.mse_loss,
    "cross_entropy": nn.functional.cross_entropy,
}


class Toy(pl.LightningModule):
    """A chain of layers trained on ``(x, y)`` batches: ``loss(forward(x), y)``, SGD on every parameter.

    Layers are given either as widths or by name:

    * ``Toy(8, 12, 4, seed=0)``: ``fc1 = Linear(8, 12)``, ``fc2 = Linear(12, 4)`` (one layer: ``fc``), built after
      ``torch.manual_seed(seed)`` when a seed is given (the global generator, as ``nn.Linear`` draws from it);
    * ``Toy(net=nn.Sequential(...))``, ``Toy(sn=..., wn=..., head=...)``: the modules as attributes of those names,
      applied in the order given (an ``nn.ModuleList`` counts as its layers, in order). They are built before the
      call: seed the global generator first where the initial weights matter.

    ``activation`` is applied between consecutive layers (``None``: none). Options, all keyword-only:

    * ``loss``: ``"mse"``, ``"cross_entropy"`` or a callable ``(output, target) -> loss``;
    * ``lr`` and ``optimizer``: by default ``SGD(self.parameters(), lr=lr)``; ``optimizer`` is a callable given the
      module, returning whatever ``configure_optimizers`` may return (several optimizers, a scheduler);
    * ``manual``: manual optimisation, every optimizer zeroed, one backward, every optimizer stepped (for several
      optimizers on one loss);
    * ``log``: ``self.log(log, loss)`` every step;
    * ``step_s``: sleep that long at the start of every step (training takes time, as real training does);
    * ``fail_at``: raise ``RuntimeError("failed at step <n>")`` when ``global_step`` reaches it;
    * ``hparams``: saved with ``save_hyperparameters`` (so the logger logs them); nothing is saved otherwise.
    """

    def __init__(
        self,
        *widths: int,
        seed: int | None = None,
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "mse",
        lr: float = 0.05,
        optimizer: Callable[[Toy], Any] | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = torch.tanh,
        manual: bool = False,
        log: str | None = None,
        step_s: float | None = None,
        fail_at: int | None = None,
        hparams: dict[str, Any] | None = None,
        **layers: nn.Module,
    ) -> None:
        super().__init__()
        if widths and layers:
            raise TypeError("Toy takes widths or named layers, not both")
        if seed is not None and not widths:
            raise TypeError("seed applies to layers built from widths; seed before building named layers")
        if len(widths) == 1:
            raise TypeError("Toy needs at least two widths (in and out), got one")
        if hparams is not None:
            self.save_hyperparameters(hparams)
        if widths:
            if seed is not None:
                torch.manual_seed(seed)
            pairs = list(itertools.pairwise(widths))
            names = ["fc"] if len(pairs) == 1 else [f"fc{i}" for i in range(1, len(pairs) + 1)]
            layers = {name: nn.Linear(i, o) for name, (i, o) in zip(names, pairs, strict=True)}  # in order
        for name, layer in layers.items():
            setattr(self, name, layer)
        self._chain = tuple(layers)
        self._loss = LOSSES[loss] if isinstance(loss, str) else loss
        self._lr, self._optimizer, self._activation = lr, optimizer, activation
        self._log, self._step_s, self._fail_at = log, step_s, fail_at
        self.automatic_optimization = not manual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chain = [m for name in self._chain for m in _unpacked(getattr(self, name))]
        for i, layer in enumerate(chain):
            if i and self._activation is not None:
                x = self._activation(x)
            x = layer(x)
        return x

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if self._step_s is not None:
            time.sleep(self._step_s)
        if self._fail_at is not None and self.global_step == self._fail_at:
            raise RuntimeError(f"failed at step {self._fail_at}")
        x, y = batch
        loss = self._loss(self(x), y)
        if self._log is not None:
            self.log(self._log, loss)
        if self.automatic_optimization:
            return loss
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for opt in optimizers:
            opt.zero_grad()
        self.manual_backward(loss)
        for opt in optimizers:
            opt.step()
        return None

    def configure_optimizers(self) -> Any:
        if self._optimizer is not None:
            return self._optimizer(self)
        return torch.optim.SGD(self.parameters(), lr=self._lr)


def _unpacked(module: nn.Module) -> list[nn.Module]:
    return list(module) if isinstance(module, nn.ModuleList) else [module]


def random_loader(
    n: int,
    in_features: int,
    out_features: int | None = None,
    *,
    batch_size: int = 8,
    seed: int | None = 0,
    target: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **loader_kwargs: Any,
) -> DataLoader:
    """``n`` Gaussian inputs of ``in_features``, then ``n`` Gaussian targets of ``out_features`` from the same
    generator (``torch.Generator().manual_seed(seed)``; ``seed=None``: the global one); or targets computed as
    ``target(x)``; or, with neither, batches of inputs alone (``(x,)``). ``loader_kwargs`` go to the DataLoader.

    >>> x, y = random_loader(6, 3, target=lambda x: x.sum(1), batch_size=6).dataset.tensors
    >>> torch.equal(y, x.sum(1)) and torch.equal(x, torch.randn(6, 3, generator=torch.Generator().manual_seed(0)))
    True
    """
    if out_features is not None and target is not None:
        raise TypeError("random_loader takes out_features or target, not both")
    g = None if seed is None else torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_features, generator=g)
    if target is not None:
        tensors = (x, target(x))
    elif out_features is not None:
        tensors = (x, torch.randn(n, out_features, generator=g))
    else:
        tensors = (x,)
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, **loader_kwargs)


QUIET: dict[str, Any] = {
    "accelerator": "cpu",
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def quiet_trainer(**overrides: Any) -> pl.Trainer:
    """``pl.Trainer(**QUIET, default_root_dir=<the working directory>, **overrides)``: any argument of the Trainer
    may be given, the defaults included (``logger=...``, ``enable_checkpointing=True`` with a ``ModelCheckpoint``).

    >>> trainer = quiet_trainer(max_steps=2)
    >>> (trainer.max_steps, trainer.logger, trainer.checkpoint_callback, trainer.default_root_dir == os.getcwd())
    (2, None, None, True)
    """
    return pl.Trainer(**{**QUIET, "default_root_dir": os.getcwd(), **overrides})


class MlflowServer:
    """``mlflow server`` on a loopback port chosen (free) at construction, sqlite backend, proxied artifacts."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root, self.url = root, f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start_s: list[float] = []

    def start(self, timeout_s: float = 300) -> None:
        """Start on the same port, backend and artifact directory; return once ``/health`` answers."""
        mlflow_cli = Path(sys.executable).with_name("mlflow")
        cmd = [str(mlflow_cli), "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
               "--artifacts-destination", str(self.root / "artifacts"), "--serve-artifacts",
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]  # fmt: skip
        began = time.monotonic()
        with open(self.root / "server.log", "a") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while not healthy(self.url):
            if self._proc.poll() is not None or time.monotonic() - began > timeout_s:
                self.kill()
                pytest.fail(f"mlflow server did not come up:\n{(self.root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.2)
        self.start_s.append(time.monotonic() - began)

    def kill(self) -> None:
        """SIGKILL the server and its workers (its own process group), as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
