"""Sending operations into one MLflow run, deduplicated when they are replayed, and replay of a spool left behind.

When replaying, :class:`_Store` leaves out what the run already holds, as :mod:`~rmt_callbacks.sinks.spool` tells
the user: metrics by ``(key, step)`` (``get_metric_history``, asked at most once a key per pass), tables by path
(``log_table`` would append the rows again), parameters by key (MLflow parameters cannot change). Artifacts and tags
are sent again.

:func:`replay` sends a spool that a writer left behind (the process ended while the server was down) into its run,
creating the run first if the spool has none.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from ._probe import _is_outage, probe
from ._spooldir import Op, _Spool

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["ReplayReport", "replay"]

_LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # how the UI knows a JSON artifact is a table


class _Store:
    """Sends operations through one client into one run; on replay, skips metrics and tables the run holds."""

    def __init__(self, client: MlflowClient, run_id: str | None, experiment: str | None, location: str | None):
        self.client, self.run_id = client, run_id
        self._experiment, self._location = experiment, location
        self._steps: dict[str, set[int]] = {}
        self._fresh = False  # a run created here holds only what this store wrote since
        self.skipped = 0

    def create_run(self) -> None:
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
        getattr(self, f"_send_{op['kind']}")(op, replaying)

    def _send_metrics(self, op: Op, replaying: bool) -> None:
        step, stamp = op["step"], op["timestamp"]
        metrics = {k: v for k, v in op["metrics"].items() if not (replaying and step in self._held(k))}
        self.skipped += len(op["metrics"]) - len(metrics)
        if metrics:
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()])
        for key in metrics if replaying else ():
            self._steps[key].add(step)

    def _held(self, key: str) -> set[int]:
        if key not in self._steps:
            held = () if self._fresh else self.client.get_metric_history(self.run_id, key)
            self._steps[key] = {m.step for m in held}
        return self._steps[key]

    def _send_tags(self, op: Op, replaying: bool) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])

    def _send_table(self, op: Op, replaying: bool) -> None:
        path = op["artifact_file"]
        if replaying and _exists(self.client, self.run_id, path):  # log_table would append the rows again
            self.skipped += 1
            tags = json.loads(self.client.get_run(self.run_id).data.tags.get(_LOGGED_ARTIFACTS_TAG, "[]"))
            if {"path": path, "type": "table"} not in tags:
                tags.append({"path": path, "type": "table"})
                self.client.set_tag(self.run_id, _LOGGED_ARTIFACTS_TAG, json.dumps(tags))
            return
        self.client.log_table(self.run_id, data=op["columns"], artifact_file=path)

    def _send_params(self, op: Op, replaying: bool) -> None:
        held = self.client.get_run(self.run_id).data.params if replaying and not self._fresh else {}
        params = [Param(k, v) for k, v in op["params"].items() if k not in held]
        self.skipped += len(op["params"]) - len(params)
        if params:
            self.client.log_batch(self.run_id, params=params)

    def _send_terminate(self, op: Op, replaying: bool) -> None:
        self.client.set_terminated(self.run_id, op["status"])

    def _send_artifact(self, op: Op, replaying: bool) -> None:
        head, _, name = op["artifact_file"].rpartition("/")
        if "file" in op:
            self.client.log_artifact(self.run_id, str(op["file"]), artifact_path=head or None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / name).write_bytes(op["data"])
            self.client.log_artifact(self.run_id, str(Path(tmp) / name), artifact_path=head or None)


@dataclass(frozen=True)
class ReplayReport:
    """What :func:`replay` did.

    Attributes:
        run_id: the run written into (created by the replay if the spool had none).
        replayed: operations taken from the spool and sent (duplicates included).
        skipped: metric values and tables left out because the run already held them.
        rejected: operations the store refused (HTTP 4xx); dropped.
        remaining: operations still in the spool (the store failed again); 0 when done.
    """

    run_id: str | None
    replayed: int
    skipped: int
    rejected: int
    remaining: int


def replay(spool_dir: str | Path, *, tracking_uri: str | None = None) -> ReplayReport:
    """Send a spool left behind into its run, in order and deduplicated; stop at the first outage.

    Args:
        spool_dir: the directory a writer reported.
        tracking_uri: where to send it; default the URI in the spool's manifest.

    Returns:
        A :class:`ReplayReport`.

    Raises:
        FileNotFoundError: ``spool_dir`` has no ``manifest.json``.

    Examples:
        >>> replay("no-such-spool")
        Traceback (most recent call last):
        ...
        FileNotFoundError: replay: no-such-spool holds no spool (no manifest.json)
    """
    from mlflow import MlflowClient

    spool = _Spool(Path(spool_dir))
    manifest = spool.manifest()
    if not manifest:
        raise FileNotFoundError(f"replay: {spool_dir} holds no spool (no manifest.json)")
    uri = tracking_uri or manifest["tracking_uri"]
    store = _Store(MlflowClient(uri), manifest.get("run_id"), manifest.get("experiment_name"), None)
    replayed, rejected, remaining = 0, 0, spool.count()
    try:
        if remaining and probe(uri) and store.run_id is None:
            store.create_run()
            spool.set_run_id(store.run_id)
        for end, op in spool.pending() if store.run_id else ():
            try:
                store.send(op, replaying=True)
            except MlflowException as exc:
                if _is_outage(exc):
                    raise
                rejected += 1
            spool.advance(end)
            replayed, remaining = replayed + 1, remaining - 1
    except (MlflowException, OSError):
        pass  # the store failed again: the rest stays in the spool for the next replay
    if remaining == 0:
        spool.clear()
    return ReplayReport(store.run_id, replayed, store.skipped, rejected, remaining)


def _exists(client: MlflowClient, run_id: str, path: str) -> bool:
    head = path.rpartition("/")[0] or None
    return any(f.path == path for f in client.list_artifacts(run_id, head))
