r"""The linear scaling rule on real data: an MLP on scikit-learn's digits at three (α, |B|), watched by
``DysonMonitor`` (and ``SpectrumMonitor`` at the first and last step), compared with ``rmt_callbacks.compare``.

SGD at learning rate α and batch size |B| is, in Langevin time t = α × steps, a Langevin process whose noise
strength is the temperature T = α/|B| (arXiv:2412.20496, arXiv:2407.16427; docs/science.md, E4 and "Linear
scaling rule"). Per seed, three runs start from one network and train for the same Langevin time:

* (α, |B|) = (0.05, 16) and (0.1, 32): equal T, so their eigenvalue fluctuation widths coincide;
* (0.1, 16): twice the temperature, so widths √2 larger; divided by √T all three coincide.

All runs go to one MLflow experiment, ``scaling-rule``. The example then reads each matrix's
``rmt/<m>/dyson_width`` and ``rmt/<m>/dyson_level_spacing`` (and ``rmt/dyson/noise_temperature``) back with
``MlflowClient``, prints the ratios of the stationary widths, what they should be and what
``rmt_callbacks.scaling`` advises, and draws the widths against Langevin time, averaged over the seeds
(``<out>/scaling_rule.png``). Last, ``rmt_callbacks.compare`` puts the three runs of the first seed side by side at
their last step (spectra with their Marchenko–Pastur fits, spacings, the Dyson width against T = α/|B| with the
c√T prediction) and logs that as a run of its own in ``scaling-rule``, tagged ``rmt.compare_of``; the example prints
its id and where its figures are (``compare/figures/<matrix>.png`` in that run, and a copy in ``<out>/compare/``).
The same from the command line: ``rmt-compare "lr=0.05 bs=16 seed=0" "lr=0.1 bs=32 seed=0" "lr=0.1 bs=16 seed=0"
--experiment scaling-rule --tracking-uri sqlite:///scaling_rule_runs/mlflow.db``.

    .venv/bin/python examples/scaling_rule.py             # 3 seeds, about a minute on a 2-core CPU
    .venv/bin/mlflow ui --backend-store-uri sqlite:///scaling_rule_runs/mlflow.db

Setup, and why:

* data: the 1797 8×8 digit images that ship with scikit-learn (no download), the three always-blank pixels
  dropped, the others standardised and scaled so that the inputs' covariance has largest eigenvalue 1 (a small
  curvature keeps the finite-α correction to the Langevin picture small at α = 0.1);
* model: ``61 -> 16 -> 10`` with tanh; cross-entropy with label smoothing 0.1, weight decay 0.01, plain ``SGD``
  (no momentum). Both terms give the loss a minimum at finite weights, about which SGD fluctuates. The narrow
  hidden layer keeps the levels of both matrices apart (in a wide one, the directions the task does not use
  decay to zero under the weight decay, and so does the level spacing);
* mini-batches drawn independently (with replacement), one stream per run, as the Langevin picture assumes;
* a shared warm start: per seed, the network is first trained (without logger or monitor) for Langevin time 60
  at the reference temperature, into its stationary state; the three runs start from that network. Without it,
  each run settles into a minimum of its own, and in trials the per-seed ratios spread about twice as wide;
* snapshots every 0.1 Langevin time (``every_n_train_steps = round(0.1/α)``, ``overhead_budget=None``) and the
  same ``window``, so every window covers the same Langevin time; estimates logged every 2.5;
* a ``SpectrumMonitor`` analyses the first and the last step only (no figures): it stores the spectra that
  ``compare`` reads; the training itself (weights, mini-batches) is the same with or without it;
* the stationary width of a run is the mean of its estimates over the second half of the run; ratios are taken
  per matrix and averaged over the two matrices, in eigenvalue units (``dyson_width × dyson_level_spacing``)
  and in the monitor's unit, the mean level spacing.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from rmt_callbacks import DysonMonitor, SpectrumMonitor, compare  # <- rmt
from rmt_callbacks.comparison import Comparison
from rmt_callbacks.scaling import equivalent_lr, fluctuation_ratio, noise_temperature

CONFIGS: tuple[tuple[float, int], ...] = ((0.05, 16), (0.1, 32), (0.1, 16))
"""(α, |B|): a reference, the same temperature at twice the batch, twice the temperature."""
WARM_START: tuple[float, int] = (0.1, 32)
"""(α, |B|) of the shared warm start: the reference temperature 0.05/16 = 0.1/32."""
SNAPSHOT_TIME = 0.1  # Langevin time between snapshots
LOG_TIME = 2.5  # Langevin time between logged estimates
EXPERIMENT = "scaling-rule"


def digits() -> TensorDataset:
    """scikit-learn's 1797 digit images ``(n, 61)`` and labels ``(n,)``.

    The three always-blank pixels are dropped, the others standardised, then all scaled by one factor so that the
    largest eigenvalue of the inputs' covariance is 1: the loss's curvature, and with it the finite-α correction
    to the Langevin picture (docs/science.md, the linear scaling rule), stays small at α = 0.1.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x[:, x.std(axis=0) > 0]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x /= math.sqrt(np.linalg.eigvalsh(x.T @ x / len(x))[-1])
    return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))


