"""Screenshots of the MLflow UI for docs/mlflow.md. Run by hand; not part of the test suite.

    apt-get install -y chromium                 # Debian's headless browser
    .venv/bin/python docs/screenshots.py        # about 3 minutes on 2 CPU cores; writes docs/images/mlflow_*.png
    .venv/bin/python docs/screenshots.py --only compare_figure    # one of them (the training is the same)

It trains the MLP of ``examples/mlp.py`` twice (learning rates 0.05 and 0.5, 600 steps, ``SpectrumMonitor`` every
50 steps, ``DysonMonitor`` every 10 steps) into a fresh sqlite store in a temporary directory, starts ``mlflow ui``
on a free loopback port, waits for ``/health`` and drives headless chromium to photograph

* ``mlflow_run_metrics.png``: a run's *Model metrics* tab, charts filtered to three statistics: one section per matrix;
* ``mlflow_step_figure.png``: the *Artifacts* tab on a per-step figure of the 128 x 128 hidden layer;
* ``mlflow_evolution.png``: the *Artifacts* tab on that layer's ``evolution.png``;
* ``mlflow_compare_charts.png``: the experiment's *Runs* page in chart view, both runs on every chart;
* ``mlflow_compare_runs.png``: the *Compare* page of the two runs, parallel coordinates of the learning rate, three
  statistics of the hidden layer and the training loss;
* ``mlflow_compare_figure.png``: last, after ``rmt_callbacks.compare`` has compared the two runs (a third run in the
  experiment, tagged ``rmt.compare_of``, made only now so that the other pictures show the two runs alone), the
  comparison run's *Artifacts* tab on ``compare/figures/net.2.weight.png``.

Then it stops the server and removes the store (``--keep DIR`` keeps it there instead).

``chromium --headless --screenshot=...`` alone does not do for MLflow 3.x: the charts are still spinners when the
virtual time budget ends, the assistant panel opens on a first visit, and the chart search box has to be typed into.
So the browser is driven through the DevTools protocol (over ``aiohttp``, which MLflow itself requires): the script
waits until the charts or images are drawn, then takes the picture.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "rmt-screenshots"
LEARNING_RATES = (0.05, 0.5)
MATRIX = "net.2.weight"  # the 128 x 128 hidden layer of the example MLP
CHART_FILTER = "lambda_max|mp_num_spikes|stable_rank"  # the chart search box takes a regular expression
COMPARED = [*(f"rmt/{MATRIX}/{s}" for s in ("lambda_max", "mp_sigma2", "stable_rank")), "train/loss"]
WIDTH = 1600
# Model training instead of the GenAI view; the assistant panel counted as already shown (it opens on a first visit)
PREFERENCES = """
localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
"""
HIDE_CHART_TOOLBARS = """
(() => { const style = document.createElement('style');
  style.textContent = '.modebar-container { display: none !important; }';
  document.head.appendChild(style); })()
"""
TYPE_IN_CHART_SEARCH = """
(() => { const box = document.querySelector('input[placeholder="Search metric charts"]');
  if (!box) return false;
  Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(box, %s);
  box.dispatchEvent(new Event('input', {bubbles: true}));
  return true; })()
