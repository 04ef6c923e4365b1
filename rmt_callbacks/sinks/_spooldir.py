"""The spool of one writer: an append-only, crash-tolerant log of the operations it could not deliver yet.

Where: one directory per writer, keyed by run and process, ``<root>/<run id>/<host>-<pid>-<time>-<random>``
(``<root>/new-<experiment>/…`` for a run not created yet), so no two runs and no two processes ever share a spool.
The root is the ``spool_dir`` asked for (default ``./mlflow-spool``); when it cannot be written (a read-only working
directory, a full disk), the per-user cache (``$XDG_CACHE_HOME`` or ``~/.cache``, then ``rmt-callbacks/mlflow-spool``)
and then the temporary directory (``<tmp>/rmt-callbacks-<uid>/mlflow-spool``) are tried, in that order
(:func:`spool_locations`). The directory is created only when something is spooled.

Layout: ``manifest.json`` (tracking URI, run id, experiment name, and the host and process that write it),
``ops.jsonl`` (one JSON operation a line: ``{"kind": "metrics", "step", "timestamp", "metrics"}``,
``{"kind": "tags", "tags"}``, ``{"kind": "params", "params"}``, ``{"kind": "table", "artifact_file", "columns"}``,
``{"kind": "artifact", "artifact_file", "file"}``, ``{"kind": "terminate", "status"}``; any of them may carry
``"unless": [key, step]``, see :meth:`~rmt_callbacks.sinks.spool.MlflowWriter.unless_logged`), ``ops.offset`` (bytes
of ``ops.jsonl`` already delivered) and ``files/`` (artifact payloads).

An operation in memory is a plain dict (:data:`Op`); an artifact's payload travels in its ``"data"`` bytes until it
is spooled, when the bytes become a file under ``files/`` named by ``"file"``. Reading checks every line
(:class:`Entry`): a line that is not JSON, not a known operation, cut short by a crash, or whose payload is gone is
reported with its line number and a reason, never sent and never a reason to stop.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .keys import artifact_path

Op = dict[str, Any]
STATUSES = ("FINISHED", "FAILED", "KILLED")
DEFAULT_ROOT = "mlflow-spool"
_FIELDS: dict[str, dict[str, type]] = {
    "metrics": {"step": int, "timestamp": int, "metrics": dict},
    "tags": {"tags": dict},
    "params": {"params": dict},
    "table": {"artifact_file": str, "columns": dict},
    "artifact": {"artifact_file": str, "file": str},
    "terminate": {"status": str},
}
_open: set[Path] = set()  # spools this process writes now (replay refuses them)


class SpoolDamaged(ValueError):
    """A spool's ``manifest.json`` cannot be read."""


@dataclass(frozen=True)
class Entry:
    """One line of ``ops.jsonl``: its number (from 1), the byte offset after it, and the operation or the reason it
    cannot be sent."""

    line: int
    end: int
    op: Op | None
    problem: str | None = None


