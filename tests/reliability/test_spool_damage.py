"""Damaged spools replayed into a real sqlite store, by ``replay()`` and by the command line in a subprocess.

Every spool is written by a real ``MlflowWriter`` whose tracking URI is a loopback port nothing listens on (so every
operation is spooled), into a run created beforehand in the sqlite store; it is then damaged on disk the way a crash,
a full disk or a careless hand would, and replayed into that store with ``--tracking-uri``. The writer's operations
are known line by line (:data:`KINDS`), so every expectation (what arrived, what is reported, at which line, the exit
status) is derived from what the writer wrote. Replay must report each damaged line with its number and reason, send
every readable operation around it in order and exactly once, and never print a traceback.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from rmt_callbacks.sinks.spool import MlflowWriter, replay

KEYS = ("rmt/fc/lambda_max", "rmt/fc/alpha")
STEPS = range(4)
PARAMS = {"lr": "0.1", "hidden": "12"}
KINDS = [
    "params",
    "metrics", "tags",  # step 0
    "metrics", "artifact", "table", "tags",  # step 1
    "metrics", "tags",  # step 2
    "metrics", "artifact", "table", "tags",  # step 3
    "terminate",
]  # fmt: skip
FROM_START = ": replayed from the start (what the run holds is skipped)"
ROUTES = ["replay", "cli"]


def closed_port_uri() -> str:
    """An http URI on loopback that refuses connections (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _npz(step: int) -> str:
    return f"spectra/step_{step:08d}.npz"


def _table(step: int) -> str:
    return f"fits/step_{step:08d}.json"


def _write(writer: MlflowWriter) -> None:
    """Parameters, then per step two metrics, on odd steps arrays and a one-row table, and a tag; then the end."""
    writer.log_params({"lr": 0.1, "hidden": 12})
    for step in STEPS:
        writer.log_metrics({key: step + i / 10 + 0.5 for i, key in enumerate(KEYS)}, step=step)
        if step % 2:
            writer.log_arrays({"fc.weight": np.arange(4.0) * step}, _npz(step))
            writer.log_table([{"step": step, "name": "fc.weight", "ks": np.float64(0.5 + step)}], _table(step))
        writer.set_tags({"rmt.state": f"after step {step}"})
    writer.terminate("FINISHED")


@dataclass
class Spool:
    """A spool as its writer left it: its directory, its run, its lines (each with its end) and their operations."""

    path: Path
    run_id: str
    lines: list[bytes]
    ops: list[dict[str, Any]]
    payloads: dict[str, bytes]  # artifact_file -> the bytes the writer spooled

    @property
    def ops_file(self) -> Path:
        return self.path / "ops.jsonl"

    def line(self, kind: str, step: int | None = None) -> int:
        """The number (from 1) of the first line of ``kind`` at ``step`` (artifacts, tables, tags: by their step)."""
        for number, op in enumerate(self.ops, 1):
            at = op.get("step", _step_of(op.get("artifact_file") or op.get("tags", {}).get("rmt.state")))
            if op["kind"] == kind and (step is None or at == step):
                return number
        raise LookupError(f"no {kind} at step {step}")

    def write_lines(self, lines: list[bytes]) -> None:
        self.ops_file.write_bytes(b"".join(lines))

    def snapshot(self) -> dict[str, bytes]:
        """Every file of the spool, by path within it (to show that a refused replay consumed nothing)."""
        return {str(p.relative_to(self.path)): p.read_bytes() for p in sorted(self.path.rglob("*")) if p.is_file()}


def _step_of(name: str | None) -> int | None:
    found = re.search(r"step[_ ](\d+)", name or "")
    return int(found.group(1)) if found else None


@pytest.fixture
def make_spool(store: tuple[str, Path], tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], Spool]:
    """Writes a new spool of :func:`_write` (a new run each call) and checks that it holds what the writer wrote."""
    uri, artifacts = store
    client = MlflowClient(uri)
    name = re.sub(r"\W", "-", request.node.name)
    experiment = client.create_experiment(name, artifact_location=(artifacts / name).as_uri())

    def make() -> Spool:
        run_id = client.create_run(experiment).info.run_id
        refused, messages = closed_port_uri(), []
        writer = MlflowWriter(
            MlflowClient(refused), run_id, tracking_uri=refused, spool_dir=tmp_path / "s", warn=messages.append
        )
        _write(writer)
        assert not writer.close(timeout_s=10)
        assert messages[0] == f"MLflow tracking server {refused} unreachable; spooling to {writer.spool_dir}"
        lines = writer.spool_dir.joinpath("ops.jsonl").read_bytes().splitlines(keepends=True)
        ops = [json.loads(line) for line in lines]
        assert [op["kind"] for op in ops] == KINDS
        payloads = {op["artifact_file"]: (writer.spool_dir / op["file"]).read_bytes() for op in ops if "file" in op}
        return Spool(writer.spool_dir, run_id, lines, ops, payloads)

    return make


