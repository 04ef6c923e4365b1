"""End to end: a model the other tests never use (embedding, convolution, attention, dropout) trained with the
monitor and an MLFlowLogger ends with metrics, figures, arrays and tables in a real sqlite store and in a real
``mlflow server`` on loopback, while CSV and TensorBoard loggers get the same scalars; and the training itself is
bitwise the same as without the monitor."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rmt_callbacks import SpectrumMonitor, analyze
from rmt_callbacks.analysis import ANALYSES

from scaffold import Toy, quiet_trainer

ROOT = "rmt/monitor"  # the monitor's artifact folder: <log_key_prefix><label>
MATRICES = [
    "embed.weight",
    "conv.weight",
    "attn.in_proj_weight.q",
    "attn.in_proj_weight.k",
    "attn.in_proj_weight.v",
    "attn.out_proj.weight",
    "head.weight",
]


class Tagger(Toy):
    """Token classifier: embedding -> 1-D convolution -> self-attention (with dropout) -> linear head."""

    def __init__(self) -> None:
        super().__init__(
            embed=nn.Embedding(50, 24),
            conv=nn.Conv1d(24, 24, kernel_size=3, padding=1),
            attn=nn.MultiheadAttention(24, num_heads=2, dropout=0.1, batch_first=True),
            drop=nn.Dropout(0.2),
            head=nn.Linear(24, 5),
            loss="cross_entropy",
            lr=0.1,
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)  # (B, T, 24)
        x = self.conv(x.transpose(1, 2)).transpose(1, 2).relu()  # (B, T, 24)
        x, _ = self.attn(x, x, x)  # (B, T, 24)
        return self.head(self.drop(x).mean(dim=1))  # (B, 5)


def _train(tmp_path: Path, *, loggers: list | bool, monitor: SpectrumMonitor | None, steps: int = 10) -> Tagger:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 50, (96, 12), generator=g)
    data = DataLoader(TensorDataset(tokens, tokens[:, 0] % 5), batch_size=16, shuffle=True)  # shuffles with torch RNG
    model = Tagger()
    callbacks = [monitor] if monitor else []
    trainer = quiet_trainer(
        max_steps=steps, default_root_dir=tmp_path, logger=loggers, callbacks=callbacks, log_every_n_steps=1
    )
    trainer.fit(model, data)
    return model


def _monitor(figure_every_n_analyses: int = 2) -> SpectrumMonitor:
    return SpectrumMonitor(  # every analysis, the semicircle of the square matrices' symmetric parts included
        every_n_train_steps=5, overhead_budget=None, figure_every_n_analyses=figure_every_n_analyses, analyses=ANALYSES
    )


def _check_run(
    client: MlflowClient, run_id: str, model: Tagger, tmp_path: Path, *, steps: list[int], figure_steps: list[int]
) -> dict[str, float]:
    """Metrics, histories, arrays, tables and figures of the run; returns the run's last metric values."""
    run = client.get_run(run_id)
    metrics, tags = run.data.metrics, run.data.tags
    for key in metrics:  # one chart section per matrix (or the monitor's own), no constant metric
        assert key.rsplit("/", 1)[0] in {f"rmt/{n}" for n in MATRICES} | {"rmt/monitor"}, key
        assert not key.endswith(("/skipped", "_converged", "/mp_ratio", "/estimated")), key
    assert tags["rmt.matrix.conv.weight"] == "(3, 24, 24) conv, q = N/M = 1"
    assert tags["rmt.matrix.head.weight"] == "(5, 24) linear, q = N/M = 4.8"
    assert 0.0 < metrics["rmt/monitor/overhead"] and metrics["rmt/monitor/analysis_seconds"] > 0.0
    for name in MATRICES:
        history = client.get_metric_history(run_id, f"rmt/{name}/lambda_max")
        assert [m.step for m in history] == steps  # trainer.global_step at each analysis
    for stat in ("mp_sigma2", "mp_lambda_plus", "mp_num_spikes", "mp_ks", "mean_spacing_ratio", "stable_rank"):
        assert f"rmt/attn.in_proj_weight.q/{stat}" in metrics
    # the (5, 24) head has 5 non-structural levels: too few for a Marchenko-Pastur fit (MIN_VALUES = 10) or for
    # <r> (MIN_RATIOS = 16 ratios); its model-free statistics are there
    assert "rmt/head.weight/mp_sigma2" not in metrics and "rmt/head.weight/mean_spacing_ratio" not in metrics
    assert "rmt/head.weight/stable_rank" in metrics
    assert "rmt/attn.in_proj_weight.q/semicircle_radius" in metrics  # square (24, 24)
    assert "rmt/head.weight/semicircle_radius" not in metrics  # (5, 24) is not square

    final = {r.name: r for r in analyze(model)}  # the weights after the last step, analysed post hoc
    for name in MATRICES:
        assert metrics[f"rmt/{name}/lambda_max"] == pytest.approx(final[name].metrics["lambda_max"], rel=1e-9)

    spectra = {f.path for f in client.list_artifacts(run_id, "rmt/monitor/spectra")}
    assert {f"rmt/monitor/spectra/step_{k:08d}.npz" for k in steps} <= spectra
    local = client.download_artifacts(run_id, f"rmt/monitor/spectra/step_{steps[-1]:08d}.npz", str(tmp_path))
    with np.load(local, allow_pickle=False) as arrays:
        assert sorted(arrays.files) == sorted(MATRICES)
        assert arrays["conv.weight"].shape == (3, 24)  # one Gram spectrum per kernel position
        for name in MATRICES:
            atol = 1e-13 * float(arrays[name].max())  # either CPU solver: equal to LAPACK's backward error, eps |X|
            np.testing.assert_allclose(arrays[name], final[name].spectra["gram"].numpy(), rtol=1e-12, atol=atol)
    table = Path(client.download_artifacts(run_id, f"{ROOT}/fits/step_00000005.json", str(tmp_path))).read_text()
    table = json.loads(table)
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["name"] for r in rows] == MATRICES and {r["step"] for r in rows} == {5}
    for name in MATRICES:  # per-step figures on the interval and at the last step, the evolution at the end
        figures = [f.path for f in client.list_artifacts(run_id, f"rmt/monitor/figures/{name}")]
        expected = [f"rmt/monitor/figures/{name}/step_{k:08d}.png" for k in figure_steps]
        assert figures == sorted([*expected, f"rmt/monitor/figures/{name}/evolution.png"])
    summary = Path(client.download_artifacts(run_id, f"{ROOT}/summary/matrices.json", str(tmp_path))).read_text()
    summary = json.loads(summary)
    summary_rows = [dict(zip(summary["columns"], row, strict=True)) for row in summary["data"]]
    assert [r["name"] for r in summary_rows] == [*MATRICES, "(model mean)"]
    assert summary_rows[-1]["stable_rank"] == pytest.approx(np.mean([r["stable_rank"] for r in summary_rows[:-1]]))
    assert {r["step"] for r in summary_rows} == {steps[-1]}
    png = client.download_artifacts(
        run_id, f"rmt/monitor/figures/attn.in_proj_weight.q/step_{figure_steps[-1]:08d}.png", str(tmp_path)
    )
    assert Path(png).read_bytes()[:4] == b"\x89PNG"
    return metrics


