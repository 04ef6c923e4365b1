"""Shared plumbing of the reference models: lattice operator, GOE noise, step-index data, validation, training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reference_models import (
    TARGET_KAPPA,
    TARGET_X,
    StepIndexDataset,
    TeacherStudent2x2,
    fit_reference,
    goe_noise,
    lattice_kinetic_operator,
    lattice_spectrum,
)
from reference_models.data import require_float, require_int, step_index_loader

# docs/science.md, E20: spectrum of K_phi for N = 10, m = 2, ascending (= descending x order).
PAPER_KAPPA = (4.0, 4.381966, 4.381966, 5.381966, 5.381966, 6.618034, 6.618034, 7.618034, 7.618034, 8.0)


def test_lattice_operator_is_the_periodic_laplacian_plus_mass() -> None:
    n, m = 10, 2.0
    reference = (2 + m**2) * np.eye(n) - np.roll(np.eye(n), 1, axis=0) - np.roll(np.eye(n), -1, axis=0)
    k = lattice_kinetic_operator(n, m)
    assert k.dtype == torch.float64
    np.testing.assert_array_equal(k.numpy(), reference)


def test_lattice_spectrum_matches_eigvalsh_and_the_paper_table() -> None:
    kappa = lattice_spectrum(10, 2.0)
    np.testing.assert_allclose(kappa, np.linalg.eigvalsh(lattice_kinetic_operator(10, 2.0).numpy()), atol=1e-12)
    np.testing.assert_allclose(kappa, PAPER_KAPPA, atol=1e-6)
    np.testing.assert_allclose(TARGET_KAPPA, PAPER_KAPPA, atol=1e-6)
    np.testing.assert_allclose(TARGET_X, 9.0 - np.array(PAPER_KAPPA), atol=1e-6)
    assert list(TARGET_X) == sorted(TARGET_X, reverse=True)


def test_lattice_rejects_too_few_sites() -> None:
    with pytest.raises(ValueError, match=r"n_sites must be >= 3, got 2"):
        lattice_kinetic_operator(2, 1.0)
    with pytest.raises(ValueError, match=r"n_sites must be >= 3"):
        lattice_spectrum(1, 1.0)


def test_goe_noise_has_goe_variances() -> None:
    eps, n = 0.3, 200_000
    a = goe_noise((n,), eps, n=3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (n, 3, 3) and a.dtype == torch.float64
    assert torch.equal(a, a.mT)
    # A sample variance of n Gaussian draws has relative standard error sqrt(2/n) = 0.3 %; allow 5 of them.
    rel = 5 * math.sqrt(2 / n)
    for i, j, var in ((0, 0, 2 * eps**2), (2, 2, 2 * eps**2), (0, 1, eps**2), (1, 2, eps**2)):
        assert float(a[:, i, j].var()) == pytest.approx(var, rel=rel)
    # Independent entries: the sample correlation of two entries is ~ N(0, 1/n).
    corr = np.corrcoef(a[:, 0, 0].numpy(), a[:, 0, 1].numpy())[0, 1]
    assert abs(corr) < 5 / math.sqrt(n)


def test_mean_of_batch_goe_draws_is_goe_with_scaled_noise() -> None:
    """The identity the teacher–student and hidden-layer models use to draw batch-mean noise directly."""
    eps, batch, n = 0.1, 16, 50_000
    per_sample = goe_noise((n, batch), eps, generator=torch.Generator().manual_seed(1)).mean(dim=1)
    direct = goe_noise((n,), eps / math.sqrt(batch), generator=torch.Generator().manual_seed(2))
    rel = 5 * math.sqrt(2 / n) * math.sqrt(2)  # difference of two sample variances, 5 standard errors
    for i, j in ((0, 0), (0, 1), (1, 1)):
        assert float(per_sample[:, i, j].var()) == pytest.approx(float(direct[:, i, j].var()), rel=rel)


def test_goe_noise_rejects_negative_noise() -> None:
    with pytest.raises(ValueError, match=r"noise must be >= 0, got -0.1"):
        goe_noise((2,), -0.1)


def test_step_index_loader_yields_plain_ints_in_order() -> None:
    assert list(step_index_loader(4, start=2)) == [2, 3, 4, 5]
    assert all(type(i) is int for i in step_index_loader(3))
    with pytest.raises(ValueError, match=r"length must be >= 1, got 0"):
        StepIndexDataset(0)
    with pytest.raises(IndexError, match="out of range"):
        StepIndexDataset(2)[2]


def test_validators_name_the_argument() -> None:
    assert require_int("networks", 3, 1) == 3
    with pytest.raises(ValueError, match=r"networks must be an int >= 1, got 0"):
        require_int("networks", 0, 1)
    with pytest.raises(TypeError, match=r"batch_size must be an int >= 1, got 2.0 of type float"):
        require_int("batch_size", 2.0, 1)
    with pytest.raises(TypeError, match="seed must be an int"):
        require_int("seed", True, 0)
    assert require_float("lr", 1) == 1.0
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got 0.0"):
        require_float("lr", 0.0)
    with pytest.raises(ValueError, match=r"noise must be a finite number >= 0, got nan"):
        require_float("noise", float("nan"), positive=False)
    with pytest.raises(TypeError, match="mu must be a real number, got '3'"):
        require_float("mu", "3")


def test_fit_reference_runs_the_requested_number_of_steps() -> None:
    model = TeacherStudent2x2(networks=2, batch_size=4, batches_per_epoch=3, seed=0)
    trainer = fit_reference(model, 7)
    assert trainer.global_step == 7
    with pytest.raises(ValueError, match=r"steps must be >= 1, got 0"):
        fit_reference(model, 0)


@pytest.mark.parametrize(("steps", "interval"), [(120, 2), (600, 5), (30, 1)])
def test_fit_reference_with_a_logger_logs_about_fifty_times_and_at_least_once_per_epoch(
    steps: int, interval: int, tmp_path: Path
) -> None:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path)
    model = TeacherStudent2x2(networks=2, batch_size=4, batches_per_epoch=5, seed=0)  # 5 steps per epoch
    trainer = fit_reference(model, steps, logger=logger)
    assert trainer.log_every_n_steps == interval  # max(1, min(steps // 50, 5))
    assert trainer.logger is logger and trainer.global_step == steps
    assert trainer.max_epochs == -1 and trainer.checkpoint_callback is None and trainer.num_sanity_val_steps == 0


def test_generators_live_on_the_module_device_one_per_block_seeded_from_the_stream_hash() -> None:
    a, b = TeacherStudent2x2(networks=5, seed=5, networks_per_stream=2), TeacherStudent2x2(networks=5, seed=5)
    ga = a.generators()
    assert len(ga) == 3 and len(b.generators()) == 1  # ⌈5/2⌉ blocks; one block of the default 16
    assert all(g.device == a.device == torch.device("cpu") for g in ga)
    assert all(g is h for g, h in zip(ga, a.generators(), strict=True))  # created once, reused on the same device
    for block, g in enumerate(ga):  # seeded from SeedSequence([seed, TRAIN = 1, block]), reduced to 63 bits
        seed = int(np.random.SeedSequence([5, 1, block]).generate_state(1, np.uint64)[0]) >> 1
        assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=torch.Generator().manual_seed(seed)))
