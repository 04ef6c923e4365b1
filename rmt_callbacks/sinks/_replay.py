"""Sending operations into one MLflow run, deduplicated when they are replayed, and replay of a spool left behind.

When replaying, :class:`_Store` leaves out what the run already holds, as :mod:`~rmt_callbacks.sinks.spool` tells
the user: metrics by ``(key, step)`` (``get_metric_history``, asked at most once a key per pass), parameters by key
(MLflow parameters cannot change). Artifacts, tables (uploaded whole, over any earlier copy) and tags are sent
again: sending them twice leaves what sending them once does. An operation queued under
:meth:`~rmt_callbacks.sinks.spool.MlflowWriter.unless_logged` is left out whenever the run holds its metric at its
step, replaying or not.

:func:`replay` sends a spool that a writer left behind (the process ended while the server was down) into its own
run (another only when asked by ``run_id``), creating the run first if the spool has none. It never stops at a
damaged line: each unreadable one is reported with its line number and reason, and the rest is sent in order.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from ._probe import _is_outage, probe
from ._spooldir import Entry, Op, SpoolDamaged, _Spool, spools_under
from .mlflow import MLFLOW_MAX_TAG_VALUE_LENGTH

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["ReplayReport", "main", "replay"]

_LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # how the UI knows a JSON artifact is a table


class _Store:
    """Sends operations through one client into one run; on replay, skips metrics and tables the run holds.

    An operation carrying ``"unless": [key, step]`` is left out when the run already holds metric ``key`` at
    ``step``; ``notice`` is then called with a message for the user.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str | None,
        experiment: str | None,
        location: str | None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.client, self.run_id = client, run_id
        self._experiment, self._location, self.notice = experiment, location, notice
        self._steps: dict[str, set[int]] = {}
        self._fresh = False  # a run created here holds only what this store wrote since
        self.skipped = 0

    def fork(self) -> _Store:
        """A store into the same run with nothing cached (for a new writer thread)."""
        return _Store(self.client, self.run_id, self._experiment, self._location, self.notice)

    @property
    def run(self) -> str:
        """The run id, for a request; the writer creates the run before it sends (an operation without one is
        refused, never spooled)."""
        if self.run_id is None:
            raise MlflowException("no MLflow run to send to: create_run() first", INVALID_PARAMETER_VALUE)
        return self.run_id

    def create_run(self) -> None:
        if self._experiment is None:
            raise MlflowException("no experiment to create the MLflow run in", INVALID_PARAMETER_VALUE)
        found = self.client.get_experiment_by_name(self._experiment)
        if found is not None and found.lifecycle_stage != "deleted":
            experiment_id = found.experiment_id
        else:
            experiment_id = self.client.create_experiment(self._experiment, artifact_location=self._location)
        self.run_id = self.client.create_run(experiment_id).info.run_id
        self._fresh = True

    def forget_history(self) -> None:
        self._steps.clear()
        self._fresh = False

    def send(self, op: Op, *, replaying: bool) -> None:
        unless = op.get("unless")
        if unless is not None and unless[1] in self._held(unless[0]):
            self.skipped += 1
            if self.notice is not None:
                self.notice(
                    f"MLflow run {self.run_id} already holds step {unless[1]} of {unless[0]}; what a resumed run logs "
                    "again for a step it holds is left out (the first record stays)"
                )
            return
        getattr(self, f"_send_{op['kind']}")(op, replaying)

    def _send_metrics(self, op: Op, replaying: bool) -> None:
        step, stamp = op["step"], op["timestamp"]
        metrics = {k: v for k, v in op["metrics"].items() if not (replaying and step in self._held(k))}
        self.skipped += len(op["metrics"]) - len(metrics)
        if metrics:
            self.client.log_batch(self.run, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()])
        for key in metrics:
            if key in self._steps:  # what the run holds now, for the next check
                self._steps[key].add(step)

    def _held(self, key: str) -> set[int]:
        if key not in self._steps:
            held = () if self._fresh else self.client.get_metric_history(self.run, key)
            self._steps[key] = {m.step for m in held}
        return self._steps[key]

    def _send_tags(self, op: Op, replaying: bool) -> None:
        self.client.log_batch(self.run, tags=[RunTag(k, v) for k, v in op["tags"].items()])

    def _send_table(self, op: Op, replaying: bool) -> None:
        """The table as MLflow's ``log_table`` writes it (``orient="split"`` JSON, listed in the run's
        ``mlflow.loggedArtifacts`` tag), but uploaded over any earlier copy: ``log_table`` appends its rows to a
        table that exists, so a send repeated after an outage (a replay, or a request MLflow retried late) would
        double them."""
        import pandas as pd  # MLflow's own dependency; only when a table is sent

        path = op["artifact_file"]
        head, _, name = path.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            pd.DataFrame(op["columns"]).to_json(Path(tmp) / name, orient="split", index=False, date_format="iso")
            self.client.log_artifact(self.run, str(Path(tmp) / name), artifact_path=head or None)
        listed = json.loads(self.client.get_run(self.run).data.tags.get(_LOGGED_ARTIFACTS_TAG, "[]"))
        if {"path": path, "type": "table"} not in listed:
            listed.append({"path": path, "type": "table"})
            self.client.set_tag(self.run, _LOGGED_ARTIFACTS_TAG, json.dumps(listed))

    def _send_params(self, op: Op, replaying: bool) -> None:
        held = self.client.get_run(self.run).data.params if replaying and not self._fresh else {}
        params = [Param(k, v) for k, v in op["params"].items() if k not in held]
        self.skipped += len(op["params"]) - len(params)
        if params:
            self.client.log_batch(self.run, params=params)

    def _send_terminate(self, op: Op, replaying: bool) -> None:
        self.client.set_terminated(self.run, op["status"])

    def _send_artifact(self, op: Op, replaying: bool) -> None:
        head, _, name = op["artifact_file"].rpartition("/")
        if "file" in op:
            self.client.log_artifact(self.run, str(op["file"]), artifact_path=head or None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / name).write_bytes(op["data"])
            self.client.log_artifact(self.run, str(Path(tmp) / name), artifact_path=head or None)


