r"""Fit of Wigner's semicircle (docs/science.md, E11) by its first two moments."""

from __future__ import annotations

import math

import torch

from ..laws import WignerSemicircle
from ._result import SemicircleFit, check_size, pooled_values
from .distances import ks_distance

__all__ = ["fit_semicircle"]


def fit_semicircle(eigs: torch.Tensor) -> SemicircleFit:
    r"""Fit a Wigner semicircle to eigenvalues by the method of moments.

    The semicircle of centre :math:`\lambda_0` and radius :math:`R` has mean :math:`\lambda_0` and variance
    :math:`R^2/4`, so

    .. math::

        \hat\lambda_0 = \bar\lambda,\qquad \hat R = 2\sqrt{\tfrac1n \textstyle\sum_i (\lambda_i - \bar\lambda)^2}.

    For an :math:`N\times N` GOE matrix with off-diagonal variance :math:`v` (diagonal :math:`2v`) the expected
    eigenvalue variance is :math:`v(N + 1)`, so :math:`\hat R` estimates :math:`R = 2\sqrt{Nv}` with a relative
    bias of about :math:`1/(2N)`. The KS distance is taken to the fitted law, and the fit converges when it is
    below :func:`~rmt_callbacks.fits._result.ks_threshold` of :math:`n` (else it is rejected: numbers kept,
    ``converged=False``). Pooling matrices with different centres widens the fit; fit them one by one.

    Args:
        eigs: eigenvalues, any shape (pooled), at least :data:`~rmt_callbacks.fits.MIN_VALUES` of them.

    Returns:
        The fit; failed (``converged=False``, ``NaN`` parameters) for too few values or all-equal values;
        rejected (parameters kept, ``converged=False``) when the KS distance is too large.

    Raises:
        TypeError: ``eigs`` is not a real floating tensor.
        ValueError: ``eigs`` has non-finite entries (the message gives how many).

    References: Wigner, Ann. Math. 67 (1958) 325; arXiv:2412.20496.

    Example:
        >>> fit = fit_semicircle(torch.tensor([-1.0, 1.0] * 50))  # two points: no semicircle
        >>> fit.center, fit.radius, fit.converged, fit.message[:44]
        (0.0, 2.0, False, 'law rejected: KS = 0.3045 >= threshold 1.358')
    """
    x = pooled_values(eigs, name="eigs")
    failed = check_size(SemicircleFit, x)
    if failed is not None:
        return failed
    center = float(x.mean())
    radius = 2.0 * math.sqrt(float(((x - center) ** 2).mean()))
    return SemicircleFit.judged(
        ks_distance(x, WignerSemicircle(center=center, radius=radius)),
        x.numel(),
        "method of moments: centre = mean, radius = 2 std",
        center=center,
        radius=radius,
    )
