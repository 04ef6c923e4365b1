"""GPU check of the rank-zero weight snapshot under Lightning's own FSDP wrapping (not a benchmark: a pass/fail table).

What the CPU tests (``tests/reliability/test_fsdp.py``, two gloo processes) cannot reach, run here on one CUDA
device (world size 1, NCCL):

* ``fsdp1``: Lightning ``FSDPStrategy(auto_wrap_policy={nn.Linear, nn.Conv1d, nn.MultiheadAttention})`` on
  ``accelerator="cuda"``: Lightning wraps the whole ``LightningModule`` (``trainer.strategy.model`` is the
  ``FullyShardedDataParallel`` root around it) and the shards live on the GPU, so the snapshot takes the
  ``summon_full_params(root, rank0_only=True, offload_to_cpu=True)`` path;
* ``fsdp2``: Lightning ``ModelParallelStrategy`` with ``fully_shard`` on CUDA (``full_tensor()`` of GPU DTensors).

Each is compared, at every step, with the same model trained without sharding on the same GPU (``strategy="auto"``):
the same user-visible names in the same order, the same matrix views, CPU copies, and values equal up to the
reported maximum absolute difference (world size 1: no gradient averaging, the same kernels; expected 0).
With one GPU nothing is sharded across ranks: the two-rank gathering itself is covered by the CPU tests.

Run: ``python benchmarks/gpu_check_fsdp.py`` (exits 0 when every row passes, 1 otherwise, 2 without CUDA).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rmt_callbacks.analysis import resolve_views
from rmt_callbacks.monitors._gather import snapshot_module

STEPS = 3


class Net(pl.LightningModule):
    def __init__(self, layout: str) -> None:
        super().__init__()
        self.layout = layout
        self.fc = nn.Linear(64, 48)
        self.conv = nn.Conv1d(1, 4, 5)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)

    def configure_model(self) -> None:
        if self.layout == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            mesh = self.device_mesh["data_parallel"]
            for part in (self.fc, self.conv, self.attn):
                fully_shard(part, mesh=mesh)
            fully_shard(self, mesh=mesh)

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch  # (B, 64)
        q = x[:, :32].reshape(-1, 1, 32)  # (B, 1, 32)
        a, _ = self.attn(q, q, q)
        return self.fc(x).pow(2).mean() + self.conv(x.unsqueeze(1)).pow(2).mean() + a.pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Record(pl.Callback):
    def __init__(self) -> None:
        self.steps: dict[int, tuple[dict[str, torch.Tensor], list[tuple[str, str, tuple[int, ...]]]]] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        self._record(trainer, pl_module)

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = snapshot_module(trainer, pl_module)
        if model is not None:
            params = {n: p.detach().clone() for n, p in model.named_parameters()}
            self.steps[trainer.global_step] = (
                params,
                [(v.name, v.source, tuple(v.matrix.shape)) for v in resolve_views(model)],
            )


def fit(layout: str, root: Path) -> dict:
    torch.manual_seed(0)
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    strategy = {
        "local": lambda: "auto",
        "fsdp1": lambda: FSDPStrategy(auto_wrap_policy={nn.Linear, nn.Conv1d, nn.MultiheadAttention}),
        "fsdp2": lambda: ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1),
    }[layout]()
    record = Record()
    trainer = pl.Trainer(
        max_steps=STEPS, default_root_dir=root / layout, logger=False, callbacks=[record], accelerator="cuda",
        devices=1, strategy=strategy, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Net(layout), DataLoader(TensorDataset(x), batch_size=16))
    return record.steps


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing checked")
        return 2
    torch.set_num_threads(1)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        reference = fit("local", Path(tmp))
        print(f"{'layout':<6} {'steps':>5} {'names':>5} {'views':>5} {'cpu':>4} {'max |diff|':>11}")
        for layout in ("fsdp1", "fsdp2"):
            got = fit(layout, Path(tmp))
            names = all(list(got[s][0]) == list(reference[s][0]) for s in reference)
            views = all(got[s][1] == reference[s][1] for s in reference)
            cpu = all(t.device.type == "cpu" for s in got for t in got[s][0].values())
            diff = max(
                (got[s][0][n] - reference[s][0][n]).abs().max().item() for s in reference for n in reference[s][0]
            ) if names and sorted(got) == sorted(reference) else float("nan")  # fmt: skip
            row_ok = sorted(got) == sorted(reference) and names and views and cpu and diff <= 1e-6
            ok &= row_ok
            verdict = "PASS" if row_ok else "FAIL"
            print(f"{layout:<6} {len(got):>5} {names!s:>5} {views!s:>5} {cpu!s:>4} {diff:>11.3g} {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
