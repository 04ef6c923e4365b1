"""``--jobs``: independent calls in worker processes, results in a fixed order, lines relayed, failures that end it.

Real worker processes (``spawn``) throughout; the calls are this module's functions, which a worker imports (so
this module imports MLflow, torch and Lightning only inside the functions that need them: a worker starts in ~1 s).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rmt_callbacks.reproduce import pool
from rmt_callbacks.reproduce.console import console
from rmt_callbacks.reproduce.pool import Call, available_cpus, estimated_seconds, in_worker, run_calls
from rmt_callbacks.reproduce.runs import Settings, end_children

LINES = logging.getLogger("rmt_callbacks.reproduce.runs")  # the logger of the line per finished run


def _finish(name: str, seconds: float) -> tuple[str, int, bool, str | None]:
    time.sleep(seconds)
    LINES.info("%s: done", name)
    return name, os.getpid(), in_worker(), os.environ.get("OMP_NUM_THREADS")


def _fail(message: str, after: str) -> None:
    while not Path(after).exists():  # the other call is in its run
        time.sleep(0.05)
    raise ValueError(message)


def _child_run_then_hang(uri: str, experiment_id: str, parent_id: str, flag: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    client.create_run(experiment_id, run_name="hangs", tags={"mlflow.parentRunId": parent_id})
    Path(flag).write_text(str(os.getpid()))
    time.sleep(600)


def test_one_job_runs_in_this_process_in_the_order_given() -> None:
    out, threads = io.StringIO(), os.environ.get("OMP_NUM_THREADS")
    with console(out):
        results = run_calls([Call(_finish, ("b", 0.0), cost=1), Call(_finish, ("a", 0.0), cost=9)], jobs=1)
    assert results == [("b", os.getpid(), False, threads), ("a", os.getpid(), False, threads)]
    assert out.getvalue() == "b: done\na: done\n"


def test_workers_return_results_in_the_order_of_the_calls_and_their_lines_reach_the_console() -> None:
    # "slow" is the costliest, so it starts first and finishes last; its result still comes first
    calls = [Call(_finish, ("slow", 1.5), cost=10), Call(_finish, ("quick", 0.0), cost=1), Call(divmod, (7, 2))]
    out = io.StringIO()
    with console(out):
        results = run_calls(calls, jobs=2, threads=3)
    (slow, slow_pid, slow_in_worker, threads), (quick, quick_pid, quick_in_worker, _), quotient = results
    assert (slow, quick, quotient) == ("slow", "quick", (3, 1))
    assert slow_in_worker and quick_in_worker and os.getpid() not in {slow_pid, quick_pid}
    assert threads == "3"  # for the BLAS libraries and a torch loaded inside the call
    assert slow_pid != quick_pid  # both workers ran at once
    assert out.getvalue().splitlines() == ["quick: done", "slow: done"]  # as they finished


def test_a_worker_sets_torchs_threads_for_each_call() -> None:
    import torch

    torch.set_num_threads(2)
    assert pool._run(Call(torch.get_num_threads), 1) == 1


def test_a_failing_call_fails_at_once_with_the_workers_traceback_and_kills_the_others(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    flag = tmp_path / "pid"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = Settings(out=tmp_path, tracking_uri=uri, progress=False)
    client = MlflowClient(tracking_uri=uri)  # the experiment and the tables exist before the workers write
    experiment_id = client.create_experiment(settings.experiment)
    parent = client.create_run(experiment_id, run_name="parent").info
    calls = [
        Call(_child_run_then_hang, (uri, experiment_id, parent.run_id, str(flag)), cost=10),
        Call(_fail, ("broken on purpose", str(flag))),
    ]
    start = time.perf_counter()
    with pytest.raises(ValueError, match="broken on purpose") as caught:
        run_calls(calls, jobs=2)
    assert time.perf_counter() - start < 60  # not the 600 s the other call sleeps
    assert "in _fail" in str(caught.value.__cause__)  # the worker's traceback
    hung = int(flag.read_text())
    assert not _alive(hung)
    # its MLflow run was left RUNNING; end_children ends it
    (ended,) = end_children(settings, parent.run_id)
    assert client.get_run(ended).info.status == "KILLED" and client.get_run(parent.run_id).info.status == "RUNNING"
    assert client.get_run(ended).info.run_name == "hangs"
    assert end_children(settings, parent.run_id) == []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to one process")
def test_ctrl_c_stops_the_workers(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import signal
        import sys
        # a terminal's Python: a shell's background job (CI, nohup) starts it with SIGINT ignored, and Python then
        # installs no KeyboardInterrupt handler
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_pool import _record_pid_then_hang
        from rmt_callbacks.reproduce.pool import Call, run_calls

        if __name__ == "__main__":
            run_calls([Call(_record_pid_then_hang, ({str(tmp_path)!r}, k)) for k in range(2)], jobs=2)
        """
    )
    (tmp_path / "main.py").write_text(script)
    with subprocess.Popen([sys.executable, "main.py"], cwd=tmp_path, stderr=subprocess.PIPE, text=True) as proc:
        try:
            pids = _wait_for_pids(tmp_path, 2, timeout=120)
            proc.send_signal(signal.SIGINT)  # a terminal's Ctrl-C also reaches the workers, which ignore it
            _, stderr = proc.communicate(timeout=60)
        finally:  # a failure here must not leave Popen's exit waiting on the 600 s the workers sleep
            if proc.poll() is None:
                for pid in [int(f.read_text()) for f in tmp_path.glob("*.pid") if f.read_text()]:
                    os.kill(pid, signal.SIGKILL)
                proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in stderr
    assert not [pid for pid in pids if _alive(pid)]


def _record_pid_then_hang(folder: str, k: int) -> None:
    Path(folder, f"{k}.pid").write_text(str(os.getpid()))
    time.sleep(600)


def _wait_for_pids(folder: Path, count: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(folder.glob("*.pid"))
        if len(files) == count and all(f.read_text() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.1)
    raise AssertionError(f"the workers did not start in {timeout} s")


def _alive(pid: int, wait: float = 10.0) -> bool:
    """Whether ``pid`` still runs after up to ``wait`` seconds (a killed worker is reaped by its parent, or init)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return False
        if status == "Z":
            return False
        time.sleep(0.1)
    return True


def test_costs_order_the_queue_and_jobs_default_to_the_cpus() -> None:
    assert estimated_seconds("rbm", 128, 20_000) > estimated_seconds("rbm", 128, 4000)
    assert estimated_seconds("hidden", 2000, 3000) > estimated_seconds("hidden", 500, 1000)
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
