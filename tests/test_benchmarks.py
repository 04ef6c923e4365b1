"""The GPU check script runs end to end at toy sizes on the CPU (so it works the day a GPU machine is lent)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_smoke_passes_on_cpu(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "all checks passed" in out.stdout and "FAIL" not in out.stdout
    assert out.stdout.count("PASS") == 4
