"""A tracking server that dies mid-training and comes back before the end: when ``Trainer.fit`` returns, the run
holds everything the monitors logged, once, and the user is not told that anything was left undelivered.

The server is a real ``mlflow server`` (``tests/reliability/conftest.py``), SIGKILLed at step 15 of 60 and restarted
at step 35 on the same port and backend. The monitors' writes go through the run's ``MlflowWriter``: it spools while
the server is away and, once it answers, replays the spool; a request caught in MLflow's own retry loop (urllib3
backoff sleeps 4, 8, 16, 32, 64, 120 s) is left behind by the writer's watchdog, which starts a fresh writer thread
as soon as the server answers again. The last two tests make such a hang happen on purpose, through a loopback proxy
in front of the server: they measure how long the catch-up takes after the server is back, and check what the run
holds once the left-behind request has been retried into it.

What the monitors logged is known from a second, in-memory logger on the same Trainer: the monitors give every
logger the same metrics at the same steps, so the MLflow run must hold exactly those (key, step) pairs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from lightning.pytorch.loggers import Logger, MLFlowLogger
from mlflow import MlflowClient

from rmt_callbacks import DysonMonitor, SpectrumMonitor
from rmt_callbacks.sinks import SpoolingMLFlowLogger
from rmt_callbacks.sinks.spool import MlflowWriter

from scaffold import Toy, quiet_trainer, random_loader

pytestmark = pytest.mark.slow

MAX_STEPS, KILL_AT, RESTART_AT = 60, 15, 35


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mlflow_server: Any) -> Iterator[Any]:
    """One server for the module; each test leaves it running."""
    srv = mlflow_server(tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.kill()
    print(f"\nmlflow server start times (s): {[round(s, 1) for s in srv.start_s]}; load {os.getloadavg()}")


class Remembers(Logger):
    """A Lightning logger that keeps, per key, every step it was given (the oracle of what the monitors logged)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[str, list[int]] = defaultdict(list)

    @property
    def name(self) -> str:
        return "remembers"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key in metrics:
            self.steps[key].append(int(step or 0))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


def _two_layers(log: str | None = None) -> Toy:
    """Two Linear layers on random regression data; ``log``: the name under which it logs its loss every step
    (through the Trainer's loggers). Without it, it never calls ``self.log``: with Lightning's own ``MLFlowLogger`` a
    logged metric is sent from the training thread, which then sits in MLflow's retry loop for minutes while the
    server is down. That is Lightning's logger, not ours (``SpoolingMLFlowLogger`` is the cure)."""
    return Toy(8, 12, 4, seed=0, log=log)