class DigitsMLP(pl.LightningModule):
    """``61 -> hidden -> 10`` with tanh; cross-entropy with label smoothing, weight decay in plain SGD.

    Label smoothing and weight decay give the loss a minimum at finite weights, about which SGD settles into
    stationary fluctuations; a narrow hidden layer keeps every direction of both matrices in use, so that their
    levels stay apart instead of decaying to zero under the weight decay.
    """

    def __init__(
        self,
        lr: float,
        inputs: int = 61,
        hidden: int = 16,
        weight_decay: float = 1e-2,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, 10))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y, label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def loader(data: TensorDataset, batch_size: int, steps: int, *key: int) -> DataLoader:
    """``steps`` mini-batches of ``batch_size`` drawn independently (with replacement), in an order fixed by
    ``key``; ``batch_size`` is the DataLoader's, where the monitor reads |B| from."""
    sampler = RandomSampler(data, replacement=True, num_samples=steps * batch_size, generator=generator(*key))
    return DataLoader(data, batch_size=batch_size, sampler=sampler)


def generator(*key: int) -> torch.Generator:
    """A torch generator seeded from ``key`` (non-negative ints: a seed and whatever tells the streams apart)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


def quiet_trainer(steps: int, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def warm_start(seed: int, data: TensorDataset, *, langevin_time: float, hidden: int = 16) -> dict[str, torch.Tensor]:
    """The network every configuration of ``seed`` starts from: initialised from ``seed``, then trained (no logger,
    no monitor) for ``langevin_time`` at the reference temperature, ``WARM_START``, into its stationary state."""
    lr, batch_size = WARM_START
    pl.seed_everything(seed, verbose=False)
    model = DigitsMLP(lr=lr, inputs=data.tensors[0].shape[1], hidden=hidden)
    steps = round(langevin_time / lr)
    if steps > 0:
        quiet_trainer(steps, logger=False).fit(model, train_dataloaders=loader(data, batch_size, steps, seed))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train(
    lr: float,
    batch_size: int,
    seed: int,
    start: dict[str, torch.Tensor],
    data: TensorDataset,
    *,
    langevin_time: float,
    window: int,
    tracking_uri: str,
    root_dir: str | Path,
) -> str:
    """Train one configuration from the weights ``start`` for ``langevin_time`` (α × steps); return the MLflow run
    id. The mini-batches depend on ``seed`` and the configuration: the runs' gradient noises are independent."""
    steps, stride, every = round(langevin_time / lr), round(SNAPSHOT_TIME / lr), max(1, round(LOG_TIME / lr))
    pl.seed_everything(seed, verbose=False)
    model = DigitsMLP(lr=lr, inputs=data.tensors[0].shape[1], hidden=start["net.0.weight"].shape[0])
    model.load_state_dict(start)
    logger = MLFlowLogger(
        experiment_name=EXPERIMENT,
        run_name=f"lr={lr:g} bs={batch_size} seed={seed}",
        tracking_uri=tracking_uri,
        tags={"lr": f"{lr:g}", "batch_size": str(batch_size), "seed": str(seed)},
    )
    monitor = DysonMonitor(  # <- rmt
        every_n_train_steps=stride, log_every_n_steps=every, window=window, overhead_budget=None
    )
    spectra = SpectrumMonitor(every_n_train_steps=steps, figure_every_n_analyses=None)  # <- rmt: for compare
    trainer = quiet_trainer(
        steps,
        logger=logger,
        callbacks=[monitor, spectra],  # <- rmt
        default_root_dir=root_dir,
        log_every_n_steps=every,
    )
    trainer.fit(model, train_dataloaders=loader(data, batch_size, steps, seed, round(lr * 1e6), batch_size))
    return logger.run_id


