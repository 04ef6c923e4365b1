r"""The linear scaling rule as an advisor: keep :math:`\alpha/|B|` fixed when the batch size changes.

SGD with learning rate :math:`\alpha` and batch size :math:`|B|` is, in Langevin time :math:`t = n\alpha`, a
Langevin process with drift independent of :math:`\alpha` and noise strength :math:`\propto \alpha/|B|`
(docs/science.md, E4). Scaling :math:`\alpha \to k\alpha`, :math:`|B| \to k|B|` therefore leaves the dynamics in
:math:`t` and the stationary (Coulomb-gas) distribution unchanged; fluctuations of weights and eigenvalues scale as
:math:`\sqrt{\alpha/|B|}`.

**Range of validity.** The rule is the continuum limit: it holds while :math:`\alpha` is small compared with the
inverse curvature of the loss (e.g. the exact discrete Ornstein–Uhlenbeck result (E27) has a factor
:math:`2/(2-\alpha)`), while :math:`|B|` is small compared with the data set (sampling without replacement adds
:math:`1 - |B|/N_{\rm data}`), and while the gradient noise is not so small that other noise (dropout,
augmentation) dominates. It says nothing about optimisers with momentum or adaptive steps (Adam follows a
square-root rule); it is for plain SGD.

References: arXiv:2412.20496, arXiv:2407.16427.
"""

from __future__ import annotations

import math

__all__ = ["equivalent_batch_size", "equivalent_lr", "fluctuation_ratio", "noise_temperature"]

from ._checks import positive
from .dynamics.estimators import noise_temperature


def equivalent_lr(lr: float, batch_size: float, new_batch_size: float) -> float:
    r"""The learning rate that keeps :math:`\alpha/|B|` when the batch size becomes ``new_batch_size``.

    .. math:: \alpha' = \alpha\,|B'|/|B|

    Raises:
        ValueError: a non-positive argument.

    Example:
        >>> equivalent_lr(0.1, 16, 64)
        0.4
    """
    for name, value in (("lr", lr), ("batch_size", batch_size), ("new_batch_size", new_batch_size)):
        positive(name, value)
    return lr * new_batch_size / batch_size


def equivalent_batch_size(lr: float, batch_size: float, new_lr: float) -> float:
    r"""The batch size :math:`|B|\alpha'/\alpha` that keeps :math:`\alpha/|B|` when the learning rate is ``new_lr``.

    Rounding to an integer is the caller's choice.

    Example:
        >>> equivalent_batch_size(0.1, 16, 0.05)
        8.0
    """
    for name, value in (("lr", lr), ("batch_size", batch_size), ("new_lr", new_lr)):
        positive(name, value)
    return batch_size * new_lr / lr


def fluctuation_ratio(lr: float, batch_size: float, new_lr: float, new_batch_size: float) -> float:
    r"""How much wider eigenvalue fluctuations become: :math:`\sqrt{(\alpha'/|B'|)/(\alpha/|B|)}`.

    Example:
        >>> fluctuation_ratio(0.1, 16, 0.1, 64)
        0.5
    """
    return math.sqrt(noise_temperature(new_lr, new_batch_size) / noise_temperature(lr, batch_size))