"""
# the Compare page's "Metrics" select (the second one): remove the default picks, pick ours (from a virtual list)
PICK_METRICS = """
(async (titles) => {
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  const select = () => document.querySelectorAll('.du-bois-light-select-selector')[1];
  for (let i = 0; i < 50; i++) {
    const remove = select().querySelector('.du-bois-light-select-selection-item-remove');
    if (!remove) break;
    remove.click();
    await sleep(200);
  }
  select().dispatchEvent(new MouseEvent('mousedown', {bubbles: true}));
  await sleep(500);
  for (const title of titles) {
    const list = document.querySelector('.rc-virtual-list-holder');
    list.scrollTop = 0;
    await sleep(200);
    let option = null;
    for (let i = 0; i < 80 && !option; i++) {
      option = [...document.querySelectorAll('.du-bois-light-select-item-option')]
        .find((o) => o.getAttribute('title') === title);
      if (!option) { list.scrollTop += list.clientHeight / 2; await sleep(100); }
    }
    if (option) { option.click(); await sleep(300); }
  }
  document.body.dispatchEvent(new MouseEvent('mousedown', {bubbles: true}));
  return [...select().querySelectorAll('.du-bois-light-select-selection-item-content')].map((e) => e.textContent);
})(%s)
"""
SEARCH_BOX = "document.querySelector('input[placeholder=\"Search metric charts\"]') !== null"
PLOTS_DRAWN = "document.querySelectorAll('.js-plotly-plot').length"
SPINNING = (
    "[...document.querySelectorAll('.du-bois-light-spin-spinning')].filter((e) => e.offsetParent !== null).length"
)
CHARTS_READY = f"{PLOTS_DRAWN} >= %d && {SPINNING} === 0"  # the charts the filter leaves (charts_left) are drawn
IMAGE_SHOWN = "[...document.images].some((i) => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0)"
SHOTS = ("run_metrics", "step_figure", "evolution", "compare_charts", "compare_runs", "compare_figure")
COMPARE_FIGURE_HEIGHT = 900  # the comparison's figure is 11 x 7 inches, four panels: taller than a step's figure


def store_uri(store: Path) -> str:
    return f"sqlite:///{store / 'mlflow.db'}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(store: Path, *, steps: int) -> tuple[str, list[str]]:
    """One run per learning rate of the example MLP into ``store``; return the experiment id and the run ids."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import MLFlowLogger

    from rmt_callbacks import DysonMonitor, SpectrumMonitor

    spec = importlib.util.spec_from_file_location("rmt_example_mlp", ROOT / "examples" / "mlp.py")
    mlp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mlp)
    experiment_id, run_ids = "", []
    for lr in LEARNING_RATES:
        pl.seed_everything(0, verbose=False)
        logger = MLFlowLogger(
            experiment_name=EXPERIMENT,
            run_name=f"mlp lr={lr}",
            tracking_uri=store_uri(store),
            artifact_location=str(store / "artifacts"),
        )
        # background=False: every due step is analysed, so both runs have points at the same steps
        monitor = SpectrumMonitor(every_n_train_steps=50, background=False)
        # for the comparison's Dyson panels: widths over windows of 20 snapshots, at T = lr/64
        dyson = DysonMonitor(every_n_train_steps=10, window=20, log_every_n_steps=50, overhead_budget=None)
        trainer = pl.Trainer(
            max_steps=steps,
            logger=logger,
            callbacks=[monitor, dyson],
            default_root_dir=store,
            accelerator="cpu",
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=10,
        )
        trainer.fit(mlp.MLP(lr=lr), datamodule=mlp.SyntheticData())
        experiment_id = logger.experiment_id
        run_ids.append(logger.run_id)
    return experiment_id, run_ids


def compare(store: Path, runs: Sequence[str]) -> str:
    """``rmt_callbacks.compare`` on ``runs``: the comparison run's id (in the runs' experiment)."""
    from rmt_callbacks import compare

    return compare(list(runs), tracking_uri=store_uri(store)).run_id


