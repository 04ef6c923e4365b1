"""The spool directory of one run: an append-only, crash-tolerant log of the operations not yet delivered.

Layout (one writer per directory): ``manifest.json`` (tracking URI, run id, experiment name), ``ops.jsonl``
(one JSON operation a line: ``{"kind": "metrics", "step", "timestamp", "metrics"}``, ``{"kind": "tags", "tags"}``,
``{"kind": "params", "params"}``,
``{"kind": "table", "artifact_file", "columns"}``, ``{"kind": "artifact", "artifact_file", "file"}``,
``{"kind": "terminate", "status"}``),
``ops.offset`` (bytes of ``ops.jsonl`` already delivered) and ``files/`` (artifact payloads).

An operation in memory is a plain dict (:data:`Op`); an artifact's payload travels in its ``"data"`` bytes until it
is spooled, when the bytes become a file under ``files/`` named by ``"file"``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .keys import artifact_path

Op = dict[str, Any]


class _Spool:
    """The append-only spool directory of one run (see the module docstring for its layout)."""

    def __init__(self, path: Path, defaults: Mapping[str, Any] | None = None) -> None:
        self.path, self._defaults = path, dict(defaults or {})
        self._ops, self._offset = path / "ops.jsonl", path / "ops.offset"

    def manifest(self) -> dict[str, Any]:
        file = self.path / "manifest.json"
        return json.loads(file.read_text()) if file.exists() else {}

    def check_owner(self, run_id: str | None) -> None:
        held = self.manifest().get("run_id")
        if run_id and held and held != run_id:
            raise ValueError(f"MlflowWriter: spool_dir {self.path} holds the spool of run {held}, not {run_id}")

    def set_run_id(self, run_id: str | None) -> None:
        if (self.path / "manifest.json").exists():
            self._write_manifest({**self.manifest(), "run_id": run_id})

    def _write_manifest(self, manifest: Mapping[str, Any]) -> None:
        tmp = self.path / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, self.path / "manifest.json")

    def ensure(self, manifest: Mapping[str, Any]) -> None:
        if not (self.path / "manifest.json").exists():
            (self.path / "files").mkdir(parents=True, exist_ok=True)
            self._write_manifest(manifest)

    def append(self, ops: Sequence[Op], run_id: str | None) -> int:
        """Write ``ops`` at the end of the spool (payloads as files first); returns how many."""
        if not ops:
            return 0
        self.ensure({"format": 1, **self._defaults, "run_id": run_id})
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

    def pending(self) -> Iterator[tuple[int, Op]]:
        """``(end offset, operation)`` for each operation not yet delivered, oldest first."""
        if not self._ops.exists():
            return
        with open(self._ops, "rb") as f:
            f.seek(self._start())
            for line in iter(f.readline, b""):
                if not line.endswith(b"\n"):
                    return  # being written, or cut by a crash mid-write
                try:
                    op = json.loads(line)
                except ValueError:
                    continue  # cut by a crash mid-write and ended by a later append
                if "file" in op:
                    op["file"] = str(self.path / op["file"])
                yield f.tell(), op

    def count(self) -> int:
        return sum(1 for _ in self.pending())

    def _start(self) -> int:
        return int(self._offset.read_text()) if self._offset.exists() else 0

    def advance(self, offset: int) -> None:
        tmp = self.path / "ops.offset.tmp"
        tmp.write_text(str(offset))
        os.replace(tmp, self._offset)

    def clear(self) -> None:
        """Drop delivered operations and their payloads (the manifest stays)."""
        for file in (self._ops, self._offset):
            file.unlink(missing_ok=True)
        shutil.rmtree(self.path / "files", ignore_errors=True)


def _default_spool_dir(run_id: str | None, experiment_name: str | None) -> Path:
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"  # two in one second: two dirs
    name = run_id or f"new-{experiment_name}-{stamp}"
    return Path.cwd() / "mlflow-spool" / artifact_path(name)