def spool_locations(spool_dir: str | Path | None, run_id: str | None, experiment_name: str | None) -> list[Path]:
    """Where a new writer's spool may go, first choice first (see the module docstring); each path is new."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    leaf = Path(artifact_path(run_id or f"new-{experiment_name}")) / artifact_path(
        f"{socket.gethostname()}-{os.getpid()}-{stamp}-{uuid.uuid4().hex[:6]}"
    )
    return [root / leaf for root in spool_roots(spool_dir)]


def spool_roots(spool_dir: str | Path | None) -> list[Path]:
    """The asked root, the per-user cache root and the temporary root, without repeats."""
    roots = [Path(spool_dir) if spool_dir else Path.cwd() / DEFAULT_ROOT]
    try:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        roots.append(cache / "rmt-callbacks" / DEFAULT_ROOT)
    except (KeyError, RuntimeError):  # no home directory to find
        pass
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    roots.append(Path(tempfile.gettempdir()) / f"rmt-callbacks-{user}" / DEFAULT_ROOT)
    return list(dict.fromkeys(roots))


def spools_under(path: Path) -> list[Path]:
    """``path`` if it is a spool, else every spool below it (sorted)."""
    if (path / "manifest.json").exists() or (path / "ops.jsonl").exists():
        return [path]
    found = {p.parent for name in ("manifest.json", "ops.jsonl") for p in path.rglob(name)}
    return sorted(found)


class _Spool:
    """The append-only spool of one writer (see the module docstring for its layout and location).

    Args:
        locations: where it may be created, first choice first (a single path for a spool that exists).
        defaults: manifest entries besides the run id.
    """

    def __init__(self, locations: Sequence[Path], defaults: Mapping[str, Any] | None = None) -> None:
        self._locations, self._defaults = list(locations), dict(defaults or {})
        self._at: Path | None = None
        self.tried: list[str] = []  # "path (reason)" for each location that could not be written

    @classmethod
    def existing(cls, path: Path) -> _Spool:
        spool = cls([path])
        spool._at = path
        return spool

    @property
    def path(self) -> Path:
        """Where the spool is, or will first be tried."""
        return self._at or self._locations[0]

    @property
    def _ops(self) -> Path:
        return self.path / "ops.jsonl"

    @property
    def _offset(self) -> Path:
        return self.path / "ops.offset"

    def locate(self, run_id: str | None) -> Path | None:
        """Create the spool at the first location that can be written; ``None`` when none can (see :attr:`tried`)."""
        while self._at is None and len(self.tried) < len(self._locations):
            where = self._locations[len(self.tried)]
            try:
                (where / "files").mkdir(parents=True, exist_ok=True, mode=0o700)
                self._at = where
                self._write_manifest(
                    {"format": 2, **self._defaults, "run_id": run_id, "host": socket.gethostname(), "pid": os.getpid()}
                )
                _open.add(where)
            except OSError as exc:
                self._at = None
                self.tried.append(f"{where} ({type(exc).__name__}: {exc.strerror or exc})")
        return self._at

    def release(self) -> None:
        """This process no longer writes the spool (replay may take it)."""
        if self._at is not None and self._at in _open:
            _open.discard(self._at)
            try:
                self._write_manifest({**self.manifest(), "pid": None})
            except (OSError, SpoolDamaged):
                pass  # the manifest still names a process; once it has ended, replay takes the spool

    def in_use(self) -> str | None:
        """Which live process writes this spool, if one does (this one, or another on this host); else ``None``."""
        if self.path in _open:
            return f"this process ({os.getpid()})"
        try:
            manifest = self.manifest()
        except SpoolDamaged:  # written atomically: a torn manifest is damage, not a live writer
            return None
        pid = manifest.get("pid")
        if manifest.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:  # alive, owned by someone else
            pass
        return f"process {pid} on this host"

    def manifest(self) -> dict[str, Any]:
        """The manifest; ``{}`` when there is none.

        Raises:
            SpoolDamaged: it exists but is not a JSON object.
        """
        file = self.path / "manifest.json"
        if not file.exists():
            return {}
        try:
            manifest = json.loads(file.read_text())
        except (ValueError, OSError) as exc:
            raise SpoolDamaged(f"{file} is unreadable ({exc})") from None
        if not isinstance(manifest, dict):
            raise SpoolDamaged(f"{file} is unreadable (not a JSON object)")
        return manifest

    def set_run_id(self, run_id: str | None) -> None:
        if self._at is not None:
            self._write_manifest({**self.manifest(), "run_id": run_id})

    def _write_manifest(self, manifest: Mapping[str, Any]) -> None:
        tmp = self.path / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, self.path / "manifest.json")

    def append(self, ops: Sequence[Op]) -> int:
        """Write ``ops`` at the end of the located spool (payloads as files first); returns how many.

        Raises:
            OSError: the spool cannot be written.
        """
        if not ops:
            return 0
        with open(self._ops, "a+b") as out:
            if out.seek(0, os.SEEK_END):
                out.seek(-1, os.SEEK_END)
                if out.read(1) != b"\n":
                    out.write(b"\n")  # end a line cut by a crash, so that it stays one unreadable line
            for op in ops:
                out.write(json.dumps(self._stored(op)).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        return len(ops)

    def _stored(self, op: Op) -> Op:
        if "data" not in op:
            return op
        name = op["artifact_file"].rpartition("/")[2]
        folder = self.path / "files" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        (folder / name).write_bytes(op["data"])
        return {k: v for k, v in op.items() if k != "data"} | {"file": str((folder / name).relative_to(self.path))}

    def entries(self, *, complete: bool = False) -> Iterator[Entry]:
        """Each line not yet delivered, oldest first, checked (see :class:`Entry`).

        Args:
            complete: nobody writes the spool any more, so a last line without its end was cut short by a crash
                (reported); otherwise it is being written and reading stops before it.
        """
        if not self._ops.exists():
            return
        start, _ = self.start()
        with open(self._ops, "rb") as f:
            line = f.read(start).count(b"\n")
            for raw in iter(f.readline, b""):
                line += 1
                if not raw.endswith(b"\n"):
                    if complete:
                        yield Entry(line, f.tell(), None, "cut short (no end of line): the writer stopped mid-write")
                    return
                op, problem = self._parse(raw)
                yield Entry(line, f.tell(), op, problem)

    def _parse(self, raw: bytes) -> tuple[Op | None, str | None]:
        try:
            op = json.loads(raw)
        except ValueError as exc:
            return None, f"not JSON ({exc})"
        problem = invalid(op)
        if problem is None and "file" in op:
            file, files = self.path / op["file"], (self.path / "files").resolve()
            if not file.resolve().is_relative_to(files):
                problem = f"payload {op['file']!r} is outside the spool's files/"
            elif not file.is_file():
                problem = f"payload {op['file']} of {op['artifact_file']} is missing"
            op["file"] = str(file)
        return (None, problem) if problem else (op, None)

    def count(self, *, complete: bool = False) -> int:
        return sum(1 for _ in self.entries(complete=complete))

    def start(self) -> tuple[int, str | None]:
        """The offset to read from, and what was wrong with ``ops.offset`` if it had to be ignored (then 0)."""
        if not self._offset.exists():
            return 0, None
        text = self._offset.read_text(errors="replace").strip()
        size = self._ops.stat().st_size if self._ops.exists() else 0
        try:
            offset = int(text)
        except ValueError:
            return 0, f"ops.offset holds {text[:40]!r}, not a byte offset"
        if not 0 <= offset <= size:
            return 0, f"ops.offset {offset} lies outside ops.jsonl ({size} bytes)"
        if 0 < offset < size:  # at the end nothing is left to read, whether or not the last line was cut
            with open(self._ops, "rb") as f:
                f.seek(offset - 1)
                if f.read(1) != b"\n":
                    return 0, f"ops.offset {offset} is not at the start of a line"
        return offset, None

    def advance(self, offset: int) -> None:
        tmp = self.path / "ops.offset.tmp"
        tmp.write_text(str(offset))
        os.replace(tmp, self._offset)

    def clear(self) -> None:
        """Drop delivered operations and their payloads (the manifest stays)."""
        for file in (self._ops, self._offset):
            file.unlink(missing_ok=True)
        shutil.rmtree(self.path / "files", ignore_errors=True)


def invalid(op: Any) -> str | None:
    """Why ``op`` (read back from a spool) is not an operation a writer makes; ``None`` when it is one."""
    if not isinstance(op, dict):
        return "not an operation (a JSON object)"
    kind = op.get("kind")
    fields = _FIELDS.get(kind) if isinstance(kind, str) else None  # (a list or dict kind is unhashable)
    if fields is None:
        return f"unknown operation kind {op.get('kind')!r}"
    for name, kind in fields.items():
        if not isinstance(op.get(name), kind) or isinstance(op.get(name), bool):
            return f"a {op['kind']} operation without a valid {name!r}"
    values = {"metrics": (int, float), "tags": (str,), "params": (str,)}.get(op["kind"])
    mapping = op.get(op["kind"], {})
    if values and not all(isinstance(v, values) and not isinstance(v, bool) for v in mapping.values()):
        return f"a {op['kind']} operation with a value of the wrong type"
    if op["kind"] == "terminate" and op["status"] not in STATUSES:
        return f"a terminate operation with status {op['status']!r}"
    unless = op.get("unless")
    if unless is not None and not (isinstance(unless, list) and len(unless) == 2 and isinstance(unless[1], int)):
        return f"a malformed 'unless' {unless!r}"
    if "artifact_file" in op:
        try:
            safe = artifact_path(op["artifact_file"]) == op["artifact_file"]
        except ValueError:
            safe = False
        if not safe:
            return f"an unsafe artifact path {op['artifact_file']!r}"
    return None
