"""The 2×2 teacher–student model: (E25) step by step, its fixed data and noise, and the stationary spacing (E27)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from reference_models import TeacherStudent2x2, fit_reference, predicted_mean_spacing


class _Weights(pl.Callback):
    def __init__(self) -> None:
        self.before: list[np.ndarray] = []
        self.after: list[np.ndarray] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.before.append(pl_module.weight.detach().numpy().copy())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.after.append(pl_module.weight.detach().numpy().copy())


@pytest.mark.parametrize("data_sets", [1, 3])
def test_every_sgd_step_is_the_explicit_e25_update_over_consecutive_wrapping_batches(data_sets: int) -> None:
    lr, batch, n_batches, e = 0.3, 5, 3, 4
    ts = TeacherStudent2x2(
        networks=e, lr=lr, batch_size=batch, noise=0.2, seed=1, batches_per_epoch=n_batches, data_sets=data_sets
    )
    rec = _Weights()
    fit_reference(ts, 8, callbacks=[rec])  # 2⅔ epochs: the data set and the noise are reused in order
    x, a, w_t = ts.inputs.numpy(), ts.noise_mean.numpy(), 2.0 * np.eye(2)
    groups = [net * data_sets // e for net in range(e)]  # network → its data set
    for n, (w, w_next) in enumerate(zip(rec.before, rec.after, strict=True)):
        for net, g in enumerate(groups):
            xb = x[g, n % n_batches]  # (B, 2), mini-batch n mod 3 of the network's own data set
            expected = w[net] + lr * ((w_t - w[net]) @ (xb.T @ xb / batch) + a[n % n_batches, net])  # (E25)
            np.testing.assert_allclose(w_next[net], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("networks", "data_sets"), [(1, 1), (5, 1), (5, 2), (7, 3), (7, 5), (6, 6), (10, 4)])
def test_networks_are_split_into_contiguous_nearly_equal_data_set_groups(networks: int, data_sets: int) -> None:
    ts = TeacherStudent2x2(networks=networks, batch_size=2, batches_per_epoch=3, data_sets=data_sets)
    index = ts.data_set_index.tolist()
    assert ts.data_set_index.dtype == torch.int64
    assert index == [e * data_sets // networks for e in range(networks)]  # the documented rule
    assert index == sorted(index) and set(index) == set(range(data_sets))  # contiguous, every group used
    sizes = np.bincount(index)
    assert sizes.max() - sizes.min() <= 1
    assert ts.inputs.shape == (data_sets, 3, 2, 2) and ts.input_moments.shape == (data_sets, 3, 2, 2)
    assert "data_set_index" not in ts.state_dict()


def test_each_data_set_has_the_papers_statistics_and_the_data_sets_are_independent() -> None:
    d, batch, n_batches = 4, 16, 500
    ts = TeacherStudent2x2(networks=8, batch_size=batch, seed=3, data_sets=d)
    x = ts.inputs.reshape(d, -1, 2).numpy()  # (D, n, 2)
    n = x.shape[1]
    for g in range(d):  # 𝔼 x xᵀ = 𝟙 within 5 standard errors (each entry's is ≤ √(2/n))
        np.testing.assert_allclose(x[g].T @ x[g] / n, np.eye(2), atol=5 * math.sqrt(2 / n))
        moments = np.einsum("jbi,jbk->jik", x[g].reshape(n_batches, batch, 2), x[g].reshape(n_batches, batch, 2))
        np.testing.assert_allclose(ts.input_moments[g].numpy(), moments / batch, rtol=1e-12)
    for g in range(d):  # independent: the cross moment of two data sets is 0 within 5 standard errors (1/√n)
        for h in range(g + 1, d):
            np.testing.assert_allclose(x[g].T @ x[h] / n, np.zeros((2, 2)), atol=5 / math.sqrt(n))
    # the data sets do not depend on how many there are: data set g is drawn from its own stream
    assert torch.equal(TeacherStudent2x2(networks=8, batch_size=batch, seed=3, data_sets=2).inputs, ts.inputs[:2])


def test_data_and_noise_are_drawn_once_with_the_papers_statistics() -> None:
    e, batch, eps = 200, 16, 0.1
    ts = TeacherStudent2x2(networks=e, batch_size=batch, noise=eps, seed=0)
    assert ts.inputs.shape == (1, 500, batch, 2)  # one data set of 500·|B| points, shared by the networks
    assert ts.noise_mean.shape == (500, e, 2, 2)  # per network and mini-batch
    x = ts.inputs.reshape(-1, 2).numpy()
    n = x.shape[0]
    np.testing.assert_allclose(x.T @ x / n, np.eye(2), atol=5 / math.sqrt(n))  # 𝔼 x xᵀ = 𝟙, 5 standard errors
    a = ts.noise_mean.reshape(-1, 2, 2).numpy()
    assert np.array_equal(a, np.swapaxes(a, 1, 2))
    m = a.shape[0]
    # batch mean of |B| GOE draws: variances 2ε²/|B| (diagonal) and ε²/|B| (off-diagonal); 5 standard errors.
    for (i, j), var in (((0, 0), 2 * eps**2 / batch), ((1, 1), 2 * eps**2 / batch), ((0, 1), eps**2 / batch)):
        assert a[:, i, j].var() == pytest.approx(var, rel=5 * math.sqrt(2 / m))


def test_shapes_hparams_and_ascending_singular_values() -> None:
    ts = TeacherStudent2x2(networks=5, batch_size=8, seed=2)
    assert ts.weight.shape == (5, 2, 2) and ts.weight.dtype == torch.float64
    assert ts.hparams.batch_size == 8 and ts.total_steps == 5000 and ts.steps_per_epoch == 500
    s = ts.singular_values()
    assert s.shape == (5, 2)
    np.testing.assert_allclose(s.numpy(), np.linalg.svd(ts.weight.detach().numpy(), compute_uv=False)[:, ::-1])
    assert set(ts.state_dict()) == {"weight"}


def test_reproducible_from_the_seed() -> None:
    runs = [TeacherStudent2x2(networks=3, batch_size=4, batches_per_epoch=10, seed=s) for s in (7, 7, 8)]
    for ts in runs:
        fit_reference(ts, 25)
    assert torch.equal(runs[0].weight, runs[1].weight)
    assert not torch.equal(runs[0].weight, runs[2].weight)
    assert not torch.equal(runs[0].inputs, runs[2].inputs)


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_resuming_mid_epoch_keeps_the_data_order(tmp_path: Path) -> None:
    def make() -> TeacherStudent2x2:
        return TeacherStudent2x2(networks=3, batch_size=4, batches_per_epoch=3, seed=9)

    straight = make()
    fit_reference(straight, 10)
    first = make()
    fit_reference(first, 4).save_checkpoint(tmp_path / "ts.ckpt")  # stops inside the second epoch
    resumed = make()
    pl.Trainer(max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(
        resumed, ckpt_path=tmp_path / "ts.ckpt"
    )
    torch.testing.assert_close(resumed.weight, straight.weight, rtol=0, atol=0)


def test_bad_hyper_parameters_are_rejected_by_name() -> None:
    with pytest.raises(ValueError, match=r"noise must be a finite number >= 0, got -1"):
        TeacherStudent2x2(noise=-1.0)
    with pytest.raises(ValueError, match=r"batches_per_epoch must be an int >= 1, got 0"):
        TeacherStudent2x2(batches_per_epoch=0)
    with pytest.raises(TypeError, match=r"networks must be an int"):
        TeacherStudent2x2(networks="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"data_sets must be an int >= 1, got 0"):
        TeacherStudent2x2(networks=4, data_sets=0)
    with pytest.raises(ValueError, match=r"data_sets must be an int <= networks \(4\), got 5"):
        TeacherStudent2x2(networks=4, data_sets=5)


def _runs(lr: float, batch: int, eps: float, runs: int, networks: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-run ⟨S⟩/(E27) (runs,) and the pooled per-network centres (runs · networks,) of the singular values."""
    ratios, centres = [], []
    for r in range(runs):
        ts = TeacherStudent2x2(networks=networks, lr=lr, batch_size=batch, noise=eps, seed=100 + r)
        fit_reference(ts, steps)
        s = ts.singular_values().numpy()  # (E, 2), ascending
        ratios.append((s[:, 1] - s[:, 0]).mean() / predicted_mean_spacing(lr, batch, eps))
        centres.append(s.mean(axis=1))
    return np.array(ratios), np.concatenate(centres)


