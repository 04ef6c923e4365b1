"""Fit results: metric dictionaries, the fitted law, honest failures and the input checks every fit shares."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch

from rmt_callbacks.fits import (
    MIN_VALUES,
    FitResult,
    MarchenkoPasturFit,
    PairDensityFit,
    SemicircleFit,
    SurmiseFit,
    TwoSpeciesFit,
    fit_marchenko_pastur,
    fit_pair_density,
    fit_semicircle,
    fit_surmise,
    fit_two_species,
)
from rmt_callbacks.fits.surmise import MIN_SPACINGS
from rmt_callbacks.laws import BetaSurmise, GOEPairDensity, MarchenkoPastur, TwoSpeciesPairDensity, WignerSemicircle

FITS: dict[str, Callable[[torch.Tensor], FitResult]] = {
    "semicircle": fit_semicircle,
    "marchenko_pastur": lambda x: fit_marchenko_pastur(x, ratio=0.5),
    "surmise": fit_surmise,
    "pair_density": fit_pair_density,
    "two_species": fit_two_species,
}


def test_converged_metrics_hold_every_numeric_field_then_ks_and_converged() -> None:
    fit = MarchenkoPasturFit(
        ks=0.02,
        n=800,
        converged=True,
        message="ok",
        sigma2=1.5,
        ratio=0.25,
        lambda_minus=0.375,
        lambda_plus=3.375,
        num_spikes=3,
        sigma2_std=0.01,
    )
    assert fit.to_metrics("layer/mp_") == {
        "layer/mp_sigma2": 1.5,
        "layer/mp_ratio": 0.25,
        "layer/mp_lambda_minus": 0.375,
        "layer/mp_lambda_plus": 3.375,
        "layer/mp_num_spikes": 3.0,
        "layer/mp_sigma2_std": 0.01,
        "layer/mp_ks": 0.02,
        "layer/mp_converged": 1.0,
    }
    assert all(type(v) is float for v in fit.to_metrics().values())


@pytest.mark.parametrize(
    ("fit", "law"),
    [
        (SemicircleFit(0.1, 20, True, "", center=1.0, radius=2.0), WignerSemicircle(center=1.0, radius=2.0)),
        (
            MarchenkoPasturFit(
                0.1, 20, True, "", sigma2=2.0, ratio=3.0, lambda_minus=0, lambda_plus=1, num_spikes=0, sigma2_std=0.1
            ),
            MarchenkoPastur(sigma2=2.0, ratio=3.0),
        ),
        (SurmiseFit(0.1, 20, True, "", beta=1.7, beta_std=0.2), BetaSurmise(beta=1.7)),
        (PairDensityFit(0.1, 20, True, "", center=2.0, sigma=0.1), GOEPairDensity(center=2.0, sigma=0.1)),
        (
            TwoSpeciesFit(0.1, 20, True, "", center=2.0, sigma1=0.1, sigma2=0.2),
            TwoSpeciesPairDensity(center=2.0, sigma1=0.1, sigma2=0.2),
        ),
    ],
)
def test_law_of_a_converged_fit(fit: FitResult, law: object) -> None:
    assert fit.law() == law


@pytest.mark.parametrize("cls", [SemicircleFit, MarchenkoPasturFit, SurmiseFit, PairDensityFit, TwoSpeciesFit])
def test_a_failed_result_has_nan_parameters_and_only_a_converged_metric(cls: type[FitResult]) -> None:
    fit = cls.failed(7, "because")
    assert not fit.converged and fit.n == 7 and fit.message == "because" and math.isnan(fit.ks)
    params = [f.name for f in dataclasses.fields(fit) if f.name not in ("ks", "n", "converged", "message")]
    assert params and all(math.isnan(getattr(fit, name)) for name in params)
    assert fit.to_metrics("p/") == {"p/converged": 0.0}
    with pytest.raises(ValueError, match=r"did not converge.*because"):
        fit.law()


def test_results_are_frozen() -> None:
    fit = SurmiseFit(0.1, 20, True, "", beta=1.0, beta_std=0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.beta = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("name", FITS)
def test_too_few_values_give_a_failed_fit(name: str) -> None:
    values = torch.linspace(0.5, 1.5, MIN_VALUES - 1, dtype=torch.float64)
    fit = FITS[name](values)
    assert not fit.converged
    what, need = {"marchenko_pastur": ("non-structural levels", MIN_VALUES), "surmise": ("spacings", MIN_SPACINGS)}.get(
        name, ("values", MIN_VALUES)
    )
    assert fit.message == f"too few {what} to fit: got {MIN_VALUES - 1}, need at least {need}"
    assert fit.to_metrics("x/") == {"x/converged": 0.0}


@pytest.mark.parametrize("name", FITS)
def test_all_equal_values_give_a_failed_fit(name: str) -> None:
    fit = FITS[name](torch.full((50,), 1.25))
    assert not fit.converged and fit.n == 50
    assert fit.message == "degenerate input: all 50 values equal 1.25"


@pytest.mark.parametrize("name", FITS)
def test_non_finite_values_are_an_error_naming_the_count(name: str) -> None:
    values = torch.linspace(0.5, 1.5, 40).reshape(4, 10)
    values[1, 2], values[3, 3] = math.nan, math.inf
    with pytest.raises(ValueError, match="2 of its 40 values are NaN or Inf"):
        FITS[name](values)


@pytest.mark.parametrize("name", FITS)
@pytest.mark.parametrize("bad", [[1.0, 2.0], torch.arange(20), torch.ones(20, dtype=torch.complex64)])
def test_non_float_tensors_are_type_errors(name: str, bad: object) -> None:
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor|must have a real floating dtype"):
        FITS[name](bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", FITS)
def test_any_shape_is_pooled_and_float32_is_accepted(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.rand(6, 7, 8, generator=g, dtype=torch.float64) + 0.5
    flat, shaped32 = FITS[name](values.reshape(-1)), FITS[name](values.float())
    # uniform values are no Marchenko-Pastur sample: that fit is rejected, but its numbers are there all the same
    assert flat.fitted and shaped32.fitted and shaped32.n == 336
    # float32 rounding of the inputs (1e-7 relative) moves the estimates by about as much.
    for key, value in flat.to_metrics().items():
        assert shaped32.to_metrics()[key] == pytest.approx(value, rel=1e-4, abs=1e-4)