def test_unseen_model_with_sqlite_store_csv_and_tensorboard(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlf = MLFlowLogger(experiment_name="e2e", tracking_uri=uri, artifact_location=(tmp_path / "artifacts").as_uri())
    csv_logger, tb = CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")
    model = _train(tmp_path / "with", loggers=[mlf, csv_logger, tb], monitor=_monitor())
    client = MlflowClient(tracking_uri=uri)
    metrics = _check_run(client, mlf.run_id, model, tmp_path, steps=[0, 5, 10], figure_steps=[0, 10])

    with open(Path(csv_logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("rmt/head.weight/lambda_max")]
    assert [int(r["step"]) for r in rows] == [0, 5, 10]
    assert float(rows[-1]["rmt/conv.weight/stable_rank"]) == pytest.approx(metrics["rmt/conv.weight/stable_rank"])
    events = EventAccumulator(tb.log_dir, size_guidance={"histograms": 0, "images": 0, "scalars": 0})
    events.Reload()
    scalars = events.Scalars("rmt/embed.weight/mp_sigma2")
    assert [e.step for e in scalars] == [0, 5, 10]
    assert scalars[-1].value == pytest.approx(metrics["rmt/embed.weight/mp_sigma2"], rel=1e-6)  # float32 in TB
    histograms = events.Histograms("rmt/conv.weight/eigenvalues")  # the spectrum over time, TensorBoard's way
    assert [h.step for h in histograms] == [0, 5, 10]
    assert histograms[-1].histogram_value.num == 3 * 24  # every kernel position's levels, pooled
    final_levels = analyze(model)[1].spectra["gram"]
    assert histograms[-1].histogram_value.max == pytest.approx(float(final_levels.max()), rel=1e-6)
    images = events.Images("rmt/head.weight/spectrum")
    assert [i.step for i in images] == [0, 10] and images[0].width > images[0].height > 100
    assert [i.step for i in events.Images("rmt/head.weight/evolution")] == [10]

    reference = _train(tmp_path / "without", loggers=False, monitor=None)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{name} differs: the monitor disturbed training"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on loopback with a sqlite backend and proxied artifacts; stopped at module end."""
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_cli), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
           "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    log = open(root / "server.log", "w")  # closed in the finalizer below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with {proc.returncode}:\n{(root / 'server.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not answer /health in 180 s:\n{(root / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group: it and its workers
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_unseen_model_with_an_mlflow_server(mlflow_server: str, tmp_path: Path) -> None:
    mlf = MLFlowLogger(experiment_name="e2e-server", tracking_uri=mlflow_server)
    model = _train(tmp_path, loggers=[mlf], monitor=_monitor(figure_every_n_analyses=5), steps=5)
    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.get_run(mlf.run_id).info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    _check_run(client, mlf.run_id, model, tmp_path, steps=[0, 5], figure_steps=[0, 5])  # the last step always drawn


def test_matrices_past_the_dense_limit_are_estimated_and_say_so(tmp_path: Path) -> None:
    """With ``dense_limit=24`` the 24-wide matrices get an SLQ density; the (5, 24) head stays exact."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlf = MLFlowLogger(experiment_name="slq", tracking_uri=uri, artifact_location=(tmp_path / "artifacts").as_uri())
    monitor = SpectrumMonitor(every_n_train_steps=5, overhead_budget=None, dense_limit=24, figure_every_n_analyses=1)
    _train(tmp_path, loggers=[mlf], monitor=monitor, steps=5)
    client = MlflowClient(uri)
    tags, metrics = client.get_run(mlf.run_id).data.tags, client.get_run(mlf.run_id).data.metrics
    estimated = [n for n in MATRICES if n != "head.weight"]
    assert {n: tags[f"rmt.method.{n}"] for n in MATRICES} == {
        **dict.fromkeys(estimated, "slq"),
        "head.weight": "eigvalsh",
    }
    for name in estimated:
        assert f"rmt/{name}/lambda_max" in metrics and f"rmt/{name}/estimated" not in metrics
        assert f"rmt/{name}/surmise_beta" not in metrics  # spacings need exact levels
    density_file = client.download_artifacts(mlf.run_id, f"{ROOT}/spectra/density/step_00000005.npz", str(tmp_path))
    with np.load(density_file) as f:
        for name in estimated:
            density, edges = f[f"{name}/density"], f[f"{name}/edges"]
            assert edges.shape == (density.shape[0] + 1,) and abs(float((density * np.diff(edges)).sum()) - 1) < 1e-6
    with np.load(client.download_artifacts(mlf.run_id, "rmt/monitor/spectra/step_00000005.npz", str(tmp_path))) as f:
        assert list(f.keys()) == ["head.weight"]
    table = json.loads(
        Path(client.download_artifacts(mlf.run_id, "rmt/monitor/fits/step_00000005.json", str(tmp_path))).read_text()
    )
    methods = dict(zip(table["columns"], zip(*table["data"], strict=True), strict=True))["method"]
    assert sorted(set(methods)) == ["eigvalsh", "slq"]
    figures = {a.path for a in client.list_artifacts(mlf.run_id, "rmt/monitor/figures/head.weight")}
    assert figures == {f"{ROOT}/figures/head.weight/{f}.png" for f in ("step_00000000", "step_00000005", "evolution")}