def test_stationary_singular_values_match_e27() -> None:
    """Mean singular value 2 and ⟨S⟩ against (E27) (docs/science.md#reference-numbers), (α, |B|, ε) = (0.1, 16, 0.1).

    The data set is shared by all networks of a run, so a run's ⟨S⟩ carries a run-level factor set by the
    last ~1/α mini-batches: σ² ∝ 1/λ_eff with λ_eff an average of x x^T over ≈ (2 − α)|B|/(2α) samples, i.e. a
    relative spread ≈ √(α/((2 − α)|B|)) = 5.7 % here (16 runs × 500 networks: 5.2 % observed). Averaging 8 runs
    (independent data sets) and 500 networks each (spacing std/mean = 0.52 per network):
    se = √((0.057² + 0.52²/500)/8) = 2.2 %; we allow 4 se plus 2 % for the non-linear (Jensen) bias of
    averaging 1/λ_eff (the released data give 0.97–1.03 single-run ratios,
    docs/science.md#reference-numbers). The mean relaxes at rate α per step (τ = 10 steps), so 300 steps are stationary.
    """
    lr, batch, runs, networks = 0.1, 16, 8, 500
    ratios, centres = _runs(lr, batch, 0.1, runs=runs, networks=networks, steps=300)
    assert abs(centres.mean() - 2.0) < 4 * centres.std() / math.sqrt(centres.size), centres.mean()
    se = math.sqrt((lr / ((2 - lr) * batch) + 0.523**2 / networks) / runs)
    assert abs(ratios.mean() - 1) < 4 * se + 0.02, (ratios, se)


@pytest.mark.slow
@pytest.mark.parametrize(("lr", "batch", "eps"), [(0.1, 16, 0.1), (0.1, 64, 0.1), (0.1, 16, 0.05), (0.2, 8, 0.1)])
def test_e27_over_the_papers_settings(lr: float, batch: int, eps: float) -> None:
    """Settings from docs/science.md; 10 data sets × 1000 networks × 2 epochs; error from the run-to-run scatter."""
    ratios, centres = _runs(lr, batch, eps, runs=10, networks=1000, steps=1000)
    assert abs(centres.mean() - 2.0) < 4 * centres.std() / math.sqrt(centres.size), centres.mean()
    assert abs(ratios.mean() - 1) < 4 * ratios.std(ddof=1) / math.sqrt(ratios.size) + 0.02, ratios