@dataclass(frozen=True)
class ReplayReport:
    """What :func:`replay` did.

    Attributes:
        run_id: the run written into (created by the replay if the spool had none).
        replayed: operations taken from the spool and sent (duplicates included).
        skipped: metric values, parameters and operations left out because the run already held them.
        rejected: operations the store refused (HTTP 4xx); dropped, each named in ``problems``.
        remaining: operations still in the spool (the store failed again); 0 when done.
        problems: what could not be sent, one line each (``ops.jsonl line 7: not JSON (…)``); the spool is damaged or
            the store refused something. Every readable operation around them was sent.
        status: the status the replay gave the run because the spool was damaged and held no readable end of
            the run (``"FAILED"``: its record is incomplete), else ``None``.
    """

    run_id: str | None
    replayed: int
    skipped: int
    rejected: int
    remaining: int
    problems: tuple[str, ...] = ()
    status: str | None = None

    @property
    def complete(self) -> bool:
        """Everything in the spool reached the run."""
        return not (self.remaining or self.problems or self.rejected)


def replay(spool_dir: str | Path, *, tracking_uri: str | None = None, run_id: str | None = None) -> ReplayReport:
    """Send a spool left behind into its run, in order and deduplicated; stop at the first outage.

    Unreadable lines (not JSON, not an operation, cut short by a crash, a payload file gone) and a damaged
    ``ops.offset`` are reported in :attr:`ReplayReport.problems` and stepped over, and the run gets the report in the
    tag ``rmt.spool.damaged``; a damaged spool whose readable operations do not end the run leaves it ``FAILED`` (if
    it was still running).

    Args:
        spool_dir: the directory a writer reported.
        tracking_uri: where to send it; default the URI in the spool's manifest.
        run_id: the run to send it into; default the spool's own (a spool goes into another run only when asked).

    Returns:
        A :class:`ReplayReport`.

    Raises:
        FileNotFoundError: ``spool_dir`` holds no spool.
        ValueError: the manifest is unreadable and ``tracking_uri`` or ``run_id`` is missing, or the run does not exist
            on that server.
        RuntimeError: a live process still writes the spool.

    Examples:
        >>> replay("no-such-spool")
        Traceback (most recent call last):
        ...
        FileNotFoundError: replay: no-such-spool holds no spool (no manifest.json, no ops.jsonl)
    """
    from mlflow import MlflowClient

    spool = _Spool.existing(Path(spool_dir))
    problems: list[str] = []
    try:
        manifest = spool.manifest()
    except SpoolDamaged as exc:
        if not (tracking_uri and run_id):
            raise ValueError(
                f"replay: {exc}; pass --tracking-uri and --run-id to say where its operations go"
            ) from None
        manifest = {"damaged": str(exc)}
        problems.append(str(exc))
    if not manifest and not (spool.path / "ops.jsonl").exists():
        raise FileNotFoundError(f"replay: {spool_dir} holds no spool (no manifest.json, no ops.jsonl)")
    if writer := spool.in_use():
        raise RuntimeError(f"replay: {spool_dir} is still being written by {writer}; replay it once that has ended")
    uri = tracking_uri or manifest.get("tracking_uri")
    if not uri:
        raise ValueError(f"replay: {spool_dir}'s manifest names no tracking URI; pass --tracking-uri")
    store = _Store(MlflowClient(uri), run_id or manifest.get("run_id"), manifest.get("experiment_name"), None)
    _check_run(store, spool_dir, uri)
    offset_problem = spool.start()[1]
    if offset_problem:
        problems.append(f"{offset_problem}: replayed from the start (what the run holds is skipped)")
    counts, ended = [0, 0, spool.count(complete=True)], False  # replayed, rejected, remaining
    if not probe(uri):  # a server that does not answer: leave the spool as it is, at once
        return ReplayReport(store.run_id, 0, 0, 0, counts[2], tuple(problems))
    try:
        if counts[2] and store.run_id is None:
            store.create_run()
            spool.set_run_id(store.run_id)
        for entry in spool.entries(complete=True) if store.run_id else ():
            ended = _replay_entry(store, entry, problems, counts) or ended
            spool.advance(entry.end)
    except (MlflowException, OSError):
        pass  # the store failed again: the rest stays in the spool for the next replay
    replayed, rejected, remaining = counts
    status = _mark_damaged(store, spool_dir, problems, ended=ended) if problems and not remaining else None
    if remaining == 0 and not problems:
        spool.clear()
    return ReplayReport(store.run_id, replayed, store.skipped, rejected, remaining, tuple(problems), status)