@dataclass(frozen=True)
class Outcome:
    """What a replay said, the same for both routes: the exit status (``replay()``: 0 complete, 1 not, 2 raised),
    ``(replayed, skipped, refused, left)``, the run, the problems, the status it marked, the refusal's message."""

    code: int
    counts: tuple[int, int, int, int] | None = None
    run_id: str | None = None
    problems: tuple[str, ...] = ()
    marked: str | None = None
    error: str | None = None


def _replay(route: str, spool: Path, uri: str, run_id: str | None = None, *, uri_arg: bool = True) -> Outcome:
    """Replay ``spool`` into ``uri`` by ``replay()`` or by ``python -m rmt_callbacks.sinks.spool replay``."""
    if route == "replay":
        try:
            report = replay(spool, tracking_uri=uri if uri_arg else None, run_id=run_id)
        except (ValueError, RuntimeError, FileNotFoundError) as exc:
            return Outcome(2, error=str(exc))
        counts = (report.replayed, report.skipped, report.rejected, report.remaining)
        return Outcome(0 if report.complete else 1, counts, report.run_id, report.problems, report.status)
    command = [sys.executable, "-m", "rmt_callbacks.sinks.spool", "replay", str(spool)]
    command += ["--tracking-uri", uri] if uri_arg else []
    command += ["--run-id", run_id] if run_id else []
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    stdout, stderr = out.stdout.splitlines(), out.stderr.splitlines()
    if out.returncode == 2:
        assert stdout == [] and len(stderr) == 1 and stderr[0].startswith(f"{spool}: not replayed: "), out
        return Outcome(2, error=stderr[0].removeprefix(f"{spool}: not replayed: "))
    assert len(stdout) == 1, out
    summary = re.fullmatch(
        rf"{re.escape(str(spool))}: run (\w+): (\d+) replayed, (\d+) skipped, (\d+) refused, (\d+) left", stdout[0]
    )
    assert summary, stdout[0]
    marked = None
    mark = r"  the run was marked (\w+): the spool was damaged and did not end it"
    marking = re.fullmatch(mark, stderr[-1]) if stderr else None
    if marking:
        marked, stderr = marking.group(1), stderr[:-1]
    assert all(line.startswith("  ") for line in stderr), out.stderr
    replayed, skipped, refused, left = map(int, summary.groups()[1:])
    counts = (replayed, skipped, refused, left)
    return Outcome(out.returncode, counts, summary.group(1), tuple(line[2:] for line in stderr), marked)