def wait_http(url: str, *, timeout: float, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s; see {log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """End ``process`` and its children (it leads its own session: started with ``start_new_session=True``)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def mlflow_ui(store: Path) -> Iterator[str]:
    """``mlflow ui`` on the store, on a free loopback port; yield its base URL."""
    port, log = free_port(), store / "mlflow-ui.log"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri(store)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=store, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/health", timeout=240, process=server, log=log)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(server)


class Browser:
    """One page of headless chromium, driven through the DevTools protocol's websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.calls = ws, 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        await self.ws.send_json({"id": self.calls, "method": method, "params": params})
        while True:  # events arrive in between: skip them
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == self.calls:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def js(self, expression: str) -> Any:
        answer = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"JavaScript failed: {answer['exceptionDetails']}")
        return answer.get("result", {}).get("value")

    async def wait_for(self, condition: str, *, what: str, timeout: float = 90.0, polls: int = 1) -> None:
        """Until ``condition`` holds at ``polls`` polls in a row, half a second apart."""
        deadline, held = time.monotonic() + timeout, 0
        while held < polls:
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}")
            held = held + 1 if await self.js(condition) else 0
            await asyncio.sleep(0.5)

    async def goto(self, url: str, *, height: int) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1, mobile=False
        )
        await self.call("Page.navigate", url="about:blank")  # a fresh document: hash routes keep stale views
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    async def shot(self, path: Path, *, settle: float = 2.0) -> None:
        await asyncio.sleep(settle)  # chart transitions
        png = (await self.call("Page.captureScreenshot", format="png"))["data"]
        path.write_bytes(base64.b64decode(png))
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)", flush=True)


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Browser]:
    import aiohttp  # MLflow's own dependency

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("no chromium on PATH: apt-get install -y chromium")
    port = free_port()
    flags = ["--headless", "--no-sandbox", "--hide-scrollbars", "--disable-gpu", f"--remote-debugging-port={port}"]
    command = [binary, *flags, f"--user-data-dir={profile}", "about:blank"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, pages = time.monotonic() + 60, []
        while not pages:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium's DevTools endpoint did not answer within 60 s")
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as answer:
                    pages = [t for t in json.load(answer) if t["type"] == "page"]
            await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                browser = Browser(ws)
                await browser.call("Page.enable")
                yield browser
    finally:
        stop(process)


async def run_page(browser: Browser, base: str, experiment: str, run: str, tab: str, *, height: int) -> None:
    await browser.goto(f"{base}/#/experiments/{experiment}/runs/{run}/{tab}", height=height)
    await browser.js(HIDE_CHART_TOOLBARS)


def charts_left(store: Path, runs: Sequence[str]) -> int:
    """How many charts :data:`CHART_FILTER` leaves for ``runs``: one per metric key of any of them that it matches
    (a statistic a matrix never logs, such as the spikes of a 4 x 128 layer too small to fit, has no chart)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(store))
    keys = {k for run in runs for k in client.get_run(run).data.metrics}
    return sum(1 for k in keys if re.search(CHART_FILTER, k))


async def filter_charts(browser: Browser, *, what: str, charts: int) -> None:
    """Type :data:`CHART_FILTER` into the chart search box and wait until the ``charts`` it leaves are drawn."""
    await browser.wait_for(f"{SEARCH_BOX} && {PLOTS_DRAWN} > 0", what=what)
    await browser.js(TYPE_IN_CHART_SEARCH % json.dumps(CHART_FILTER))
    await asyncio.sleep(1.0)  # the filtered charts replace the others
    await browser.wait_for(CHARTS_READY % charts, what=f"{what}, filtered to {CHART_FILTER!r} ({charts})", polls=4)


async def photograph(
    base: str, store: Path, experiment: str, runs: Sequence[str], out: Path, *, steps: int, only: Sequence[str]
) -> None:
    """The screenshots in ``only`` (module docstring) of the runs' experiment in ``store``, on the server at
    ``base``."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        async with chromium(Path(profile)) as browser:
            await browser.goto(f"{base}/health", height=1200)  # the UI's origin, to set its preferences
            await browser.js(PREFERENCES)

            if "run_metrics" in only:
                await run_page(browser, base, experiment, runs[0], "model-metrics", height=1540)
                await filter_charts(browser, what="the run's charts", charts=charts_left(store, runs[:1]))
                await browser.shot(out / "mlflow_run_metrics.png")

            for name, figure in (("step_figure", f"step_{steps:08d}.png"), ("evolution", "evolution.png")):
                if name not in only:
                    continue
                path = f"artifacts/rmt/monitor/figures/{MATRIX}/{figure}"  # SpectrumMonitor's folder: <prefix><label>
                await run_page(browser, base, experiment, runs[0], path, height=680)
                await browser.wait_for(IMAGE_SHOWN, what=f"the artifact {figure}")
                await browser.shot(out / f"mlflow_{name}.png", settle=1.0)

            if "compare_charts" in only:
                await browser.goto(f"{base}/#/experiments/{experiment}/runs?compareRunsMode=CHART", height=1580)
                await browser.js(HIDE_CHART_TOOLBARS)
                await filter_charts(browser, what="the experiment's charts", charts=charts_left(store, runs))
                await browser.shot(out / "mlflow_compare_charts.png")

            if "compare_runs" in only:
                query = f"runs={json.dumps(list(runs))}&experiments={json.dumps([experiment])}"
                await browser.goto(f"{base}/#/compare-runs?{query}", height=1000)
                selects = "document.querySelectorAll('.du-bois-light-select-selector').length >= 2"
                await browser.wait_for(f"{selects} && {PLOTS_DRAWN}", what="the parallel-coordinates plot")
                await browser.js(HIDE_CHART_TOOLBARS)
                picked = await browser.js(PICK_METRICS % json.dumps(COMPARED))
                if picked != COMPARED:
                    raise RuntimeError(f"the Compare page's metrics are {picked}, not {COMPARED}")
                await browser.shot(out / "mlflow_compare_runs.png")

            if "compare_figure" in only:
                comparison = compare(store, runs)
                print(f"compared the runs: run {comparison}", flush=True)
                path = f"artifacts/compare/figures/{MATRIX}.png"  # what rmt_callbacks.compare logs
                await run_page(browser, base, experiment, comparison, path, height=COMPARE_FIGURE_HEIGHT)
                await browser.wait_for(IMAGE_SHOWN, what=f"the comparison's figure of {MATRIX}")
                await browser.shot(out / "mlflow_compare_figure.png", settle=1.0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run")
    parser.add_argument("--keep", type=Path, default=None, help="keep the store in this (new) directory")
    parser.add_argument(
        "--only", nargs="+", choices=SHOTS, default=list(SHOTS), help="take these screenshots only (default: all)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine; read by the server too
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            store = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rmt-screenshots-")))
        else:
            args.keep.mkdir(parents=True)
            store = args.keep.resolve()
        experiment, runs = train(store, steps=args.steps)
        print(f"trained {len(runs)} runs in {time.perf_counter() - start:.0f} s", flush=True)
        with mlflow_ui(store) as base:
            asyncio.run(photograph(base, store, experiment, runs, args.out, steps=args.steps, only=args.only))
    print(f"done in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
