"""No training step waits for the network: against a server that accepts connections and never answers, the
training thread opens no connection between ``on_train_start`` and ``on_train_end``.

The server is a black hole on loopback: the kernel completes every TCP handshake, nobody ever reads or answers, so
each request (or ``/health`` probe) made from the training thread would cost its full timeout inside a step. The test
counts connections, not seconds (the machines are noisy): every ``socket.connect`` made on the training thread while
training runs is recorded with the stack that made it. The writer's own threads do connect (the count is checked, so
the test is not vacuous); they are allowed to wait.
"""

from __future__ import annotations

import socket
import threading
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from rmt_callbacks import DysonMonitor, SpectrumMonitor
from rmt_callbacks.sinks import SpoolingMLFlowLogger

from scaffold import Toy, quiet_trainer, random_loader


class BlackHole:
    """A loopback listener that accepts connections and never reads nor answers."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._held: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)  # held open, never read: the client waits for its timeout

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        for conn in self._held:
            conn.close()


class Connections(Callback):
    """Records every ``socket.connect`` (who, where, from which stack) while training runs."""

    def __init__(self) -> None:
        self.training: int | None = None  # the training thread's id, while training runs
        self.on_training_thread: list[str] = []
        self.elsewhere = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.training = threading.get_ident()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.training = None  # the end-of-training flush may wait for the server: that is asked for

    def record(self, address: Any) -> None:
        if threading.get_ident() != (self.training or threading.main_thread().ident):
            self.elsewhere += 1  # the writer's thread, whenever it tries: one blocked attempt can span a short fit
        if self.training is not None and threading.get_ident() == self.training:
            ours = [f for f in traceback.extract_stack() if "rmt_callbacks" in f.filename]  # who asked
            self.on_training_thread.append(f"{address}\n{''.join(traceback.format_list(ours))}")


@pytest.fixture
def hole() -> Iterator[BlackHole]:
    server = BlackHole()
    yield server
    server.close()


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Connections:
    counter, connect = Connections(), socket.socket.connect

    def counted(sock: socket.socket, address: Any) -> Any:
        counter.record(address)
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", counted)
    return counter


@pytest.mark.parametrize("run_id", [None, "a-resumed-run"], ids=["new run", "resumed run"])
def test_no_training_step_connects_to_a_server_that_never_answers(
    hole: BlackHole, connections: Connections, tmp_path: Path, run_id: str | None
) -> None:
    logger = SpoolingMLFlowLogger("black-hole", tracking_uri=hole.url, run_id=run_id, retry_interval_s=1.0)
    monitors = [
        SpectrumMonitor(every_n_train_steps=3, overhead_budget=None, background=False),  # analyses on this thread
        DysonMonitor(),  # logs every step, from the training thread
    ]
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    trainer = quiet_trainer(
        max_steps=12,
        logger=logger,
        log_every_n_steps=1,
        callbacks=[connections, *monitors, checkpoints],
        enable_checkpointing=True,
    )
    data = random_loader(96, 16, 4, batch_size=8, seed=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Toy(16, 24, 4, log="train_loss"), data)  # logs its loss every step (through the logger's writer)
    assert trainer.global_step == 12 and len(list((tmp_path / "ckpt").glob("*.ckpt"))) == 3
    assert connections.on_training_thread == [], "\n\n".join(connections.on_training_thread)
    assert connections.elsewhere > 0  # the writer did try the server, off the training thread
