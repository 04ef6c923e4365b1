"""Names that issue 16 moved say where they went, instead of a bare AttributeError."""

from __future__ import annotations

import pytest


def test_the_through_origin_fit_points_to_its_home_in_fits() -> None:
    from rmt_callbacks import dynamics, fits

    with pytest.raises(AttributeError, match=r"moved to rmt_callbacks\.fits\.fit_through_origin"):
        dynamics.fit_slope_through_origin  # noqa: B018
    assert fits.fit_through_origin([1.0, 2.0], [2.0, 4.0]).slope == 2.0
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        dynamics.no_such_name  # noqa: B018


def test_the_solver_global_points_to_the_argument() -> None:
    from rmt_callbacks.spectral import stacks

    with pytest.raises(AttributeError, match=r"pass solver="):
        stacks.EIGENSOLVER  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'STACK'"):
        stacks.STACK  # noqa: B018
