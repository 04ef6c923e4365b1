"""``RMTCallback`` beyond the Llama of ``test_stacks.py``: GPT-2 (Hugging Face's ``Conv1D`` layers), the Trainer's
other reporters (TensorBoard) with ``trainer=``, and a Trainer that reports to nothing the callback can reach."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient

transformers = pytest.importorskip("transformers")
from rmt_callbacks.integrations.transformers import RMTCallback  # noqa: E402

STEPS = 6


def _gpt2() -> Any:
    config = transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def _data() -> list[dict[str, torch.Tensor]]:
    ids = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(1))
    return [{"input_ids": row, "labels": row} for row in ids]


def _trainer(tmp_path: Path, report_to: list[str], callback: RMTCallback | None = None) -> Any:
    """A GPT-2 Trainer (SGD, linear decay); the tests point ``TENSORBOARD_LOGGING_DIR`` at ``tmp_path / "tb"``."""
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), per_device_train_batch_size=4, gradient_accumulation_steps=2,
        max_steps=STEPS, report_to=report_to, save_strategy="no", use_cpu=True, disable_tqdm=True,
        logging_steps=STEPS, learning_rate=0.05, optim="sgd", lr_scheduler_type="linear", warmup_steps=0,
    )  # fmt: skip
    callbacks = [] if callback is None else [callback]
    return transformers.Trainer(model=_gpt2(), args=args, train_dataset=_data(), callbacks=callbacks)


def test_gpt2_with_mlflow_and_tensorboard_reporters(
    tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "gpt2")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer = _trainer(tmp_path, ["mlflow", "tensorboard"])
    callback = RMTCallback(every_n_steps=3, trainer=trainer, background=False, dyson={"overhead_budget": None})
    trainer.add_callback(callback)
    trainer.train()
    assert callback.watcher is not None and callback.watcher.run_id is not None
    run_id = callback.watcher.run_id
    metrics = MlflowClient(tracking).get_run(run_id).data.metrics
    # GPT-2's Conv1D layers are analysed, read as the (out, in) matrices of the Linear they are
    for name in ("transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight"):
        assert f"rmt/{name}/lambda_max" in metrics
    tags = MlflowClient(tracking).get_run(run_id).data.tags
    assert tags["rmt.matrix.transformer.h.0.mlp.c_fc.weight"].startswith("(128, 32)")
    # |B| = 4 per device × 2 accumulated; α the linear schedule's value at the last update (lr × 1/6)
    assert metrics["rmt/dyson/batch_size"] == 8
    assert metrics["rmt/dyson/lr"] == pytest.approx(0.05 / STEPS)
    history = MlflowClient(tracking).get_metric_history(run_id, "rmt/transformer.h.0.mlp.c_fc.weight/lambda_max")
    assert [m.step for m in history] == [0, 3, 6]
    # the same scalars reached TensorBoard through its own reporter, at the analysed steps
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    key = next(t for t in events.Tags()["scalars"] if t.endswith("rmt/transformer.h.0.mlp.c_fc.weight/lambda_max"))
    assert [e.step for e in events.Scalars(key)] == [0, 3, 6]
    assert events.Scalars(key)[-1].value == pytest.approx(history[-1].value, rel=1e-6)


def test_a_trainer_whose_reporters_cannot_be_reached_is_told_so(
    tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    client = MlflowClient(tracking)
    experiments = [e.experiment_id for e in client.search_experiments()]
    before = len(client.search_runs(experiments))
    trainer = _trainer(tmp_path, ["tensorboard"], RMTCallback(every_n_steps=3))
    with pytest.warns(RuntimeWarning) as said:
        trainer.train()
    text = " ".join(str(w.message) for w in said)
    assert "MLflow only" in text and "RMTCallback(trainer=trainer)" in text  # the way out
    assert "nothing is analysed" in text and "the Trainer has no logger" not in text  # said once, in its words
    assert [e.experiment_id for e in client.search_experiments()] == experiments  # nothing opened behind its back
    assert len(client.search_runs(experiments)) == before


def test_bad_arguments_fail_when_the_callback_is_made() -> None:
    with pytest.raises(ValueError, match="every_n_steps"):
        RMTCallback(every_n_steps=0)
    with pytest.raises(ValueError, match="analyses"):
        RMTCallback(analyses=["nonsense"])
    with pytest.raises(TypeError, match="RMTCallback takes no batch_size=: the Trainer's arguments"):
        RMTCallback(batch_size=8)
    with pytest.raises(TypeError, match=r"RMTCallback\(\) got window=: a DysonMonitor argument"):
        RMTCallback(window=8)