def _assert_run_holds(
    client: MlflowClient,
    spool: Spool,
    ops: list[dict[str, Any]],
    status: str,
    tmp_path: Path,
    run_id: str | None = None,
) -> None:
    """The run holds exactly ``ops`` (the writer's operations that should have arrived), each once, and ``status``."""
    run_id = run_id or spool.run_id
    for key in KEYS:  # one value a step: the writer's value and timestamp
        expected = [(op["step"], op["metrics"][key], op["timestamp"]) for op in ops if op["kind"] == "metrics"]
        held = sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))
        assert held == expected, key
    arrays = {op["artifact_file"] for op in ops if op["kind"] == "artifact"}
    assert {f.path for f in client.list_artifacts(run_id, "spectra")} == arrays
    for path in arrays:
        local = Path(client.download_artifacts(run_id, path, str(tmp_path / "down")))
        assert local.read_bytes() == spool.payloads[path]
    tables = {op["artifact_file"]: op["columns"] for op in ops if op["kind"] == "table"}
    assert {f.path for f in client.list_artifacts(run_id, "fits")} == set(tables)
    for path, columns in tables.items():  # one row each: a table sent twice would hold its rows twice
        local = Path(client.download_artifacts(run_id, path, str(tmp_path / "down")))
        assert json.loads(local.read_text()) == {
            "columns": list(columns),
            "data": [list(r) for r in zip(*columns.values(), strict=True)],
        }
    run = client.get_run(run_id)
    last_tags = [op["tags"] for op in ops if op["kind"] == "tags"][-1]
    assert {k: run.data.tags[k] for k in last_tags} == last_tags  # the last tags written won: sent in order
    if tables:
        registered = json.loads(run.data.tags["mlflow.loggedArtifacts"])
        assert sorted(t["path"] for t in registered) == sorted(tables) and len(registered) == len(tables)
    assert run.data.params == PARAMS
    assert run.info.status == status


