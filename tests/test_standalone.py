"""The repository stands alone: no tracked file points at material outside it.

The science is cited by arXiv id and by the project's own ``docs/science.md``; a reference to the team's private
notes (the specification, style and ecosystem files) or to the sibling directory that holds them would leave
readers of a clone with a dangling pointer. The patterns are spelled in pieces below, so this file passes too.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("paper" + ".md", "style" + ".md", "ecosystem" + ".md", "../" + "shared")
SELF = Path(__file__).resolve()


def _tracked_files() -> list[Path]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout")
    done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"git ls-files failed: {done.stderr.decode(errors='replace').strip()}")
    return [ROOT / name for name in done.stdout.decode().split("\0") if name]


def _offending_lines(path: Path, root: Path = ROOT) -> list[str]:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):  # deleted in the working tree, or a submodule
        return []
    if b"\0" in data[:8192]:  # binary
        return []
    text = data.decode("utf-8", errors="replace")
    return [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if any(pattern in line for pattern in FORBIDDEN)
    ]


def test_no_tracked_file_refers_outside_the_repository() -> None:
    files = _tracked_files()
    assert files, "git ls-files listed nothing"
    offending = [hit for path in files if path.resolve() != SELF for hit in _offending_lines(path)]
    assert not offending, (
        f"{len(offending)} line(s) refer to {' or '.join(FORBIDDEN)}; cite arXiv ids and docs/science.md instead:\n"
        + "\n".join(offending)
    )


def test_the_check_catches_a_reference(tmp_path: Path) -> None:
    """The scanner itself finds both patterns and names file and line (so the main test can fail)."""
    probe = tmp_path / "probe.py"
    probe.write_text(f"ok\nsee {FORBIDDEN[0]} E4\nx = '{FORBIDDEN[1]}/notes'\n", encoding="utf-8")
    hits = _offending_lines(probe, root=tmp_path)
    assert [hit.split(": ", 1)[0] for hit in hits] == ["probe.py:2", "probe.py:3"]