class Outage(pl.Callback):
    """Kills the server after step ``KILL_AT`` and restarts it after ``RESTART_AT`` (after the monitors' hooks of
    that step: it comes last); notes when each phase began. The steps in between take 0.2 s each, as real ones
    would, so that the SpectrumMonitor's background analyses keep their cadence and some fall in the outage."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.at: dict[str, float] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.at["train_start"] = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == KILL_AT:
            self.at["kill"] = time.monotonic()
            self.server.kill()
        if KILL_AT <= step < RESTART_AT:
            time.sleep(0.2)
        if step == RESTART_AT:
            self.at["restart"] = time.monotonic()
            self.server.start()  # blocks training while the server boots (the writer keeps its own pace)
            self.at["healthy"] = time.monotonic()
        if step == MAX_STEPS:
            self.at["last_step"] = time.monotonic()


class Timestamps:
    """Notes when each captured warning appeared (polls the list that ``warnings.catch_warnings`` fills)."""

    def __init__(self, caught: list[warnings.WarningMessage]) -> None:
        self.caught, self.seen = caught, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self._take()

    def _take(self) -> None:
        while len(self.seen) < len(self.caught):
            self.seen.append((time.monotonic(), str(self.caught[len(self.seen)].message)))

    def stop(self) -> list[tuple[float, str]]:
        self._stop.set()
        self._thread.join()
        self._take()
        return self.seen


def _fit(
    server: Any, logger: MLFlowLogger, module: pl.LightningModule, root: Path
) -> tuple[Remembers, Outage, list[tuple[float, str]], float, float]:
    """Fit 60 steps with both monitors through the outage; returns the oracle, the phases, the timed warnings, and
    when the fit began and returned."""
    data = random_loader(8 * MAX_STEPS, 8, 4, batch_size=8, seed=1)
    remembers, outage = Remembers(), Outage(server)
    # the default cadence (a snapshot every step), logged every step so that the outage has Dyson records to spool
    # (the default, every 50 steps, logs only at 50 and 60); no budget: on steps this short, "auto" stretches the
    # stride past the run and nothing but the level spacing would be logged
    dyson = DysonMonitor(log_every_n_steps=1, overhead_budget=None)
    callbacks = [SpectrumMonitor(every_n_train_steps=5, overhead_budget=None), dyson, outage]
    trainer = quiet_trainer(
        max_steps=MAX_STEPS, default_root_dir=root, logger=[logger, remembers], callbacks=callbacks,
        log_every_n_steps=1,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stamps = Timestamps(caught)
        began = time.monotonic()
        trainer.fit(module, data)
        returned = time.monotonic()
        if not isinstance(logger, SpoolingMLFlowLogger):  # its finalize closed its writer; Lightning's logger: at
            MlflowWriter.for_logger(logger).close(timeout_s=0)  # exit, which says here what it would say then
        seen = stamps.stop()
    assert trainer.state.finished and trainer.global_step == MAX_STEPS
    return remembers, outage, seen, began, returned


def _report(name: str, outage: Outage, seen: list[tuple[float, str]], began: float, returned: float) -> None:
    at = outage.at
    phases = {
        "setup": at["train_start"] - began,
        f"steps 0-{KILL_AT}": at["kill"] - at["train_start"],
        f"steps {KILL_AT}-{RESTART_AT} (server down)": at["restart"] - at["kill"],
        "server boot": at["healthy"] - at["restart"],
        f"steps {RESTART_AT}-{MAX_STEPS}": at["last_step"] - at["healthy"],
        "train end (flush, finalize)": returned - at["last_step"],
    }
    print(f"\n{name}: fit {returned - began:.1f} s wall; load {os.getloadavg()}")
    for phase, seconds in phases.items():
        print(f"  {phase:32s} {seconds:6.1f} s")
    for t, message in seen:
        if "MLflow tracking server" in message or "SpoolingMLFlowLogger" in message:
            print(f"  {t - at['healthy']:+6.1f} s from the server's return: {message[:150]}")


def _history(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


def _missing(client: MlflowClient, run_id: str, remembers: Remembers, keys: list[str]) -> dict[str, Any]:
    """What the run lacks (or holds twice) of what the monitors logged under ``keys``: key -> (expected, held)."""
    wrong = {}
    for key in keys:
        expected, held = sorted(remembers.steps[key]), _history(client, run_id, key)
        if held != expected:
            wrong[key] = (expected, held)
    return wrong


def _check_run(client: MlflowClient, run_id: str, remembers: Remembers, extra: tuple[str, ...] = ()) -> None:
    """Every monitor key at every step it was logged, once; every analysis step's spectra; status FINISHED."""
    keys = sorted(k for k in remembers.steps if k.startswith("rmt/")) + list(extra)  # both monitors' keys
    for name in ("fc1.weight", "fc2.weight"):
        assert {f"rmt/{name}/dyson_width", f"rmt/{name}/lambda_max"} <= set(keys), keys
    assert any(k.endswith("/noise_temperature") for k in keys), keys  # DysonMonitor's run-level keys
    analysed = sorted(set(remembers.steps["rmt/fc1.weight/lambda_max"]))
    assert analysed[0] == 0 and analysed[-1] == MAX_STEPS
    assert any(KILL_AT < s <= RESTART_AT for s in analysed), analysed  # the outage had analyses to spool
    for key in keys:  # the oracle: each (key, step) given once
        assert len(remembers.steps[key]) == len(set(remembers.steps[key])), (key, remembers.steps[key])

    wrong = _missing(client, run_id, remembers, keys)
    paths = _artifacts(client, run_id)
    npz = defaultdict(list)
    for path in paths:
        match = re.fullmatch(r".*/step_(\d{8})\.npz", path)
        if match:
            npz[int(match.group(1))].append(path)
    status = client.get_run(run_id).info.status
    assert not wrong, "run lacks or duplicates steps: " + "; ".join(
        f"{k}: logged at {sorted(set(e) - set(h))} missing, held {h}" for k, (e, h) in wrong.items()
    )
    assert sorted(npz) == analysed, (sorted(npz), analysed, paths)  # the spectra of every analysis, no other
    assert status == "FINISHED"


