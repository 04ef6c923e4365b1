"""Bad weights in a real training run: both monitors stay on, skip with one warning per (matrix, reason), log why.

One CPU Trainer run carries a zoo of bad matrices (integer, complex, empty, 1×n, n×1, beyond the dense solver),
a half-precision and a non-contiguous one (both fine), and a saboteur that, mid-run, writes NaN/Inf into a matrix
(one more entry each step, so the message's count changes), replaces a parameter by one of another shape and
deletes another. Everything is read back from a real sqlite MLflow store with ``MlflowClient``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient
from torch import nn
from torch.utils.data import DataLoader

from rmt_callbacks import DysonMonitor, SpectrumMonitor
from rmt_callbacks.analysis import MAX_DENSE_LEVELS

from scaffold import Toy, quiet_trainer, random_loader

STEPS = 8
BAD = {  # name -> the reason its skip names
    "extra.integer": "real floating dtype",
    "extra.complex": "real floating dtype",
    "extra.empty": "empty dimension",
    "extra.row": "degenerate shape (1, 7)",
    "extra.column": "degenerate shape (7, 1)",
}
HUGE = "too large for the dense eigensolver"  # DysonMonitor needs exact levels; SpectrumMonitor estimates instead
DENSE_LIMIT = 40  # SpectrumMonitor(dense_limit=...): extra.big (48, 40) gets a density estimate


def _frozen(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


class Zoo(Toy):
    """A trained linear layer plus frozen extras; only ``net`` is in the loss and the optimizer."""

    def __init__(self) -> None:
        super().__init__(net=nn.Linear(8, 6), optimizer=lambda m: torch.optim.SGD(m.net.parameters(), lr=0.05))
        g = torch.Generator().manual_seed(0)
        self.hurt = nn.Linear(9, 7).requires_grad_(False)  # healthy until the saboteur strikes
        self.extra = nn.Module()
        k = MAX_DENSE_LEVELS + 1
        tensors = {
            "integer": torch.ones(4, 4, dtype=torch.int64),
            "complex": torch.randn(4, 4, generator=g, dtype=torch.complex64),
            "empty": torch.zeros(0, 4),
            "row": torch.randn(1, 7, generator=g),
            "column": torch.randn(7, 1, generator=g),
            "huge": torch.zeros(1, 1).expand(k, k),  # stride 0: the shape of a huge matrix, one stored number
            "big": torch.randn(48, 40, generator=g),
            "fp16": torch.randn(6, 5, generator=g).half(),
            "strided": torch.randn(5, 6, generator=g).T,  # (6, 5), non-contiguous
            "grow": torch.randn(6, 5, generator=g),
            "gone": torch.randn(6, 5, generator=g),
        }
        for name, t in tensors.items():
            self.extra.register_parameter(name, _frozen(t))


class Saboteur(pl.Callback):
    """From step 3 on, one more non-finite entry in ``hurt.weight`` per step; at step 4 ``extra.grow`` becomes
    (7, 9) and ``extra.gone`` is deleted. Runs before the monitors in the same hook (callback order)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Zoo, *args: object) -> None:
        step = trainer.global_step
        if step >= 3:
            with torch.no_grad():
                pl_module.hurt.weight.view(-1)[step - 3] = float("nan") if step % 2 else float("inf")
        if step == 4:
            pl_module.extra.grow = _frozen(torch.randn(7, 9, generator=torch.Generator().manual_seed(5)))
            del pl_module.extra.gone


def _loader() -> DataLoader:
    return random_loader(64, 8, batch_size=8, seed=1, target=lambda x: x[:, :6] ** 2)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, str, list[str], Path]:
    tmp = tmp_path_factory.mktemp("bad")
    uri = f"sqlite:///{tmp}/mlflow.db"
    logger = MLFlowLogger(experiment_name="bad", tracking_uri=uri, artifact_location=(tmp / "art").as_uri())
    spectrum = SpectrumMonitor(
        every_n_train_steps=1, overhead_budget=None, include=["net.*", "hurt.*", "extra.*"], exclude=["extra.huge"],
        analyses=["summary", "marchenko_pastur"], figure_every_n_analyses=None, dense_limit=DENSE_LIMIT,
        background=False,  # in the hook: every step exactly, whatever the machine's load (bad input is under test)
    )  # fmt: skip
    dyson = DysonMonitor(
        every_n_train_steps=1, log_every_n_steps=2, window=4, include=["net.*", "hurt.*", "extra.[!b]*"],
        overhead_budget=None,
    )  # fmt: skip
    trainer = quiet_trainer(
        max_steps=STEPS, default_root_dir=tmp, logger=logger, callbacks=[Saboteur(), spectrum, dyson]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Zoo(), _loader())
    assert trainer.global_step == STEPS  # no exception left a hook, training finished
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return MlflowClient(uri), logger.run_id, messages, tmp


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_each_bad_matrix_is_skipped_every_time_and_warned_about_once(run) -> None:
    client, run_id, messages, _ = run
    tags = client.get_run(run_id).data.tags
    for name, reason in BAD.items():
        assert not [k for k in client.get_run(run_id).data.metrics if k.startswith(f"rmt/{name}/")], name
        assert reason in tags[f"rmt.skipped.{name}"], (name, tags.get(f"rmt.skipped.{name}"))
        spectrum_warnings = [m for m in messages if m.startswith(f"SpectrumMonitor: skipping {name!r}")]
        dyson_warnings = [m for m in messages if m.startswith(f"DysonMonitor: skipping {name!r}")]
        assert len(spectrum_warnings) == 1 and reason in spectrum_warnings[0], (name, spectrum_warnings)
        assert len(dyson_warnings) == 1 and reason in dyson_warnings[0], (name, dyson_warnings)
        assert not client.get_metric_history(run_id, f"rmt/{name}/lambda_max")