@pytest.mark.parametrize("route", ROUTES)
def test_last_line_cut_mid_write(
    route: str, make_spool: Callable[[], Spool], store: tuple[str, Path], tmp_path: Path
) -> None:
    """A crash while the writer appended ``terminate``: every earlier operation arrives, the run ends FAILED."""
    spool = make_spool()
    terminate = spool.lines[-1]
    spool.write_lines([*spool.lines[:-1], terminate[: len(terminate) // 2]])  # no end of line
    outcome = _replay(route, spool.path, store[0])
    cut = f"ops.jsonl line {len(KINDS)}: cut short (no end of line): the writer stopped mid-write"
    assert outcome == Outcome(1, (len(KINDS) - 1, 0, 0, 0), spool.run_id, (cut,), "FAILED")
    client = MlflowClient(store[0])
    _assert_run_holds(client, spool, spool.ops[:-1], "FAILED", tmp_path)
    damaged = client.get_run(spool.run_id).data.tags["rmt.spool.damaged"]
    assert damaged == f"replay of {spool.path} skipped what it could not read: {cut}"


def test_a_spool_with_a_cut_last_line_is_not_replayed_twice(
    make_spool: Callable[[], Spool], store: tuple[str, Path]
) -> None:
    """Replayed once, such a spool has nothing left: a second replay must send nothing (not old tags over new)."""
    spool = make_spool()
    spool.write_lines([*spool.lines[:-1], spool.lines[-1][:10]])
    assert replay(spool.path, tracking_uri=store[0]).replayed == len(KINDS) - 1
    client = MlflowClient(store[0])
    client.set_tag(spool.run_id, "rmt.state", "set by hand after the replay")
    again = replay(spool.path, tracking_uri=store[0])
    assert not [p for p in again.problems if "ops.offset" in p], again.problems
    assert again.replayed == 0
    assert client.get_run(spool.run_id).data.tags["rmt.state"] == "set by hand after the replay"


def _json_error(raw: bytes) -> str:
    try:
        json.loads(raw)
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"{raw!r} is JSON")


@pytest.mark.parametrize("route", ROUTES)
def test_unreadable_lines_in_the_middle_are_stepped_over(
    route: str, make_spool: Callable[[], Spool], store: tuple[str, Path], tmp_path: Path
) -> None:
    """Lines that are not JSON, not an object, of an unknown kind, or missing a field: each reported by its number,
    never sent; everything after them arrives in order; a second replay has nothing left to do."""
    spool = make_spool()
    at = spool.line("tags", 1)  # damage after the tags of step 1, before the metrics of step 2
    torn = spool.lines[at][:25] + b"\n"  # the head of the next line, as a crash mid-append then a restart leave it
    damage = [
        torn,
        b"[1, 2]\n",
        b'{"kind": "histogram", "step": 2, "values": [1, 2]}\n',
        b'{"kind": "metrics", "step": 2, "metrics": {"rmt/fc/lambda_max": 99.0}}\n',  # no timestamp
    ]
    spool.write_lines([*spool.lines[:at], *damage, *spool.lines[at:]])
    outcome = _replay(route, spool.path, store[0])
    problems = (
        f"ops.jsonl line {at + 1}: not JSON ({_json_error(torn)})",
        f"ops.jsonl line {at + 2}: not an operation (a JSON object)",
        f"ops.jsonl line {at + 3}: unknown operation kind 'histogram'",
        f"ops.jsonl line {at + 4}: a metrics operation without a valid 'timestamp'",
    )
    assert outcome == Outcome(1, (len(KINDS), 0, 0, 0), spool.run_id, problems)  # the spool ended the run
    client = MlflowClient(store[0])
    _assert_run_holds(client, spool, spool.ops, "FINISHED", tmp_path)  # step 2 holds the writer's value, not 99
    assert client.get_run(spool.run_id).data.tags["rmt.state"] == f"after step {STEPS[-1]}"
    damaged = client.get_run(spool.run_id).data.tags["rmt.spool.damaged"]  # the run says its record has gaps
    assert damaged == f"replay of {spool.path} skipped what it could not read: " + "; ".join(problems)

    again = _replay(route, spool.path, store[0])  # not stuck at the damage: nothing is left, and the spool goes
    assert again == Outcome(0, (0, 0, 0, 0), spool.run_id)
    assert not spool.ops_file.exists() and not (spool.path / "files").exists()
    _assert_run_holds(client, spool, spool.ops, "FINISHED", tmp_path)


@pytest.mark.parametrize("route", ROUTES)
def test_missing_payload_is_reported_and_the_rest_arrives(
    route: str, make_spool: Callable[[], Spool], store: tuple[str, Path], tmp_path: Path
) -> None:
    spool = make_spool()
    line = spool.line("artifact", 1)
    gone = spool.ops[line - 1]["file"]
    (spool.path / gone).unlink()
    outcome = _replay(route, spool.path, store[0])
    problem = f"ops.jsonl line {line}: payload {gone} of {_npz(1)} is missing"
    assert outcome == Outcome(1, (len(KINDS) - 1, 0, 0, 0), spool.run_id, (problem,))
    arrived = [op for number, op in enumerate(spool.ops, 1) if number != line]
    _assert_run_holds(MlflowClient(store[0]), spool, arrived, "FINISHED", tmp_path)


@pytest.mark.parametrize("route", ROUTES)
def test_payload_outside_the_spool_is_refused(
    route: str, make_spool: Callable[[], Spool], store: tuple[str, Path], tmp_path: Path
) -> None:
    """A line naming a payload outside the spool's ``files/`` (a relative escape, a symbolic link out) is refused
    even though the file it names exists and holds valid arrays: replay uploads nothing from outside the spool."""
    spool = make_spool()
    first, second = spool.line("artifact", 1), spool.line("artifact", 3)
    outside = spool.path / ".." / ".." / "x"
    outside.write_bytes(spool.payloads[_npz(1)])
    op = dict(spool.ops[first - 1], file="../../x")
    lines = list(spool.lines)
    lines[first - 1] = json.dumps(op).encode() + b"\n"
    spool.write_lines(lines)
    linked = spool.path / spool.ops[second - 1]["file"]
    (tmp_path / "elsewhere.npz").write_bytes(linked.read_bytes())
    linked.unlink()
    linked.symlink_to(tmp_path / "elsewhere.npz")
    outcome = _replay(route, spool.path, store[0])
    problems = (
        f"ops.jsonl line {first}: payload '../../x' is outside the spool's files/",
        f"ops.jsonl line {second}: payload '{spool.ops[second - 1]['file']}' is outside the spool's files/",
    )
    assert outcome == Outcome(1, (len(KINDS) - 2, 0, 0, 0), spool.run_id, problems)
    arrived = [op for op in spool.ops if op["kind"] != "artifact"]
    _assert_run_holds(MlflowClient(store[0]), spool, arrived, "FINISHED", tmp_path)  # spectra/ stays empty
    assert outside.read_bytes() == spool.payloads[_npz(1)] and (tmp_path / "elsewhere.npz").exists()


DELIVERED = 6  # lines a replay stopped by an outage had sent: parameters, steps 0 and 1 (arrays and table included)


@pytest.mark.parametrize("damage", ["not a number", "beyond the file", "inside a line"])
@pytest.mark.parametrize("route", ROUTES)
def test_damaged_offset_replays_from_the_start_without_doubling(
    route: str, damage: str, make_spool: Callable[[], Spool], store: tuple[str, Path], tmp_path: Path
) -> None:
    """The run already holds the first lines (an earlier replay sent them, then the server went away); ops.offset,
    which says so, is damaged: replay starts over, and what the run holds is not sent twice."""
    spool = make_spool()
    assert [op["kind"] for op in spool.ops[:DELIVERED]] == KINDS[:DELIVERED] and KINDS[DELIVERED - 1] == "table"
    earlier = Path(shutil.copytree(spool.path, tmp_path / "earlier"))
    (earlier / "ops.jsonl").write_bytes(b"".join(spool.lines[:DELIVERED]))
    first = replay(earlier, tracking_uri=store[0])
    assert (first.replayed, first.skipped, first.remaining, first.problems) == (DELIVERED, 0, 0, ())
    sent = sum(map(len, spool.lines[:DELIVERED]))  # the offset the stopped replay had left
    size = spool.ops_file.stat().st_size
    text, problem = {
        "not a number": ("402 bytes", "ops.offset holds '402 bytes', not a byte offset"),
        "beyond the file": (str(size + 100), f"ops.offset {size + 100} lies outside ops.jsonl ({size} bytes)"),
        "inside a line": (str(sent + 5), f"ops.offset {sent + 5} is not at the start of a line"),
    }[damage]
    (spool.path / "ops.offset").write_text(text)
    outcome = _replay(route, spool.path, store[0])
    held = len(KEYS) * 2 + len(PARAMS)  # metric values of steps 0 and 1, both parameters (tables are sent whole)
    assert outcome == Outcome(1, (len(KINDS), held, 0, 0), spool.run_id, (problem + FROM_START,))
    _assert_run_holds(MlflowClient(store[0]), spool, spool.ops, "FINISHED", tmp_path)


@pytest.mark.parametrize("route", ROUTES)
def test_truncated_manifest_needs_uri_and_run_id(
    route: str, make_spool: Callable[[], Spool], store: tuple[str, Path]
) -> None:
    spool = make_spool()
    manifest = spool.path / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    before = spool.snapshot()
    unreadable = f"{manifest} is unreadable ({_json_error(text[: len(text) // 2].encode())})"
    refusal = f"replay: {unreadable}; pass --tracking-uri and --run-id to say where its operations go"
    assert _replay(route, spool.path, store[0], uri_arg=False) == Outcome(2, error=refusal)
    assert _replay(route, spool.path, store[0]) == Outcome(2, error=refusal)  # the run is still unknown
    assert spool.snapshot() == before  # nothing consumed
    assert MlflowClient(store[0]).get_metric_history(spool.run_id, KEYS[0]) == []


@pytest.mark.parametrize("route", ROUTES)
def test_truncated_manifest_with_uri_and_run_id_arrives(
    route: str, make_spool: Callable[[], Spool], store: tuple[str, Path], tmp_path: Path
) -> None:
    spool = make_spool()
    manifest = spool.path / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    unreadable = f"{manifest} is unreadable ({_json_error(text[: len(text) // 2].encode())})"
    outcome = _replay(route, spool.path, store[0], spool.run_id)
    assert outcome == Outcome(1, (len(KINDS), 0, 0, 0), spool.run_id, (unreadable,))
    _assert_run_holds(MlflowClient(store[0]), spool, spool.ops, "FINISHED", tmp_path)


@pytest.mark.parametrize("route", ROUTES)
def test_spool_of_a_live_writer_is_refused(
    route: str, make_spool: Callable[[], Spool], store: tuple[str, Path], tmp_path: Path
) -> None:
    """A manifest naming a live process on this host: that process may still append, so replay refuses; once it
    has ended, the same spool replays completely."""
    spool = make_spool()
    manifest = json.loads((spool.path / "manifest.json").read_text())
    assert manifest["host"] == socket.gethostname() and manifest["pid"] is None  # released by close()
    writer = subprocess.Popen(["sleep", "120"])
    try:
        (spool.path / "manifest.json").write_text(json.dumps(manifest | {"pid": writer.pid}))
        before = spool.snapshot()
        outcome = _replay(route, spool.path, store[0])
        refusal = (
            f"replay: {spool.path} is still being written by process {writer.pid} on this host; replay it once that "
            "has ended"
        )
        assert outcome == Outcome(2, error=refusal)
        assert spool.snapshot() == before
    finally:
        writer.kill()
        writer.wait()
    assert _replay(route, spool.path, store[0]) == Outcome(0, (len(KINDS), 0, 0, 0), spool.run_id)
    _assert_run_holds(MlflowClient(store[0]), spool, spool.ops, "FINISHED", tmp_path)


@pytest.mark.parametrize("route", ROUTES)
def test_run_id_sends_the_spool_into_another_run(
    route: str, make_spool: Callable[[], Spool], store: tuple[str, Path], tmp_path: Path
) -> None:
    spool = make_spool()
    client = MlflowClient(store[0])
    other = client.create_run(client.get_run(spool.run_id).info.experiment_id).info.run_id
    outcome = _replay(route, spool.path, store[0], other)
    assert outcome == Outcome(0, (len(KINDS), 0, 0, 0), other)
    _assert_run_holds(client, spool, spool.ops, "FINISHED", tmp_path, run_id=other)
    own = client.get_run(spool.run_id)  # the spool's own run got nothing
    assert own.info.status == "RUNNING" and own.data.metrics == {} and own.data.params == {}
    assert client.list_artifacts(spool.run_id) == []


@pytest.mark.parametrize("route", ROUTES)
def test_unknown_run_id_is_refused_before_anything_is_consumed(
    route: str, make_spool: Callable[[], Spool], store: tuple[str, Path]
) -> None:
    spool = make_spool()
    before = spool.snapshot()
    unknown = "0" * 32
    outcome = _replay(route, spool.path, store[0], unknown)
    assert outcome.code == 2 and outcome.error is not None
    assert outcome.error.startswith(f"replay: run {unknown} of {spool.path} does not exist at {store[0]} (")
    assert outcome.error.endswith("); pass --tracking-uri for its server, or --run-id for the run to send it into")
    assert spool.snapshot() == before  # every operation still there, no offset written
    assert MlflowClient(store[0]).get_run(spool.run_id).data.metrics == {}


@pytest.mark.parametrize("kind", [["metrics"], {"kind": "metrics"}, None, 3])
def test_a_line_of_an_unhashable_kind_is_reported_not_raised(kind: object) -> None:
    """A damaged line whose kind is a list or an object is an unknown kind like any other (it raised TypeError, which
    stopped the replay at the damage)."""
    from rmt_callbacks.sinks._spooldir import invalid

    assert invalid({"kind": kind, "step": 1}) == f"unknown operation kind {kind!r}"
