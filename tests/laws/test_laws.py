"""The spectral laws: one invariant battery over every law, then independent references.

Invariants (every law, several parameter sets): normalisation by ``scipy.integrate.quad`` (Marchenko–Pastur's
atom included), cdf monotone from 0 to 1, pdf = d cdf/dx, pdf = 0 outside the support, cdf = ∫ pdf, dtype kept.
References: scipy.stats distributions, closed-form moments, the numbers of docs/science.md (reference numbers,
E14), and the one-point densities E12/E30 recomputed as numerical marginals of their two-level densities.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.integrate as integrate
import scipy.stats as stats
import torch

from rmt_callbacks.laws import (
    BetaSurmise,
    GOEPairDensity,
    MarchenkoPastur,
    PoissonSpacing,
    SpectralLaw,
    TwoSpeciesPairDensity,
    WignerSemicircle,
    WignerSurmise,
    surmise_constants,
)

LAWS: list[SpectralLaw] = [
    WignerSemicircle(center=0.0, radius=1.0),
    WignerSemicircle(center=1.5, radius=0.3),
    WignerSemicircle(center=-2.0, radius=5.0),
    MarchenkoPastur(sigma2=1.0, ratio=0.25),
    MarchenkoPastur(sigma2=2.0, ratio=0.5),
    MarchenkoPastur(sigma2=0.7, ratio=1.0),
    MarchenkoPastur(sigma2=1.0, ratio=2.0),
    MarchenkoPastur(sigma2=3.0, ratio=4.0),
    BetaSurmise(beta=0.5),
    BetaSurmise(beta=2.5),
    BetaSurmise(beta=7.0),
    WignerSurmise(beta=1),
    WignerSurmise(beta=2),
    WignerSurmise(beta=4),
    PoissonSpacing(),
    GOEPairDensity(center=1.3, sigma=0.7),
    GOEPairDensity(center=0.0, sigma=1.0),
    GOEPairDensity(center=2.0, sigma=0.006),
    TwoSpeciesPairDensity(center=0.0, sigma1=1.0, sigma2=1.0),
    TwoSpeciesPairDensity(center=1.0, sigma1=0.5, sigma2=1.5),
    TwoSpeciesPairDensity(center=2.0, sigma1=0.011, sigma2=0.006),
]
FINITE_END = [law for law in LAWS if any(math.isfinite(end) for end in law.support)]


def _pdf(law: SpectralLaw):
    return lambda x: float(law.pdf(torch.tensor(x, dtype=torch.float64)))


def _cdf(law: SpectralLaw, x: float) -> float:
    return float(law.cdf(torch.tensor(x, dtype=torch.float64)))


def _quantile(law: SpectralLaw, p: float) -> float:
    """Bisection of the cdf on [-1e6, 1e6] (every law here has all its mass well inside)."""
    lo, hi = -1e6, 1e6
    for _ in range(120):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _cdf(law, mid) < p else (lo, mid)
    return hi


@functools.cache
def _range(law: SpectralLaw) -> tuple[float, float]:
    """The support, with infinite ends cut where less than 1e-14 of the mass lies beyond."""
    lo, hi = law.support
    return max(lo, _quantile(law, 1e-14)), min(hi, _quantile(law, 1.0 - 1e-14))


def _atom(law: SpectralLaw) -> float:
    return float(getattr(law, "atom", 0.0))


def _integral(law: SpectralLaw, a: float, b: float) -> float:
    edge = getattr(law, "lambda_minus", None)  # MP with q > 1: the density starts at lambda_- > 0, not at 0
    points = [edge] if edge is not None and a < edge < b else None
    value, error = integrate.quad(_pdf(law), a, b, points=points, limit=200, epsabs=1e-10, epsrel=1e-10)
    assert error < 1e-9
    return value


# ---------------------------------------------------------------- invariant battery


@pytest.mark.parametrize("law", LAWS, ids=repr)
def test_mass_is_one(law: SpectralLaw) -> None:
    a, b = _range(law)
    # MP with q > 1: the continuous part carries 1/q, the atom at zero the rest.
    assert _integral(law, a, b) + _atom(law) == pytest.approx(1.0, abs=1e-8)
    if isinstance(law, MarchenkoPastur) and law.ratio > 1:
        assert _integral(law, a, b) == pytest.approx(1.0 / law.ratio, abs=1e-8)


@pytest.mark.parametrize("law", LAWS, ids=repr)
def test_cdf_is_monotone_from_zero_to_one(law: SpectralLaw) -> None:
    a, b = _range(law)
    pad = 0.1 * (b - a)
    x = torch.linspace(a - pad, b + pad, 4001, dtype=torch.float64)
    cdf = law.cdf(x)
    assert bool((cdf.diff() >= 0).all())
    assert float(cdf[0]) < 1e-13 and float(cdf[-1]) > 1 - 1e-13
    lo, hi = law.support
    if math.isfinite(lo):
        assert bool((law.cdf(torch.tensor([lo - 1.0, lo - 1e-9, -1e300], dtype=torch.float64)) == 0).all())
    if math.isfinite(hi):
        assert bool((law.cdf(torch.tensor([hi, hi + 1e-9, 1e300], dtype=torch.float64)) == 1).all())
    far = law.cdf(torch.tensor([-1e300, 1e300], dtype=torch.float64))
    assert far.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("law", LAWS, ids=repr)
def test_pdf_is_the_derivative_of_the_cdf(law: SpectralLaw) -> None:
    a, b = _range(law)
    width = b - a
    x = torch.linspace(a + 0.02 * width, b - 0.02 * width, 97, dtype=torch.float64)
    h = 1e-6 * width
    numeric = (law.cdf(x + h) - law.cdf(x - h)) / (2 * h)
    pdf = law.pdf(x)
    # Central differences: truncation O(h^2 f''') and round-off O(1e-16 / h) relative to f * width.
    torch.testing.assert_close(numeric, pdf, rtol=1e-5, atol=1e-7 * float(pdf.max()))


@pytest.mark.parametrize("law", LAWS, ids=repr)
def test_cdf_is_the_integral_of_the_pdf(law: SpectralLaw) -> None:
    a, b = _range(law)
    x = a + 0.4 * (b - a)
    assert _cdf(law, x) - _cdf(law, a) == pytest.approx(_integral(law, a, x), abs=1e-8)


@pytest.mark.parametrize("law", FINITE_END, ids=repr)
def test_pdf_vanishes_outside_the_support(law: SpectralLaw) -> None:
    lo, hi = law.support
    if math.isfinite(lo):
        below = torch.tensor([lo - 1e-9, lo - 0.5, lo - 10.0, -1e300], dtype=torch.float64)
        assert law.pdf(below).tolist() == [0.0] * 4
    if math.isfinite(hi):
        above = torch.tensor([hi + 1e-9, hi + 0.5, hi + 10.0, 1e300], dtype=torch.float64)
        assert law.pdf(above).tolist() == [0.0] * 4


@pytest.mark.parametrize("law", LAWS, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_in_is_dtype_out(law: SpectralLaw, dtype: torch.dtype) -> None:
    a, b = _range(law)
    x64 = torch.linspace(a, b, 9, dtype=torch.float64)
    x = x64.to(dtype)
    assert law.pdf(x).dtype == dtype and law.cdf(x).dtype == dtype
    assert law.pdf(x).shape == x.shape
    # float32 results are the float64 ones rounded (to float32's 1e-7 relative precision, on float32 inputs).
    torch.testing.assert_close(law.cdf(x).double(), law.cdf(x.double()), rtol=1e-6, atol=1e-6)


def test_python_numbers_evaluate_in_float64() -> None:
    law = WignerSemicircle(center=0.0, radius=1.0)
    assert law.pdf(0.5).dtype == torch.float64
    assert float(law.cdf(0.1 + 1e-12)) > float(law.cdf(0.1))


@pytest.mark.parametrize("law", [pytest.param(law, id=repr(law)) for law in LAWS])
def test_pdf_and_cdf_are_numbers_at_extreme_arguments(law: SpectralLaw) -> None:
    x = torch.tensor([-1e300, -1e10, 1e10, 1e300], dtype=torch.float64)
    assert not bool(torch.isnan(law.pdf(x)).any() or torch.isnan(law.cdf(x)).any())
    assert law.pdf(x).tolist() == [0.0] * 4


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_marchenko_pastur_pdf_at_zero_is_not_nan(ratio: float) -> None:
    value = float(MarchenkoPastur(sigma2=1.0, ratio=ratio).pdf(torch.tensor(0.0, dtype=torch.float64)))
    # q = 1: the density diverges like x^(-1/2) at the hard edge; q > 1: zero in the gap above the atom.
    assert value == (math.inf if ratio == 1.0 else 0.0)


# ---------------------------------------------------------------- invalid parameters

BAD_WIDTHS = [0.0, -1.0, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value", BAD_WIDTHS)
@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda v: WignerSemicircle(center=0.0, radius=v), "radius"),
        (lambda v: MarchenkoPastur(sigma2=v, ratio=1.0), "sigma2"),
        (lambda v: MarchenkoPastur(sigma2=1.0, ratio=v), "ratio"),
        (lambda v: BetaSurmise(beta=v), "beta"),
        (lambda v: GOEPairDensity(center=0.0, sigma=v), "sigma"),
        (lambda v: TwoSpeciesPairDensity(center=0.0, sigma1=v, sigma2=1.0), "sigma1"),
        (lambda v: TwoSpeciesPairDensity(center=0.0, sigma1=1.0, sigma2=v), "sigma2"),
    ],
)
def test_non_positive_or_non_finite_widths_are_rejected(make, name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a positive finite number"):
        make(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("cls", [WignerSemicircle, GOEPairDensity, TwoSpeciesPairDensity])
def test_non_finite_centres_are_rejected(cls: type, value: float) -> None:
    with pytest.raises(ValueError, match="center must be finite"):
        cls(center=value)


@pytest.mark.parametrize("beta", [3, 0.5, 1.5])
def test_wigner_surmise_takes_only_the_classical_betas(beta: float) -> None:
    with pytest.raises(ValueError, match="beta must be 1, 2 or 4"):
        WignerSurmise(beta=beta)


@pytest.mark.parametrize("value", [True, "1.0", None, [1.0]])
@pytest.mark.parametrize(
    "make",
    [
        lambda v: WignerSemicircle(center=v, radius=1.0),
        lambda v: WignerSemicircle(center=0.0, radius=v),
        lambda v: MarchenkoPastur(sigma2=1.0, ratio=v),
        lambda v: BetaSurmise(beta=v),
        lambda v: GOEPairDensity(center=0.0, sigma=v),
        lambda v: TwoSpeciesPairDensity(center=v, sigma1=1.0, sigma2=1.0),
    ],
)
def test_non_numeric_parameters_are_type_errors(make, value: object) -> None:
    with pytest.raises(TypeError, match="must be a real number"):
        make(value)


def test_laws_are_frozen() -> None:
    law = WignerSemicircle(center=0.0, radius=1.0)
    with pytest.raises(AttributeError):
        law.radius = 2.0  # type: ignore[misc]


# ---------------------------------------------------------------- references


@pytest.mark.parametrize(("center", "radius"), [(0.0, 1.0), (1.5, 0.3), (-2.0, 5.0)])
def test_semicircle_equals_scipy(center: float, radius: float) -> None:
    law = WignerSemicircle(center=center, radius=radius)
    ref = stats.semicircular(loc=center, scale=radius)
    x = np.linspace(center - 1.2 * radius, center + 1.2 * radius, 301)
    # At |x - c| = R both compute sqrt(R^2 - u^2) of a rounding error: agreement there is to ~1e-7 absolute.
    np.testing.assert_allclose(law.pdf(torch.from_numpy(x)).numpy(), ref.pdf(x), rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(law.cdf(torch.from_numpy(x)).numpy(), ref.cdf(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("law", [BetaSurmise(beta=b) for b in (0.3, 1.0, 2.0, 2.5, 4.0, 7.0)], ids=repr)
def test_beta_surmise_is_a_scaled_chi_distribution(law: BetaSurmise) -> None:
    # a s^beta exp(-b s^2) is the law of t / sqrt(2b) for t ~ chi with beta + 1 degrees of freedom.
    _, b = surmise_constants(law.beta)
    ref = stats.chi(df=law.beta + 1.0, scale=1.0 / math.sqrt(2.0 * b))
    s = np.linspace(0.0, 4.0, 401)
    np.testing.assert_allclose(law.pdf(torch.from_numpy(s)).numpy(), ref.pdf(s), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(law.cdf(torch.from_numpy(s)).numpy(), ref.cdf(s), rtol=1e-10, atol=1e-14)


def test_poisson_spacing_is_the_unit_exponential() -> None:
    s = np.linspace(-1.0, 20.0, 211)
    law = PoissonSpacing()
    np.testing.assert_allclose(law.pdf(torch.from_numpy(s)).numpy(), stats.expon.pdf(s), rtol=1e-13)
    np.testing.assert_allclose(law.cdf(torch.from_numpy(s)).numpy(), stats.expon.cdf(s), rtol=1e-13)


@pytest.mark.parametrize(
    ("beta", "a", "b", "mean_square"),
    [
        (1.0, 1.570796, 0.785398, 1.273240),
        (2.0, 3.242278, 1.273240, 1.178097),
        (4.0, 11.597457, 2.263537, 1.104466),
    ],
)
def test_surmise_constants_match_the_table_of_e14(beta: float, a: float, b: float, mean_square: float) -> None:
    a_beta, b_beta = surmise_constants(beta)
    assert a_beta == pytest.approx(a, abs=1e-6)
    assert b_beta == pytest.approx(b, abs=1e-6)
    law = WignerSurmise(beta=beta)
    assert law.mean_square == pytest.approx(mean_square, abs=1e-6)
    pdf = _pdf(law)
    assert integrate.quad(lambda s: s * pdf(s), 0, math.inf)[0] == pytest.approx(1.0, abs=1e-9)
    assert integrate.quad(lambda s: s * s * pdf(s), 0, math.inf)[0] == pytest.approx(mean_square, abs=1e-6)


def test_surmise_closed_forms_of_e14() -> None:
    s = torch.linspace(0.0, 4.0, 41, dtype=torch.float64)
    closed = {
        1: math.pi / 2 * s * torch.exp(-math.pi * s**2 / 4),
        2: 32 / math.pi**2 * s**2 * torch.exp(-4 * s**2 / math.pi),
        4: 2**18 / (3**6 * math.pi**3) * s**4 * torch.exp(-64 * s**2 / (9 * math.pi)),
    }
    for beta, expected in closed.items():
        torch.testing.assert_close(WignerSurmise(beta=beta).pdf(s), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "law", [MarchenkoPastur(sigma2=s, ratio=q) for s, q in [(1, 0.25), (0.7, 1), (3, 4)]], ids=repr
)
def test_marchenko_pastur_moments(law: MarchenkoPastur) -> None:
    # E[x] = sigma^2 and E[x^2] = sigma^4 (1 + q), the atom at zero contributing nothing.
    pdf = _pdf(law)
    lo, hi = law.lambda_minus, law.lambda_plus
    first = integrate.quad(lambda x: x * pdf(x), lo, hi, limit=200)[0]
    second = integrate.quad(lambda x: x * x * pdf(x), lo, hi, limit=200)[0]
    assert first == pytest.approx(law.sigma2, rel=1e-9)
    assert second == pytest.approx(law.sigma2**2 * (1 + law.ratio), rel=1e-9)
    assert law.atom == pytest.approx(max(0.0, 1 - 1 / law.ratio))


def test_pair_density_numbers_of_paper_7_1_1() -> None:
    law = GOEPairDensity(center=1.3, sigma=0.7)
    values = law.pdf(torch.tensor([0.0, 1.3, 2.0, 3.1], dtype=torch.float64))
    np.testing.assert_allclose(values.numpy(), [0.169435, 0.402993, 0.357391, 0.047670], atol=1e-6)
    pdf = _pdf(law)
    mean = integrate.quad(lambda x: x * pdf(x), -math.inf, math.inf)[0]
    variance = integrate.quad(lambda x: (x - 1.3) ** 2 * pdf(x), -math.inf, math.inf)[0]
    assert mean == pytest.approx(1.3, abs=1e-9)
    assert variance == pytest.approx(1.5 * 0.7**2, rel=1e-9)


def _marginal(center: float, s1: float, s2: float, x: float) -> float:
    """One-point density of |l1 - l2| exp(-(l1-c)^2/2 s1^2 - (l2-c)^2/2 s2^2), by quadrature over the other level.

    The normalisation is the closed form 2 pi s1 s2 E|D|, D ~ N(0, s1^2 + s2^2), E|D| = sqrt(2/pi) sqrt(s1^2 + s2^2).
    """

    def joint(l1: float, l2: float) -> float:
        return abs(l1 - l2) * math.exp(-((l1 - center) ** 2) / (2 * s1**2) - (l2 - center) ** 2 / (2 * s2**2))

    lim = 12 * max(s1, s2)
    norm = 2 * math.pi * s1 * s2 * math.sqrt(2 / math.pi) * math.hypot(s1, s2)
    first = integrate.quad(lambda y: joint(x, y), center - lim, center + lim, points=[x], epsabs=1e-12)[0]
    second = integrate.quad(lambda y: joint(y, x), center - lim, center + lim, points=[x], epsabs=1e-12)[0]
    return 0.5 * (first + second) / norm


@pytest.mark.parametrize(("center", "s1", "s2"), [(1.3, 0.7, 0.7), (0.5, 0.4, 0.9)])
def test_pair_densities_are_the_marginals_of_the_two_level_gas(center: float, s1: float, s2: float) -> None:
    law = TwoSpeciesPairDensity(center=center, sigma1=s1, sigma2=s2)
    xs = [center - 1.5, center - 0.3, center, center + 0.8]
    ours = law.pdf(torch.tensor(xs, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, [_marginal(center, s1, s2, x) for x in xs], rtol=1e-7, atol=1e-10)
    if s1 == s2:
        e12 = GOEPairDensity(center=center, sigma=s1).pdf(torch.tensor(xs, dtype=torch.float64)).numpy()
        np.testing.assert_allclose(e12, ours, rtol=1e-12)


@pytest.mark.parametrize(("center", "sigma"), [(0.0, 1.0), (2.0, 0.006), (-1.0, 3.0)])
def test_two_species_reduces_to_e12_at_equal_widths(center: float, sigma: float) -> None:
    x = torch.linspace(center - 6 * sigma, center + 6 * sigma, 241, dtype=torch.float64)
    e12 = GOEPairDensity(center=center, sigma=sigma)
    e30 = TwoSpeciesPairDensity(center=center, sigma1=sigma, sigma2=sigma)
    torch.testing.assert_close(e30.pdf(x), e12.pdf(x), rtol=1e-12, atol=1e-14 / sigma)
    torch.testing.assert_close(e30.cdf(x), e12.cdf(x), rtol=1e-12, atol=1e-14)


def test_two_species_is_symmetric_in_its_widths() -> None:
    x = torch.linspace(-3.0, 4.0, 71, dtype=torch.float64)
    a = TwoSpeciesPairDensity(center=0.5, sigma1=0.4, sigma2=0.9)
    b = TwoSpeciesPairDensity(center=0.5, sigma1=0.9, sigma2=0.4)
    torch.testing.assert_close(a.pdf(x), b.pdf(x), rtol=1e-13, atol=0.0)


def test_laws_take_numpy_scalars_and_refuse_bools() -> None:
    import numpy as np

    assert MarchenkoPastur(sigma2=np.float64(2.0), ratio=np.float32(0.5)).ratio == 0.5
    with pytest.raises(TypeError, match="ratio must be a real number"):
        MarchenkoPastur(sigma2=1.0, ratio=True)