def test_huge_matrices_are_estimated_by_the_spectrum_monitor_and_skipped_by_dyson(run) -> None:
    client, run_id, messages, _ = run
    tags = client.get_run(run_id).data.tags
    assert tags["rmt.method.extra.big"] == "slq" and tags["rmt.method.net.weight"] == "eigvalsh"
    assert [s for s, _ in _history(client, run_id, "rmt/extra.big/lambda_max")] == list(range(STEPS + 1))
    assert not _history(client, run_id, "rmt/extra.big/estimated")  # fixed by the shape: the method tag says it
    w = Zoo().extra.big.detach().double().numpy()  # frozen, (48, 40): the SLQ extremes are Ritz values, inside
    eigs = np.linalg.eigvalsh(w.T @ w / 48)
    for _, lam_max in _history(client, run_id, "rmt/extra.big/lambda_max"):
        assert eigs[0] <= lam_max <= eigs[-1] * (1 + 1e-6) and lam_max >= 0.9 * eigs[-1]  # float32 W; 16 Lanczos steps
    assert "needs the exact levels" in tags["rmt.failed.extra.big"]  # no fit: said in one tag, not per step
    assert not _history(client, run_id, "rmt/extra.big/mp_sigma2")
    dyson_warnings = [m for m in messages if m.startswith("DysonMonitor: skipping 'extra.huge'")]
    assert len(dyson_warnings) == 1 and HUGE in dyson_warnings[0], dyson_warnings
    assert not any(m.startswith("SpectrumMonitor: skipping 'extra.huge'") for m in messages)  # excluded


def test_weights_that_turn_non_finite_mid_run(run) -> None:
    """Healthy at steps 0–2, then skipped; one warning although the NaN/Inf count grows each step."""
    client, run_id, messages, _ = run
    assert "NaN or Inf" in client.get_run(run_id).data.tags["rmt.skipped.hurt.weight"]
    assert [s for s, _ in _history(client, run_id, "rmt/hurt.weight/lambda_max")] == [0, 1, 2]
    hits = [m for m in messages if m.startswith("SpectrumMonitor: skipping 'hurt.weight'")]
    assert len(hits) == 1 and "entries are NaN or Inf" in hits[0], hits
    # DysonMonitor: frozen, so skipped from the start (it never moves); then once more, for the new reason
    hits = [m for m in messages if m.startswith("DysonMonitor: skipping 'hurt.weight'")]
    assert len(hits) == 2 and "no optimizer updates it" in hits[0] and "entries are NaN or Inf" in hits[1], hits
    assert not _history(client, run_id, "rmt/hurt.weight/dyson_width")


def test_healthy_matrices_keep_being_analysed(run) -> None:
    client, run_id, _, _ = run
    for name in ("net.weight", "extra.fp16", "extra.strided"):
        assert [s for s, _ in _history(client, run_id, f"rmt/{name}/lambda_max")] == list(range(STEPS + 1)), name
        assert len(client.get_metric_history(run_id, f"rmt/{name}/stable_rank")) == STEPS + 1
        widths = [s for s, _ in _history(client, run_id, f"rmt/{name}/dyson_width")]  # only the trained one moves
        assert widths == ([4, 6, 8] if name == "net.weight" else []), name  # a width needs 3 snapshots
    assert len(client.list_artifacts(run_id, "rmt/monitor/fits")) == STEPS + 1  # a fit table per step, failed fits too
    w = Zoo().extra.strided.detach().double().numpy()  # frozen: its value never changes; (6, 5)
    lam_max = np.linalg.eigvalsh(w.T @ w / 6)[-1]
    assert client.get_metric_history(run_id, "rmt/extra.strided/lambda_max")[-1].value == pytest.approx(lam_max)


def test_parameters_that_change_shape_or_disappear(run) -> None:
    client, run_id, _, tmp = run
    assert [s for s, _ in _history(client, run_id, "rmt/extra.gone/lambda_max")] == [0, 1, 2, 3]  # deleted at step 4
    assert not _history(client, run_id, "rmt/extra.gone/dyson_width")  # frozen: DysonMonitor skips it
    assert [s for s, _ in _history(client, run_id, "rmt/extra.grow/lambda_max")] == list(range(STEPS + 1))
    spectra = "rmt/monitor/spectra"
    with np.load(client.download_artifacts(run_id, f"{spectra}/step_00000003.npz", str(tmp)), allow_pickle=False) as a:
        assert a["extra.grow"].shape == (5,) and "extra.gone" in a.files
    with np.load(client.download_artifacts(run_id, f"{spectra}/step_00000004.npz", str(tmp)), allow_pickle=False) as a:
        assert a["extra.grow"].shape == (9,) and "extra.gone" not in a.files
    # DysonMonitor's windows of reshaped and removed trained parameters: tests/monitors/test_dyson_setups.py
