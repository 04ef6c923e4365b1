"""One weights trajectory, three stacks: a Lightning ``Trainer`` with the callbacks, a plain loop with ``watch``, and
a real ``transformers.Trainer`` with ``RMTCallback`` (``report_to=["mlflow"]``) log the same keys and values and the
same artifacts into MLflow, read back with ``MlflowClient``.

The model is a tiny Llama built from a config (no hub), in float64 so that the three stacks' different summation
orders (Hugging Face shuffles the samples inside the full batch) move the weights by rounding only. Each optimizer
step accumulates two micro-batches of 8, so |B| = 16 must be found in each stack's own terms
(``accumulate_grad_batches``, ``gradient_accumulation_steps``, ``accumulation=``).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import mlflow
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient
from torch.utils.data import DataLoader

import rmt_callbacks
from rmt_callbacks import DysonMonitor, SpectrumMonitor

transformers = pytest.importorskip("transformers")
from rmt_callbacks.integrations.transformers import RMTCallback  # noqa: E402

STEPS, MICRO, ACCUMULATION, LR = 12, 8, 2, 0.2
INCLUDE = ["model.layers.0.self_attn.*", "model.layers.0.mlp.down_proj.weight", "lm_head.weight"]
SPECTRUM = {"include": INCLUDE, "background": False}  # in the hook: every due step analysed in every stack
DYSON = {"every_n_train_steps": 1, "window": 6, "log_every_n_steps": 4, "overhead_budget": None, "include": INCLUDE}
TIMING = ("analysis_seconds", "overhead")  # wall-clock numbers: the only keys whose values may differ


def _model() -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).double()


def _data() -> list[dict[str, torch.Tensor]]:
    ids = torch.randint(0, 48, (MICRO * ACCUMULATION, 10), generator=torch.Generator().manual_seed(1))
    return [{"input_ids": row, "labels": row} for row in ids]


class _Module(pl.LightningModule):
    """The Llama's own submodules at the top, so that its parameters keep their names (``model.layers.0…``)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model, self.lm_head, self._forward = model.model, model.lm_head, [model]

    def training_step(self, batch: dict[str, torch.Tensor], index: int) -> torch.Tensor:
        return self._forward[0](**batch).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=LR)


def _lightning(model: torch.nn.Module, uri: str) -> str:
    logger = MLFlowLogger(experiment_name="stacks", tracking_uri=uri, run_name="lightning")
    callbacks = [SpectrumMonitor(every_n_train_steps=4, **SPECTRUM), DysonMonitor(**DYSON)]
    trainer = pl.Trainer(
        max_steps=STEPS, accumulate_grad_batches=ACCUMULATION, logger=logger, callbacks=callbacks,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(_Module(model), DataLoader(_data(), batch_size=MICRO))
    return str(logger.run_id)


def _plain(model: torch.nn.Module, uri: str) -> str:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(_data(), batch_size=MICRO)
    with mlflow.start_run(experiment_id=mlflow.set_experiment("stacks").experiment_id, run_name="plain") as run:
        options = {"batch_size": MICRO, "accumulation": ACCUMULATION, "max_steps": STEPS, **SPECTRUM}
        with rmt_callbacks.watch(model, optimizer, every_n_steps=4, dyson=DYSON, **options) as watcher:
            for _ in range(STEPS):
                for batch in loader:
                    (model(**batch).loss / ACCUMULATION).backward()
                optimizer.step()
                optimizer.zero_grad()
                watcher.step()
        assert watcher.run_id == run.info.run_id
    return run.info.run_id


def _hugging_face(model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "stacks")
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), per_device_train_batch_size=MICRO, gradient_accumulation_steps=ACCUMULATION,
        max_steps=STEPS, report_to=["mlflow"], run_name="hugging-face", save_strategy="no", max_grad_norm=0.0,
        use_cpu=True, disable_tqdm=True, logging_steps=STEPS,
    )  # fmt: skip
    callback = RMTCallback(every_n_steps=4, dyson=DYSON, **SPECTRUM)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=_data(), optimizers=(optimizer, constant), callbacks=[callback]
    )
    trainer.train()
    assert callback.watcher is not None and callback.watcher.run_id is not None
    return callback.watcher.run_id


def _records(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("rmt/")]
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def _artifacts(client: MlflowClient, run_id: str, path: str = "rmt") -> list[str]:
    out: list[str] = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(out)


def _assert_same(a: dict[str, list[tuple[int, float]]], b: dict[str, list[tuple[int, float]]], what: str) -> None:
    assert sorted(a) == sorted(b), f"{what}: keys differ: {sorted(set(a) ^ set(b))}"
    for key in a:
        steps_a, steps_b = [s for s, _ in a[key]], [s for s, _ in b[key]]
        assert steps_a == steps_b, f"{what}: {key} logged at {steps_a} vs {steps_b}"
        if key.rsplit("/", 1)[-1] in TIMING:
            continue
        values_a, values_b = np.array([v for _, v in a[key]]), np.array([v for _, v in b[key]])
        # the weights agree to rounding (the spectra below to 1e-9); iterative fits stop at their own tolerance
        np.testing.assert_allclose(values_a, values_b, rtol=1e-5, atol=1e-12, err_msg=f"{what}: {key}")


def test_lightning_plain_loop_and_hugging_face_log_the_same_records(
    tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model()
    runs = {
        "lightning": _lightning(copy.deepcopy(model), tracking),
        "plain": _plain(copy.deepcopy(model), tracking),
        "hugging face": _hugging_face(copy.deepcopy(model), tmp_path, monkeypatch),
    }
    client = MlflowClient(tracking)
    records = {stack: _records(client, run) for stack, run in runs.items()}
    reference = records["lightning"]
    assert [s for s, _ in reference["rmt/lm_head.weight/lambda_max"]] == [0, 4, 8, 12]
    assert reference["rmt/dyson/batch_size"][-1][1] == MICRO * ACCUMULATION
    assert math.isclose(reference["rmt/dyson/noise_temperature"][-1][1], LR / (MICRO * ACCUMULATION))
    assert len(reference) > 100  # every matrix's statistics, not a handful
    for stack in ("plain", "hugging face"):
        _assert_same(reference, records[stack], f"lightning vs {stack}")
    files = {stack: _artifacts(client, run) for stack, run in runs.items()}
    assert any(f.endswith("evolution.png") for f in files["lightning"])
    assert files["plain"] == files["lightning"] == files["hugging face"]
    spectra = [f for f in files["lightning"] if f.startswith("rmt/monitor/spectra/") and f.endswith(".npz")]
    for path in spectra[-1:]:
        arrays = [np.load(client.download_artifacts(run, path, str(tmp_path / stack))) for stack, run in runs.items()]
        for name in arrays[0].files:
            for other in arrays[1:]:
                np.testing.assert_allclose(other[name], arrays[0][name], rtol=1e-9, atol=1e-14, err_msg=name)