def _replay_entry(store: _Store, entry: Entry, problems: list[str], counts: list[int]) -> bool:
    """Send one line (or report why not); ``True`` if it ended the run. Raises on an outage."""
    counts[2] -= 1
    if entry.op is None:
        problems.append(f"ops.jsonl line {entry.line}: {entry.problem}")
        return False
    try:
        store.send(entry.op, replaying=True)
    except MlflowException as exc:
        if _is_outage(exc):
            counts[2] += 1
            raise
        counts[1] += 1
        problems.append(f"ops.jsonl line {entry.line}: refused by the store ({exc.message[:200]})")
    except OSError:
        counts[2] += 1
        raise
    counts[0] += 1
    return entry.op["kind"] == "terminate"


def _check_run(store: _Store, spool_dir: str | Path, uri: str) -> None:
    """A run id that the server does not know would have every operation refused (and dropped): stop first."""
    if store.run_id is None or not probe(uri):
        return
    try:
        store.client.get_run(store.run_id)
    except MlflowException as exc:
        if not _is_outage(exc):
            raise ValueError(
                f"replay: run {store.run_id} of {spool_dir} does not exist at {uri} ({exc.message[:200]}); "
                "pass --tracking-uri for its server, or --run-id for the run to send it into"
            ) from None


def _mark_damaged(store: _Store, spool_dir: str | Path, problems: list[str], *, ended: bool) -> str | None:
    """Tag the run with the damage report and, if the spool did not end it and it is still running, end it FAILED;
    the status set, or None."""
    if store.run_id is None:
        return None
    report = f"replay of {spool_dir} skipped what it could not read: " + "; ".join(problems)
    try:
        store.client.set_tag(store.run_id, "rmt.spool.damaged", report[:MLFLOW_MAX_TAG_VALUE_LENGTH])
        if not ended and store.client.get_run(store.run_id).info.status == "RUNNING":
            store.client.set_terminated(store.run_id, "FAILED")
            return "FAILED"
    except (MlflowException, OSError):
        pass
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rmt_callbacks.sinks.spool replay DIR [DIR ...] [--tracking-uri URI] [--run-id ID]``.

    A DIR that is not a spool stands for every spool below it. Prints one line per spool and one per problem; exit
    status 0 when everything was sent, 1 when something was left, skipped or refused, 2 when a spool could not be
    replayed at all (the reason is printed, never a traceback).
    """
    parser = argparse.ArgumentParser(prog="python -m rmt_callbacks.sinks.spool")
    commands = parser.add_subparsers(dest="command", required=True)
    replay_cmd = commands.add_parser("replay", help="send spooled MLflow operations to their tracking server")
    replay_cmd.add_argument("spool_dir", nargs="+", help="a spool, or a directory of spools")
    replay_cmd.add_argument("--tracking-uri", default=None, help="default: the one in each spool's manifest")
    replay_cmd.add_argument("--run-id", default=None, help="send into this run instead of the spool's own")
    args = parser.parse_args(argv)
    status = 0
    for spool in [p for d in args.spool_dir for p in spools_under(Path(d))] or [Path(d) for d in args.spool_dir]:
        try:
            report = replay(spool, tracking_uri=args.tracking_uri, run_id=args.run_id)
        except Exception as exc:  # said plainly, and the next spool is still replayed
            print(f"{spool}: not replayed: {exc}", file=sys.stderr)
            status = 2
            continue
        print(
            f"{spool}: run {report.run_id}: {report.replayed} replayed, {report.skipped} skipped, "
            f"{report.rejected} refused, {report.remaining} left"
        )
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
        if report.status:
            print(f"  the run was marked {report.status}: the spool was damaged and did not end it", file=sys.stderr)
        status = max(status, 0 if report.complete else 1)
    return status
