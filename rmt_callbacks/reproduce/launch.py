"""How a command's training runs are spread: its :class:`~rmt_callbacks.reproduce.runs.Settings`, and the rank.

Independent runs go to ``--jobs`` worker processes (:mod:`~rmt_callbacks.reproduce.pool`); each run spans
``--devices`` × ``--num-nodes`` with Lightning's ``--strategy``. Under ``ddp`` (Lightning re-runs the command line in
a child process per extra device) and under ``srun`` (SLURM starts every rank) every rank executes the whole
command, so each needs its global rank before the first ``Trainer`` exists: :func:`global_rank` reads it from the
environment, as Lightning does. Under ``ddp_spawn`` only the main process runs the command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .pool import available_cpus
from .runs import Settings

__all__ = ["global_rank", "settings_from_args", "several_devices"]

log = logging.getLogger(__name__)


def global_rank(devices: int | str = 1) -> int:
    """This process's global rank, read from the environment as Lightning reads it before a ``Trainer`` exists.

    ``RANK`` (torchrun); else ``NODE_RANK`` (or ``GROUP_RANK``) × ``devices`` + ``LOCAL_RANK`` (Lightning's ``ddp``
    launcher re-runs the command with them; a node started by hand has ``NODE_RANK``); else ``SLURM_PROCID`` (``srun``
    starts every rank; checked after ``LOCAL_RANK`` because a SLURM job that lets Lightning start its processes
    passes its own ``SLURM_PROCID`` on to them, as Lightning's ``rank_zero_only`` notes); else 0. After ``fit``,
    ``trainer.global_rank`` says the same. With ``devices="auto"`` the number of a node's rank is only a label:
    whether it is zero is exact.

    Example:
        >>> import os
        >>> os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) != "0" or global_rank() == 0
        True
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if {"LOCAL_RANK", "NODE_RANK", "GROUP_RANK"} & set(env):
        node = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")))
        return node * (devices if isinstance(devices, int) else 1) + int(env.get("LOCAL_RANK", "0"))
    return int(env.get("SLURM_PROCID", "0"))


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The :class:`~rmt_callbacks.reproduce.runs.Settings` of a parsed ``rmt-reproduce`` command line.

    ``--jobs`` defaults to the CPUs this process may use divided by ``--threads``; with several devices or nodes a
    run spans them all and the runs go one after another (``jobs = 1``), which an explicit ``--jobs N > 1`` is told
    once (on rank zero). ``rank`` is :func:`global_rank`.
    """
    devices, num_nodes = getattr(args, "devices", 1), getattr(args, "num_nodes", 1)
    threads, jobs = getattr(args, "threads", 1), getattr(args, "jobs", None)
    rank = global_rank(devices)
    if several_devices(args.accelerator, devices, num_nodes):
        if jobs is not None and jobs > 1 and rank == 0:
            log.warning(
                "--jobs %d: with --devices %s --num-nodes %d each training run spans every device, so the runs go "
                "one after another (--jobs 1); with --devices 1 --num-nodes 1 they run in %d processes at once",
                jobs, devices, num_nodes, jobs,
            )  # fmt: skip
        jobs = 1
    return Settings(
        out=args.out,
        seed=args.seed,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        progress=not args.no_progress and sys.stderr.isatty(),
        accelerator=args.accelerator,
        jobs=jobs or max(1, available_cpus() // threads),
        threads=threads,
        devices=devices,
        num_nodes=num_nodes,
        strategy=getattr(args, "strategy", "auto"),
        rank=rank,
    )


def several_devices(accelerator: str, devices: int | str, num_nodes: int) -> bool:
    """Whether a run would span several processes: several nodes, devices, or ``"auto"`` devices on a multi-GPU host.

    Example:
        >>> several_devices("cpu", 2, 1), several_devices("cpu", "auto", 1), several_devices("gpu", 1, 4)
        (True, False, True)
    """
    if num_nodes > 1 or (isinstance(devices, int) and devices > 1):
        return True
    if devices == "auto" and accelerator in ("auto", "gpu", "cuda"):
        import torch

        return torch.cuda.device_count() > 1
    return False
