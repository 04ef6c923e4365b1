"""Distributions and figures to TensorBoard: what its users look at for a spectrum over training.

Scalars reach a ``TensorBoardLogger`` like any Lightning logger (:func:`~rmt_callbacks.sinks.lightning.log_to_loggers`).
Here the rest: each analysed matrix's eigenvalues as a histogram at its step (TensorBoard's *histograms* and
*distributions* tabs show them over time) and the monitor's figures as images (the *images* tab, one slider per
tag), through the logger's ``SummaryWriter`` (``logger.experiment``) from rank zero. The inputs are plain arrays:
nothing here knows the math.

References: Lightning ``TensorBoardLogger``; ``torch.utils.tensorboard.SummaryWriter.add_histogram`` /
``add_image``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from lightning.pytorch.loggers import Logger, TensorBoardLogger

__all__ = ["log_histograms", "log_images", "tensorboard_loggers"]


def tensorboard_loggers(loggers: Sequence[Logger]) -> list[TensorBoardLogger]:
    """The ``TensorBoardLogger`` instances among ``loggers``.

    Examples:
        >>> tensorboard_loggers([])
        []
    """
    return [logger for logger in loggers if isinstance(logger, TensorBoardLogger)]


def log_histograms(loggers: Sequence[Logger], histograms: Mapping[str, np.ndarray], *, step: int) -> None:
    """One histogram per tag at ``step`` into every TensorBoard logger among ``loggers`` (others are left alone).

    Args:
        loggers: usually ``trainer.loggers``.
        histograms: tag to samples (any shape; non-finite values are dropped, an empty array is left out).
        step: the step the samples describe.
    """
    for logger in tensorboard_loggers(loggers):
        writer = logger.experiment
        for tag, values in histograms.items():
            flat = np.asarray(values, dtype=np.float64).ravel()
            flat = flat[np.isfinite(flat)]
            if flat.size:
                writer.add_histogram(tag, flat, global_step=step)


def log_images(loggers: Sequence[Logger], images: Mapping[str, np.ndarray], *, step: int) -> None:
    """RGB images ``(H, W, 3)`` uint8, one per tag at ``step``, into every TensorBoard logger among ``loggers``."""
    for logger in tensorboard_loggers(loggers):
        writer = logger.experiment
        for tag, rgb in images.items():
            writer.add_image(tag, rgb, global_step=step, dataformats="HWC")
