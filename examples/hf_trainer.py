"""A tiny Llama trained by Hugging Face's ``Trainer``, watched by ``RMTCallback`` and logged into the MLflow run
that ``report_to=["mlflow"]`` opens.

The callback takes three lines (marked ``# <- rmt``): the import, ``RMTCallback(...)`` and ``callbacks=[...]``.
The model is built from a config (no download). The noise temperature α/|B| takes α from the optimizer at each
update (the scheduler's value) and |B| = ``per_device_train_batch_size`` × ``gradient_accumulation_steps`` ×
processes.

    .venv/bin/pip install "rmt-callbacks[transformers]"
    .venv/bin/python examples/hf_trainer.py                      # ~45 s on a 2-core CPU
    .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db   # then open http://127.0.0.1:5000

Task: predict the next token of sequences :math:`t_{i+1} = (t_i + s) \\bmod V` with a random start and step
:math:`s` per sequence.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from rmt_callbacks.integrations.transformers import RMTCallback  # <- rmt


def counting_sequences(count: int, length: int, vocab: int, *, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``count`` samples ``{"input_ids", "labels"}`` of ``length`` tokens (the model shifts the labels itself)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab, (count, 1), generator=g)
    step = torch.randint(1, 4, (count, 1), generator=g)
    ids = (start + step * torch.arange(length)) % vocab  # (count, length)
    return [{"input_ids": row, "labels": row} for row in ids]


def main(argv: Sequence[str] | None = None) -> str:
    """Train; return the MLflow run id."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--every-n-steps", type=int, default=50)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="per device")
    parser.add_argument("--accumulation", type=int, default=2, help="gradient_accumulation_steps")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--output-dir", default=None, help="the Trainer's (default: a temporary directory)")
    args = parser.parse_args(argv)

    # read by Hugging Face's MLflowCallback (unless mlflow.set_tracking_uri was called earlier in this process)
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "rmt-examples")
    vocab, h = 64, args.hidden_size
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=h, intermediate_size=2 * h, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    # DysonMonitor's arguments: a snapshot every step (a toy's step costs little more than a snapshot, and the
    # default budget, 2 % of training time, would thin them out); its estimates logged with each spectrum
    dyson = {"overhead_budget": None, "log_every_n_steps": args.every_n_steps}
    callback = RMTCallback(every_n_steps=args.every_n_steps, dyson=dyson)  # <- rmt
    with tempfile.TemporaryDirectory() as scratch:
        training = TrainingArguments(
            output_dir=args.output_dir or scratch, run_name="hf-trainer", report_to=["mlflow"],
            max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=args.accumulation, optim="sgd", learning_rate=0.5,
            lr_scheduler_type="cosine", logging_steps=10, save_strategy="no", use_cpu=True, disable_tqdm=True,
        )  # fmt: skip
        data = counting_sequences(512, 16, vocab)
        Trainer(model=model, args=training, train_dataset=data, callbacks=[callback]).train()  # <- rmt
    if callback.watcher is None or callback.watcher.run_id is None:
        raise RuntimeError("no MLflow run was active: report_to must name mlflow")
    print(f"MLflow run {callback.watcher.run_id} in {args.tracking_uri}")
    return callback.watcher.run_id


if __name__ == "__main__":
    main()