@dataclass(frozen=True)
class Widths:
    """What ``DysonMonitor`` logged in one run, read back from MLflow.

    ``time`` ``(K,)`` are the Langevin times of the K logged estimates; per matrix, ``width`` ``(K,)`` is
    ``rmt/<m>/dyson_width`` (in level spacings) and ``spacing`` ``(K,)`` is ``rmt/<m>/dyson_level_spacing``, so
    that ``width × spacing`` is the width in eigenvalue units.
    """

    run_id: str
    lr: float
    batch_size: int
    temperature: float
    time: np.ndarray
    width: dict[str, np.ndarray]
    spacing: dict[str, np.ndarray]

    def eigenvalue_width(self, matrix: str) -> np.ndarray:
        return self.width[matrix] * self.spacing[matrix]

    def stationary(self, start: float, *, eigenvalue_units: bool = True) -> dict[str, float]:
        """Per matrix, the mean width over the estimates logged at Langevin time >= ``start``."""
        keep = self.time >= start - 1e-9
        pick = self.eigenvalue_width if eigenvalue_units else self.width.__getitem__
        return {m: float(pick(m)[keep].mean()) for m in self.width}


def read_widths(client: MlflowClient, run_id: str) -> Widths:
    """Every matrix's ``dyson_width`` and ``dyson_level_spacing``, and the monitor's ``rmt/dyson/lr``,
    ``rmt/dyson/batch_size`` and ``rmt/dyson/noise_temperature``, from the MLflow run ``run_id``."""
    metrics = client.get_run(run_id).data.metrics
    matrices = sorted(k.removesuffix("/dyson_width") for k in metrics if k.endswith("/dyson_width"))
    if not matrices:
        raise RuntimeError(f"run {run_id} logged no dyson_width")

    def history(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    width = {m: history(f"{m}/dyson_width") for m in matrices}
    spacing = {m: history(f"{m}/dyson_level_spacing") for m in matrices}
    steps = sorted(set.intersection(*(set(h) for h in (*width.values(), *spacing.values()))))
    lr = metrics["rmt/dyson/lr"]
    return Widths(
        run_id=run_id,
        lr=lr,
        batch_size=int(metrics["rmt/dyson/batch_size"]),
        temperature=metrics["rmt/dyson/noise_temperature"],
        time=np.array(steps, dtype=float) * lr,  # a constant α: Langevin time is α × step
        width={m.removeprefix("rmt/"): np.array([h[s] for s in steps]) for m, h in width.items()},
        spacing={m.removeprefix("rmt/"): np.array([h[s] for s in steps]) for m, h in spacing.items()},
    )


@dataclass(frozen=True)
class Ratios:
    """Per seed, the stationary widths of ``CONFIGS[1]`` and ``CONFIGS[2]`` over those of ``CONFIGS[0]``.

    A ratio is taken per matrix and then averaged over the matrices: ``eigenvalue`` ``(seeds, 2)`` in eigenvalue
    units (the columns: b/a, c/a), ``spacing`` ``(seeds, 2)`` in the monitor's units, level spacings.
    """

    seeds: list[int]
    widths: list[list[Widths]]  # [seed][config]
    start: float  # Langevin time from which the widths are averaged
    window_time: float  # Langevin time a window covers: estimates before it come from a window still filling
    eigenvalue: np.ndarray
    spacing: np.ndarray

    @staticmethod
    def of(seeds: Sequence[int], widths: list[list[Widths]], start: float, window_time: float) -> Ratios:
        def ratios(runs: list[Widths], eigenvalue_units: bool) -> tuple[float, float]:
            a, b, c = (w.stationary(start, eigenvalue_units=eigenvalue_units) for w in runs)
            return float(np.mean([b[m] / a[m] for m in a])), float(np.mean([c[m] / a[m] for m in a]))

        eigenvalue = np.array([ratios(runs, True) for runs in widths])
        spacing = np.array([ratios(runs, False) for runs in widths])
        return Ratios(list(seeds), widths, start, window_time, eigenvalue, spacing)

    @property
    def normalized(self) -> np.ndarray:
        """The ratios of the widths divided by √T: ``(seeds, 2)``, equal to 1 under the linear scaling rule."""
        temperatures = np.array([[w.temperature for w in runs] for runs in self.widths])  # (seeds, 3)
        return self.eigenvalue * np.sqrt(temperatures[:, :1] / temperatures[:, 1:])


def summary(values: np.ndarray) -> str:
    """``mean ± std`` over seeds (the spread of one seed's ratio; the mean's standard error is std/√n)."""
    return f"{values.mean():.3f}" if len(values) < 2 else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def report(ratios: Ratios) -> str:
    """The ratios, what the linear scaling rule expects, and the advisor's suggestion, as lines to print."""
    (a_lr, a_bs), (b_lr, b_bs), (c_lr, c_bs) = CONFIGS
    a = f"({a_lr:g}, {a_bs})"
    lines = [
        f"stationary eigenvalue fluctuation widths (Langevin time >= {ratios.start:g}) over those of (α, |B|) = "
        f"{a}, mean ± std over {len(ratios.seeds)} seed(s); in eigenvalue units (dyson_width × "
        "dyson_level_spacing) and in the monitor's level spacings:",
    ]
    for column, (lr, bs) in enumerate(((b_lr, b_bs), (c_lr, c_bs))):
        expected = fluctuation_ratio(a_lr, a_bs, lr, bs)
        lines.append(
            f"  ({lr:g}, {bs}) / {a}: {summary(ratios.eigenvalue[:, column])} (spacings: "
            f"{summary(ratios.spacing[:, column])}); expected √(T'/T) = {expected:.3f}; divided by √T: "
            f"{summary(ratios.normalized[:, column])} (expected 1)"
        )
    lines.append(
        f"advisor: to train at |B|={b_bs} with the temperature of {a} use lr={equivalent_lr(a_lr, a_bs, b_bs):g} "
        "(rmt_callbacks.scaling.equivalent_lr)"
    )
    return "\n".join(lines)


def figure(ratios: Ratios, path: Path) -> None:
    """Per matrix, the width in eigenvalue units and the width/√T against Langevin time (mean over seeds, band
    ± one std); beside them the per-seed ratios. Saved to ``path``."""
    from matplotlib.figure import Figure  # the object API: no pyplot, no GUI backend

    matrices = list(ratios.widths[0][0].width)
    fig = Figure(figsize=(13, 3.2 * len(matrices)), layout="constrained")
    layout = [[f"raw {m}", f"norm {m}", "ratios"] for m in matrices]
    axes = fig.subplot_mosaic(layout, width_ratios=[1, 1, 0.8])
    colours = ("tab:blue", "tab:orange", "tab:red")
    for index, ((lr, bs), colour) in enumerate(zip(CONFIGS, colours, strict=True)):
        runs = [w[index] for w in ratios.widths]
        steps = min(len(r.time) for r in runs)
        t = runs[0].time[:steps]
        full = t >= ratios.window_time - 1e-9  # the first estimates come from a window still filling
        label = f"α={lr:g}, |B|={bs}: T={noise_temperature(lr, bs):.2e}"
        for m in matrices:
            values = np.array([r.eigenvalue_width(m)[:steps] for r in runs])[:, full]
            for key, scale in ((f"raw {m}", 1.0), (f"norm {m}", 1 / math.sqrt(runs[0].temperature))):
                mean, std = values.mean(axis=0) * scale, values.std(axis=0) * scale
                axes[key].plot(t[full], mean, color=colour, label=label, lw=1.5, ls="--" if index == 1 else "-")
                axes[key].fill_between(t[full], mean - std, mean + std, color=colour, alpha=0.15, lw=0)
    for m in matrices:
        axes[f"raw {m}"].set(ylabel="width × spacing (eigenvalue units)", title=f"{m}: eigenvalue fluctuation width")
        axes[f"norm {m}"].set(ylabel="width / √T", title=f"{m}: divided by √T")
        for key in (f"raw {m}", f"norm {m}"):
            axes[key].axvspan(ratios.start, axes[key].get_xlim()[1], color="0.92", zorder=0)
            axes[key].set_xlabel("Langevin time α × steps")
            axes[key].title.set_fontsize(10)
    title = "bands: ± 1 std over seeds; grey: averaged"
    axes[f"raw {matrices[0]}"].legend(fontsize=8, title=title, title_fontsize=8, loc="upper left")
    ratio_ax, n = axes["ratios"], len(ratios.seeds)
    jitter = np.linspace(-0.12, 0.12, n) if n > 1 else np.zeros(1)
    for column, target in enumerate((1.0, math.sqrt(2))):
        ratio_ax.scatter(column + jitter, ratios.eigenvalue[:, column], color="k", s=14, zorder=3, label=None)
        ratio_ax.scatter(column + 0.3 + jitter, ratios.spacing[:, column], color="0.6", s=10, marker="o")
        ratio_ax.hlines(target, column - 0.25, column + 0.45, color=colours[2 * column], lw=2)
    ratio_ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    ratio_ax.set_xticks([0.15, 1.15], ["(0.1, 32)\n÷ (0.05, 16)\nexpected 1", "(0.1, 16)\n÷ (0.05, 16)\nexpected √2"])
    title = f"per seed ({n}): black eigenvalue units,\ngrey level spacings (dyson_width)"
    ratio_ax.set(xlim=(-0.5, 1.8), ylabel="ratio of stationary widths", title=title)
    ratio_ax.title.set_fontsize(10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def run(
    seeds: Sequence[int],
    langevin_time: float,
    warm_start_time: float,
    *,
    window: int,
    tracking_uri: str,
    root_dir: str | Path,
    hidden: int = 16,
    stationary_from: float | None = None,
) -> Ratios:
    """Train every configuration for every seed, read the widths back from MLflow, compare them over the
    estimates logged from ``stationary_from`` (default: the second half of the runs)."""
    data, client = digits(), MlflowClient(tracking_uri=tracking_uri)
    widths = []
    for seed in seeds:
        start = warm_start(seed, data, langevin_time=warm_start_time, hidden=hidden)
        ids = [
            train(lr, bs, seed, start, data, langevin_time=langevin_time, window=window, tracking_uri=tracking_uri,
                  root_dir=root_dir)
            for lr, bs in CONFIGS
        ]  # fmt: skip
        widths.append([read_widths(client, i) for i in ids])
    start_time = langevin_time / 2 if stationary_from is None else stationary_from
    return Ratios.of(seeds, widths, start_time, window * SNAPSHOT_TIME)


def compare_one_seed(ratios: Ratios, tracking_uri: str, out: Path) -> Comparison:
    """The three runs of the first seed side by side at their last step, logged by ``rmt_callbacks.compare`` as a
    run of its own in the same experiment (tagged ``rmt.compare_of``) and written to ``out``."""
    run_ids = [w.run_id for w in ratios.widths[0]]
    return compare(run_ids, tracking_uri=tracking_uri, out=out)  # <- rmt


def main(argv: Sequence[str] | None = None) -> tuple[Ratios, Comparison]:
    """Train, print the ratios, draw them, compare the first seed's runs; return the ratios and the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--langevin-time", type=float, default=40.0, help="α × steps of every monitored run")
    parser.add_argument("--warm-start-time", type=float, default=60.0, help="α × steps of the shared warm start")
    parser.add_argument("--window", type=int, default=50, help="DysonMonitor's window, in snapshots")
    parser.add_argument("--hidden", type=int, default=16, help="width of the hidden layer")
    parser.add_argument("--out", default="scaling_rule_runs", help="directory of the MLflow store and the figures")
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite:///<out>/mlflow.db")
    parser.add_argument("--figure", default=None, help="default: <out>/scaling_rule.png")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # matrices this small: a second thread only contends (tenfold slower on 2 cores)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{out.resolve()}/mlflow.db"
    started = time.perf_counter()
    seeds, times = range(args.first_seed, args.first_seed + args.seeds), (args.langevin_time, args.warm_start_time)
    ratios = run(seeds, *times, window=args.window, tracking_uri=uri, root_dir=out, hidden=args.hidden)
    print(report(ratios))
    path = Path(args.figure) if args.figure else out / "scaling_rule.png"
    figure(ratios, path)
    print(f"figure {path} (widths against Langevin time, over the seeds)")
    compared = compare_one_seed(ratios, uri, out / "compare")
    artifacts = MlflowClient(tracking_uri=uri).get_run(compared.run_id).info.artifact_uri
    print(
        f"seed {args.first_seed}'s three runs compared at their last step: run {compared.run_id} "
        f"(tag rmt.compare_of), figures compare/figures/<matrix>.png in {artifacts} and in {out / 'compare'}"
    )
    print(f"MLflow experiment {EXPERIMENT!r} in {uri}; {time.perf_counter() - started:.0f} s")
    return ratios, compared


if __name__ == "__main__":
    main()
