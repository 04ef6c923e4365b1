r"""Estimators of Dyson Brownian motion on eigenvalue trajectories (docs/science.md, E4–E13).

A *trajectory* is a tensor of shape ``(T, ..., n)``: ``T`` consecutive snapshots (one per SGD step, or every
``dt`` units of Langevin time) of ``n`` eigenvalues, ascending, with any batch dimensions between. Langevin time
is :math:`t = n_{\rm steps}\,\alpha` (one SGD step is :math:`\delta t = \alpha`). For a symmetric matrix the
eigenvalues obey (E5)

.. math::

    d\lambda_i = \Big[K_i + \beta D \sum_{j \ne i} \frac{1}{\lambda_i - \lambda_j}\Big] dt + \sqrt{2D}\, dB_i ,

so :math:`D` is half the variance of an increment per unit time and the noise temperature of the stationary
Coulomb gas; for SGD, :math:`D \propto \alpha/|B|` (the linear scaling rule).

References: arXiv:2412.20496, arXiv:2407.16427.
"""

from __future__ import annotations

import math

import torch

from .._checks import positive

__all__ = [
    "coulomb_repulsion",
    "diffusion_coefficient",
    "drift",
    "fluctuation_width",
    "noise_temperature",
    "predicted_pair_spacing",
    "wishart_repulsion",
]


def _check_trajectory(trajectory: torch.Tensor) -> torch.Tensor:
    if not isinstance(trajectory, torch.Tensor) or not trajectory.is_floating_point():
        raise TypeError(f"trajectory must be a floating tensor, got {type(trajectory).__name__}")
    if trajectory.ndim < 2 or trajectory.shape[0] < 2:
        raise ValueError(f"trajectory must have shape (T, ..., n) with T >= 2, got {tuple(trajectory.shape)}")
    return trajectory


def noise_temperature(lr: float, batch_size: float) -> float:
    r"""The effective temperature :math:`\alpha/|B|` of SGD (E4).

    Raises:
        ValueError: ``lr`` or ``batch_size`` not positive.

    Example:
        >>> noise_temperature(0.1, 16)
        0.00625
    """
    positive("lr", lr, owner="noise_temperature")
    positive("batch_size", batch_size, owner="noise_temperature")
    return lr / batch_size


def drift(trajectory: torch.Tensor, *, dt: float = 1.0) -> torch.Tensor:
    r"""Mean drift per unit time of every mode, :math:`\overline{\Delta\lambda}/\delta t`: shape ``(..., n)``.

    Example:
        >>> traj = torch.arange(5.0).reshape(5, 1) * torch.tensor([1.0, 2.0])
        >>> drift(traj).tolist()
        [1.0, 2.0]
    """
    inc = _check_trajectory(trajectory).diff(dim=0)
    return inc.mean(dim=0) / dt


def fluctuation_width(trajectory: torch.Tensor) -> torch.Tensor:
    r"""Stationary fluctuation width of every mode: the standard deviation over time, shape ``(..., n)``.

    In the harmonic picture (E10) a mode's width is :math:`\sigma \propto \sqrt{\alpha/|B|}`; the trajectory
    should be taken after relaxation.

    Example:
        >>> fluctuation_width(torch.tensor([[0.0], [2.0], [0.0], [2.0]])).tolist()
        [1.0]
    """
    return _check_trajectory(trajectory).std(dim=0, unbiased=False)


def diffusion_coefficient(trajectory: torch.Tensor, *, dt: float = 1.0) -> torch.Tensor:
    r"""Diffusion coefficient of every mode from its increments, :math:`D = \mathrm{Var}(\Delta\lambda)/(2\delta t)`.

    Exact for (E5) as :math:`\delta t \to 0`; the drift contributes at order :math:`\delta t` and is removed
    with the mean increment. Shape ``(..., n)``.

    Args:
        trajectory: ``(T, ..., n)`` eigenvalues at spacing ``dt``.
        dt: time between snapshots (Langevin time: the learning rate per SGD step).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> walk = (0.2 * torch.randn(20_000, 1, generator=g, dtype=torch.float64)).cumsum(0)
        >>> round(float(diffusion_coefficient(walk)[0]), 2)  # D = 0.2² / 2
        0.02
    """
    inc = _check_trajectory(trajectory).diff(dim=0)
    return inc.var(dim=0, unbiased=True) / (2.0 * dt)


def coulomb_repulsion(eigenvalues: torch.Tensor) -> torch.Tensor:
    r"""The induced Coulomb term of (E5), :math:`\sum_{j \ne i} 1/(\lambda_i - \lambda_j)`, shape ``(..., n)``.

    Multiply by :math:`\beta D` for the drift it causes. Degenerate levels give infinities.

    Example:
        >>> [round(v, 6) for v in coulomb_repulsion(torch.tensor([0.0, 1.0, 3.0])).tolist()]
        [-1.333333, 0.5, 0.833333]
    """
    diff = eigenvalues.unsqueeze(-1) - eigenvalues.unsqueeze(-2)
    eye = torch.eye(eigenvalues.shape[-1], dtype=torch.bool, device=eigenvalues.device)
    return torch.where(eye, torch.zeros_like(diff), 1.0 / torch.where(eye, torch.ones_like(diff), diff)).sum(-1)


def wishart_repulsion(x: torch.Tensor, rows: int) -> torch.Tensor:
    r"""The repulsion of the eigenvalues :math:`x` of :math:`W^\top W` (E6).

    .. math:: M + \sum_{j\ne i}\frac{x_i + x_j}{x_i - x_j}


    Multiply by :math:`D` for its drift. ``rows`` is :math:`M`.

    Example:
        >>> wishart_repulsion(torch.tensor([1.0, 3.0]), rows=2).tolist()
        [0.0, 4.0]
    """
    diff = x.unsqueeze(-1) - x.unsqueeze(-2)
    total = x.unsqueeze(-1) + x.unsqueeze(-2)
    eye = torch.eye(x.shape[-1], dtype=torch.bool, device=x.device)
    terms = torch.where(eye, torch.zeros_like(diff), total / torch.where(eye, torch.ones_like(diff), diff))
    return rows + terms.sum(-1)


def predicted_pair_spacing(lr: float, batch_size: float, scale: float) -> float:
    r"""Linear-response mean spacing of a near-degenerate pair, :math:`\langle S\rangle = \sqrt{2\pi\,\alpha\,x^*/|B|}`.

    For a Gram-eigenvalue pair at :math:`x^*` under isotropic Gaussian noise (E24; the RBM with ``scale`` =
    :math:`x^* = \mu^2 - \kappa`). The papers' measured slope against :math:`\sqrt{\alpha x^*/|B|}` is 2.28 rather
    than :math:`\sqrt{2\pi} = 2.51` (non-universal corrections, docs/science.md#gaussian-rbm).

    Example:
        >>> round(predicted_pair_spacing(0.1, 16, 4.618034), 4)
        0.4259
    """
    return math.sqrt(2.0 * math.pi * noise_temperature(lr, batch_size) * scale)