def test_lightning_mlflow_logger_server_restarted_mid_fit(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's own MLFlowLogger: the monitors' writes survive the outage and are all in the run when fit
    returns (the train-end flush waits for the writer's catch-up); nobody is told 'not delivered'."""
    monkeypatch.chdir(tmp_path)  # the default spool, ./mlflow-spool/<run id>/..., goes here
    logger = MLFlowLogger(experiment_name="restart-lightning", tracking_uri=server.url)
    remembers, outage, seen, began, returned = _fit(server, logger, _two_layers(), tmp_path)
    _report("Lightning MLFlowLogger", outage, seen, began, returned)

    _check_run(MlflowClient(server.url), logger.run_id, remembers)
    assert not [m for _, m in seen if "not delivered" in m], [m for _, m in seen]
    assert outage.at["restart"] - outage.at["kill"] < 60  # no hook waited in MLflow's retry loop: the server is
    # back only once training reaches RESTART_AT, so a hook caught in it would have waited out all 244 s


def test_spooling_logger_server_restarted_mid_fit(server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SpoolingMLFlowLogger with ``self.log`` every step: the training thread never waits for the dead server,
    and its own metrics and the monitors' are all in the run, which is FINISHED, when fit returns."""
    monkeypatch.chdir(tmp_path)
    logger = SpoolingMLFlowLogger(experiment_name="restart-spooling", tracking_uri=server.url)
    remembers, outage, seen, began, returned = _fit(server, logger, _two_layers(log="loss"), tmp_path)
    _report("SpoolingMLFlowLogger", outage, seen, began, returned)

    assert sorted(remembers.steps["loss"]) == list(range(MAX_STEPS))  # logged at every step (before it counts)
    _check_run(MlflowClient(server.url), logger.run_id, remembers, extra=("loss", "epoch"))
    assert not [m for _, m in seen if "not delivered" in m], [m for _, m in seen]
    assert outage.at["restart"] - outage.at["kill"] < 60  # self.log never waited in MLflow's retry loop (244 s)


class Proxy:
    """A loopback TCP proxy in front of the server, in one of three modes.

    ``forward``: bytes go both ways. ``hold``: API requests are read and never answered (``GET /health`` is still
    forwarded, so the writer's probe passes and its request goes out and hangs), on new connections and on pooled
    ones alike. ``refuse``: nothing listens (connections are refused) and every open connection is reset. Leaving
    ``hold`` resets the held connections, as a server that died would.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "forward"
        self.log: list[tuple[float, str, str]] = []  # (time, mode, request line) of each request seen
        self.held = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._listen()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: refuse
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream: socket.socket | None = None
        health = False
        try:
            while (data := conn.recv(65536)) and self.mode != "refuse":  # accepted just before refusing: reset
                line = data.split(b"\r\n", 1)[0].decode("latin-1")
                if re.match(r"[A-Z]+ /", line):  # a request starts (bodies of MLflow's requests come along)
                    health = line.startswith("GET /health")
                    self.log.append((time.monotonic(), self.mode, line))
                if self.mode != "forward" and not health:
                    self.held.set()
                    continue  # read, never answered
                if upstream is None:
                    upstream = socket.create_connection(("127.0.0.1", self.upstream))
                    with self._lock:
                        self._conns.add(upstream)
                    threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            for s in (conn, upstream):
                if s is not None:
                    self._reset(s)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._reset(sink)

    def _reset(self, s: socket.socket) -> None:
        with self._lock:
            self._conns.discard(s)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def _reset_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            self._reset(s)

    def set(self, mode: str) -> None:
        if mode == "refuse" and self._listener is not None:
            self._listener.close()  # first: a retry must not be accepted (and held) after the resets
            self._listener = None
        was, self.mode = self.mode, mode
        if was == "hold" or mode == "refuse":
            self._reset_all()
        if mode != "refuse" and self._listener is None:
            self._listen()

    def close(self) -> None:
        self.set("refuse")


class HungAcrossAnOutage:
    """A writer behind a :class:`Proxy`: its request goes out while the proxy holds, the proxy then refuses (the
    request is reset, its immediate retry refused, then urllib3 sleeps 4-5 s and 8-9 s), and forwards again after
    ``REFUSE_S``, between the hung request's second and third retry (12-14 s after the reset)."""

    REFUSE_S = 6.0

    def __init__(self, server: Any, tmp_path: Path, experiment: str) -> None:
        self.direct = MlflowClient(server.url)
        self.run_id = self.direct.create_run(self.direct.create_experiment(experiment)).info.run_id
        self.proxy = Proxy(server.port)
        self.messages: list[str] = []
        self.writer = MlflowWriter(
            MlflowClient(self.proxy.url), self.run_id, tracking_uri=self.proxy.url, spool_dir=tmp_path / "spool",
            warn=self.messages.append, retry_interval_s=1,
        )  # fmt: skip

    def hold(self) -> None:
        """Hold the API requests from now on (the writer's probe still passes)."""
        self.proxy.set("hold")

    def held(self) -> None:
        """Wait until a request is held, and has been in flight longer than the writer's ``retry_interval_s``."""
        assert self.proxy.held.wait(30), self.proxy.log
        time.sleep(1.5)  # in flight longer than retry_interval_s: the watchdog looks at it

    def refuse(self) -> None:
        self.reset = time.monotonic()
        self.proxy.set("refuse")  # the "server" dies: the held request is reset, its retry refused, backoff 4 s

    def forward(self) -> tuple[bool, float]:
        """Forward again once ``REFUSE_S`` have passed since the reset; return settle's answer and its seconds."""
        time.sleep(max(0.0, self.reset + self.REFUSE_S - time.monotonic()))
        assert not self.writer.flush(timeout_s=10)  # down: everything queued is on disk
        self.spooled = len((self.writer.spool_dir / "ops.jsonl").read_text().splitlines())
        self.proxy.set("forward")
        self.back = time.monotonic()
        caught_up = self.writer.settle(timeout_s=30)
        self.settled = time.monotonic()
        return caught_up, self.settled - self.back

    def late_requests(self) -> list[str]:
        """Wait (until 20 s after the reset) for the hung request's own retry into the live server, and return the
        API requests that came after the catch-up."""
        after = [(t, line) for t, _, line in self.proxy.log if t > self.settled and "/health" not in line]
        while not after and time.monotonic() < self.reset + 20:
            time.sleep(0.2)
            after = [(t, line) for t, _, line in self.proxy.log if t > self.settled and "/health" not in line]
        time.sleep(1.5)  # the rest of that operation's requests
        return [f"+{t - self.reset:.1f} s {line}" for t, _, line in self.proxy.log if t > self.settled]


def test_request_hung_across_an_outage_catches_up_at_once(server: Any, tmp_path: Path) -> None:
    """A request in flight when the server goes away sits in urllib3's backoff; once the server answers again the
    writer's watchdog starts a fresh writer thread that sends the spool, so the run is complete a second or two
    after the server is back, not at the hung request's next retry (6-8 s later here; 16-64 s later in general)."""
    hang = HungAcrossAnOutage(server, tmp_path, "restart-hang")
    writer, keys = hang.writer, [f"rmt/fc{i}.weight/lambda_max" for i in range(3)]

    def write(step: int) -> None:
        writer.log_metrics({k: step + i / 10 for i, k in enumerate(keys)}, step=step)

    try:
        for step in range(10):
            write(step)
        assert writer.flush(timeout_s=60)  # delivered through the proxy
        hang.hold()
        write(10)  # probed (/health passes), sent, and held: the writer thread waits for an answer
        hang.held()
        for step in range(11, 15):
            write(step)
        hang.refuse()
        for step in range(15, 20):
            write(step)
        caught_up, catch_up_s = hang.forward()
        missing = {k: h for k, h in ((k, _history(hang.direct, hang.run_id, k)) for k in keys) if h != list(range(20))}
        print(
            f"\nhung request: forwarded again {hang.back - hang.reset:.1f} s after the reset; {hang.spooled} spooled "
            f"operations delivered {catch_up_s:.2f} s later (settle -> {caught_up}); urllib3's own retry was due "
            f"{hang.reset + 12 - hang.back:.1f}-{hang.reset + 14 - hang.back:.1f} s after forwarding"
        )
        assert caught_up and not missing, missing
        assert catch_up_s < 5.0  # the watchdog's fresh writer (it probes every 1 s), not the hung request's retry
        assert len(hang.messages) == 2, hang.messages
        assert "unreachable" in hang.messages[0] and "caught up: 10 operations" in hang.messages[1], hang.messages

        late = hang.late_requests()  # the old thread's log-batch, retried into the live server: a duplicate
        print(f"after the catch-up (the hung request, retried by urllib3): {late}")
        assert any("POST /api/2.0/mlflow/runs/log-batch" in line for line in late), hang.proxy.log
        for key in keys:  # MLflow absorbs the identical metrics
            assert _history(hang.direct, hang.run_id, key) == list(range(20)), key
        assert writer.close(timeout_s=10)
    finally:
        hang.proxy.close()


def test_table_hung_across_an_outage_is_in_the_run_once(server: Any, tmp_path: Path) -> None:
    """The same hang, on a table: ``MlflowClient.log_table`` would append to a table that already exists, so the old
    thread's request, retried after the fresh thread has replayed the table, must not add its rows again (the writer
    uploads tables whole, over any earlier copy)."""
    hang = HungAcrossAnOutage(server, tmp_path, "restart-hang-table")
    path = "rmt/monitor/fits/step_00000010.json"
    try:
        hang.writer.log_metrics({"rmt/fc.weight/lambda_max": 1.0}, step=0)
        assert hang.writer.flush(timeout_s=60)
        hang.hold()
        hang.writer.log_table([{"step": 10, "name": "fc.weight"}], path)  # log_table's first request is held
        hang.held()
        hang.refuse()
        caught_up, catch_up_s = hang.forward()
        assert caught_up and catch_up_s < 5.0
        late = hang.late_requests()
        print(f"\ntable: caught up {catch_up_s:.2f} s after forwarding; after that: {late}")
        if not late:
            pytest.skip("the hung request was not retried after the catch-up (timing); nothing to check")
        local = hang.direct.download_artifacts(hang.run_id, path, str(tmp_path / "table"))
        rows = json.loads(Path(local).read_text())["data"]
        assert rows == [[10, "fc.weight"]], rows
    finally:
        hang.proxy.close()
