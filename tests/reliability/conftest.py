"""A real ``mlflow server`` on loopback for the outage tests: started, SIGKILLed and restarted on one port.

Tests get the class through the ``mlflow_server`` fixture (``tests/`` is not a package, so it is not imported).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


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


@pytest.fixture(scope="session")
def mlflow_server() -> type[MlflowServer]:
    """The :class:`MlflowServer` class (construct it with a directory; nothing starts until ``start()``)."""
    return MlflowServer
