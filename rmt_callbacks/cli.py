"""``rmt-reproduce``: reproduce arXiv:2412.20496 and arXiv:2407.16427 in one command.

``rmt-reproduce all`` runs every figure (``fig2`` … ``fig5``); ``rbm``, ``ts2x2`` and ``hidden`` run single
experiments for scripting. Each writes PNG figures and ``summary.json`` into ``--out`` and logs an MLflow run per
experiment into ``--tracking-uri`` (default: the embedded ``sqlite:///mlflow.db``); a command that spans several
runs nests them under a parent run holding its figures and ``summary.json``. It prints one line per finished
experiment (its name, steps, seconds, folder and MLflow run) and, when stderr is a terminal, one progress bar
per experiment while it trains (with ``--jobs 1``: worker processes draw none).

Independent training runs go to ``--jobs`` worker processes (default: the CPUs this process may use, divided by
``--threads``); ``--devices``, ``--num-nodes`` and ``--strategy`` are Lightning's, for each run. Under ``ddp`` or
``srun`` every rank executes the command and only global rank zero records (README, "Running at scale").
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ._checks import positive

__all__ = ["build_parser", "main"]


def _common(quick_default: bool = True) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, default=Path("results"), help="directory for figures and summary.json")
    common.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    common.add_argument("--networks", type=int, default=None, help="ensemble size (default: set by --quick/--full)")
    common.add_argument(
        "--tracking-uri", default="sqlite:///mlflow.db", help="MLflow tracking URI (default: sqlite:///mlflow.db)"
    )
    common.add_argument("--experiment", default="rmt-reproduce", help="MLflow experiment name")
    common.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar even on a terminal (the line per finished experiment is still printed)",
    )
    common.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu (default: auto)")
    common.add_argument(
        "--threads",
        type=_positive(int),
        default=1,
        help="torch CPU threads (default: 1; the ensembles are many tiny matrices, where more threads cost time)",
    )
    common.add_argument(
        "--jobs",
        type=_positive(int),
        default=None,
        help="worker processes for independent training runs (default: the CPUs this process may use, "
        "divided by --threads; 1: one after another in this process)",
    )
    common.add_argument(
        "--devices",
        type=_devices,
        default=1,
        help="Lightning devices per node for each run: a count or 'auto' (default: 1)",
    )
    common.add_argument(
        "--num-nodes", type=_positive(int), default=1, help="Lightning nodes (machines) for each run (default: 1)"
    )
    common.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp, ddp_spawn (default: auto)")
    size = common.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="full", action="store_false", help="small ensembles, minutes on a CPU (default)")
    size.add_argument("--full", dest="full", action="store_true", help="the papers' sizes (meant for a GPU)")
    common.set_defaults(full=not quick_default)
    return common


def _positive(kind: type[int] | type[float]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        value = kind(text)  # argparse reports a ValueError here as "invalid int value: '2.5'"
        try:
            return positive("the value", value, integer=True) if kind is int else positive("the value", value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = kind.__name__
    return parse


def _devices(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(_positive(int)(text))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None


def _strategies() -> list[str]:
    from lightning.pytorch.strategies import StrategyRegistry

    return ["auto", *StrategyRegistry.available_strategies()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rmt-reproduce`` (every subcommand takes the common options)."""
    parser = argparse.ArgumentParser(prog="rmt-reproduce", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()
    for name, text in (
        ("all", "every figure below"),
        ("fig2", "RBM spectra at three learning rates with targets, and one pair's 2×2 GOE density close-up"),
        ("fig3", "RBM spacings collapsing on the β = 1 surmise, and ⟨S⟩ against √(α(μ² − κ)/|B|)"),
        ("fig4", "hidden-layer network: dynamics of the squared singular values, with fits (arXiv:2412.20496)"),
        ("fig5", "hidden-layer network: stationary density with one- and two-species fits (arXiv:2412.20496)"),
        ("scaling", "the linear scaling rule over the RBM and teacher–student grids, as nested MLflow runs"),
    ):
        command = sub.add_parser(name, parents=[common], help=text)
        if name in ("fig2", "fig3", "scaling"):
            command.add_argument(
                "--steps",
                type=_positive(int),
                default=None,
                help="SGD steps of every RBM setting (default: set by --quick/--full for each learning rate)",
            )
    rbm = sub.add_parser("rbm", parents=[common], help="one Gaussian RBM experiment (arXiv:2407.16427)")
    rbm.add_argument("--lr", type=_positive(float), default=0.1)
    rbm.add_argument("--batch-size", type=_positive(int), default=16)
    rbm.add_argument("--steps", type=_positive(int), default=None, help="SGD steps (default: set by --quick/--full)")
    ts = sub.add_parser("ts2x2", parents=[common], help="one 2×2 teacher–student experiment (arXiv:2407.16427)")
    ts.add_argument("--lr", type=_positive(float), default=0.1)
    ts.add_argument("--batch-size", type=_positive(int), default=16)
    ts.add_argument("--noise", type=_positive(float), default=0.1, help="noise strength ε")
    ts.add_argument("--epochs", type=_positive(int), default=10, help="epochs of 500 mini-batches (default: 10)")
    hidden = sub.add_parser(
        "hidden", parents=[common], help="hidden-layer network, rates and density (arXiv:2412.20496, Figs. 4-5)"
    )
    hidden.add_argument("--z", choices=("mat_1", "mat_2"), default="mat_1")
    hidden.add_argument("--epochs", type=_positive(int), default=100, help="epochs of the dynamics run (default: 100)")
    hidden.add_argument(
        "--steps", type=_positive(int), default=None, help="SGD steps of the density run (default: 3000)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rmt-reproduce`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.strategy not in (strategies := _strategies()):
        parser.error(f"argument --strategy: {args.strategy!r} is not a Lightning strategy; one of {strategies}")
    import torch

    from .reproduce import commands
    from .reproduce.console import console
    from .reproduce.launch import global_rank

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        with console():
            summary_path = commands.run(args)
    except KeyboardInterrupt:  # the workers are stopped and the runs marked; a traceback of where would say nothing
        print("rmt-reproduce: interrupted", file=sys.stderr)
        return 130
    if global_rank(args.devices) != 0:  # every rank ran the command; rank zero wrote it and says so
        return 0
    print(
        f"rmt-reproduce {args.command}: wrote {summary_path} in {time.perf_counter() - start:.0f} s; "
        f"MLflow experiment {args.experiment!r} in {args.tracking_uri}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
