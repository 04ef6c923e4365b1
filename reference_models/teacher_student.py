r"""The 2×2 linear teacher–student model with explicit GOE gradient noise (docs/science.md#teacher-student).

Teacher :math:`W_T = 2\cdot\mathbb 1_2`, student :math:`W \in \mathbb R^{2\times2}` with i.i.d.
:math:`\mathcal N(0, 0.1^2)` entries, inputs :math:`x \sim \mathcal N(0, \mathbb 1_2)` (a data set of
``batches_per_epoch · |B|`` points drawn once per run, visited in order every epoch, consecutive
mini-batches, no shuffling), labels :math:`y = W_T x`. The networks are split into ``data_sets`` contiguous
groups (network :math:`e` of :math:`E` in group :math:`\lfloor e D / E\rfloor`, :math:`D` = ``data_sets``);
each group draws its own data set from its own seed stream and all networks of a group share it (the default
:math:`D = 1`: one data set shared by all networks). Independent data sets expose the run-to-run variance a
single data set hides (a run's :math:`\langle S\rangle` carries a factor set by its data). Each sample
carries a symmetric GOE noise matrix :math:`a_b` (off-diagonal variance :math:`\varepsilon^2`, diagonal
:math:`2\varepsilon^2`), drawn once per network and reused every epoch. Update per mini-batch (E25):

.. math::

    W \leftarrow W + \alpha\Big[(W_T - W)\frac{1}{|B|}\sum_{b} x_b x_b^\top + \frac{1}{|B|}\sum_b a_b\Big].

**Construction.** ``torch.optim.SGD(lr=α)`` on the loss (summed over the ensemble so each network's
gradient is its own)

.. math::

    \mathcal L = \sum_e \Big[\tfrac12\,\frac{1}{|B|}\sum_b \lVert y_b - W_e x_b\rVert^2
    - \big\langle \bar a_e, W_e \big\rangle_F\Big], \qquad \bar a_e = \frac{1}{|B|}\sum_b a_{e,b},

gives exactly (E25). The noise enters only through its mini-batch mean :math:`\bar a`, and the mini-batches
are fixed, so the module stores :math:`\bar a` per network and mini-batch; the mean of :math:`|B|` independent
GOE draws is itself GOE with :math:`\varepsilon \to \varepsilon/\sqrt{|B|}`, and is drawn as such (equal in
distribution to averaging per-sample draws, at :math:`1/|B|` of the memory).

Theory (E27): the stationary singular values sit at 2 with mean spacing
:math:`\langle S\rangle = \sqrt{2\pi\alpha\varepsilon^2/((2-\alpha)|B|)}`.

References: arXiv:2407.16427 (teacher–student model), arXiv:2412.20496.
"""

from __future__ import annotations

import math

import torch

from .data import goe_from_normals, require_float, require_int
from .ensemble import EnsembleModule
from .streams import DATA, INIT, NOISE, randn_by_block, stream_seed

__all__ = ["TeacherStudent2x2", "input_moment", "predicted_mean_spacing", "teacher_student_loss"]


def _data_generator(seed: int, data_set: int) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, DATA, data_set))


def input_moment(x: torch.Tensor) -> torch.Tensor:
    r"""Second moment of a mini-batch, :math:`\hat C_x = \frac{1}{|B|}\sum_b x_b x_b^\top`: (..., B, 2) → (..., 2, 2).

    Example:
        >>> input_moment(torch.eye(2)).tolist()
        [[0.5, 0.0], [0.0, 0.5]]
    """
    return x.mT @ x / x.shape[-2]


def teacher_student_loss(
    w: torch.Tensor, x_moment: torch.Tensor, teacher: torch.Tensor, noise_mean: torch.Tensor
) -> torch.Tensor:
    r"""Ensemble loss whose SGD step is (E25), summed over the networks.

    .. math::

        \mathcal L = \sum_e\Big[\tfrac12\,\frac1{|B|}\sum_b\lVert W_T x_b - W_e x_b\rVert^2
        - \langle\bar a_e, W_e\rangle_F\Big]
        = \sum_e\Big[\tfrac12\operatorname{tr}\big(D_e \hat C_x D_e^\top\big) - \langle\bar a_e, W_e\rangle_F\Big],
        \quad D_e = W_T - W_e,

    evaluated in the second form (the data enter only through :math:`\hat C_x`, :func:`input_moment`).

    Args:
        w: students, shape (E, 2, 2).
        x_moment: :math:`\hat C_x` of the mini-batch: shape (2, 2) when all networks share it, or (E, 2, 2)
            with each network's own (:math:`\hat C_{x,e}` in place of :math:`\hat C_x` above).
        teacher: :math:`W_T`, shape (2, 2).
        noise_mean: mini-batch mean noise :math:`\bar a` per network, shape (E, 2, 2).

    Example:
        >>> w = torch.zeros(1, 2, 2, dtype=torch.float64, requires_grad=True)
        >>> c = input_moment(torch.eye(2, dtype=torch.float64))  # 𝟙/2
        >>> teacher_student_loss(w, c, 2 * torch.eye(2, dtype=torch.float64), torch.zeros(1, 2, 2)).backward()
        >>> (-w.grad[0] + 0.0).tolist()  # (W_T − W)·𝟙/2
        [[1.0, 0.0], [0.0, 1.0]]
    """
    d = teacher - w  # (E, 2, 2)
    return 0.5 * (torch.matmul(d, x_moment) * d).sum() - (noise_mean * w).sum()


def predicted_mean_spacing(lr: float, batch_size: int, noise: float) -> float:
    r"""Discrete-time Ornstein–Uhlenbeck prediction (E27) of the mean singular-value spacing.

    .. math::

        \langle S\rangle = \sqrt{\frac{2\pi\alpha\varepsilon^2}{(2-\alpha)|B|}} .

    Example:
        >>> round(predicted_mean_spacing(0.1, 16, 0.1), 5)
        0.01438
    """
    return math.sqrt(2.0 * math.pi * lr * noise**2 / ((2.0 - lr) * batch_size))


class TeacherStudent2x2(EnsembleModule):
    """An ensemble of 2×2 linear students learning :math:`W_T = 2\\cdot\\mathbb 1` under GOE noise (E25).

    Args:
        networks: ensemble size E.
        lr: learning rate α.
        batch_size: mini-batch size |B|.
        noise: GOE noise scale ε (off-diagonal standard deviation).
        seed: seeds the data set, the noise and W₀.
        epochs: length of the papers' run (``total_steps = epochs · batches_per_epoch``).
        batches_per_epoch: mini-batches in the data set (the papers: 500).
        teacher_scale: κ in :math:`W_T = \\kappa\\mathbb 1`.
        init_std: standard deviation of the i.i.d. Gaussian W₀.
        data_sets: number D of independent data sets, ``1 <= D <= networks``; network e trains on data set
            ``e * D // networks`` (contiguous groups, :attr:`data_set_index`); data set g is drawn from its
            own stream ``(seed, DATA, g)``, the same whatever D.
        networks_per_stream: networks per random-stream block (a network's W₀ and noise depend only on the seed,
            this and its index; data-parallel ranks train whole blocks, :class:`EnsembleModule`).

    Attributes:
        inputs: the data sets, (D, batches_per_epoch, |B|, 2).
        input_moments: their mini-batch moments :math:`\\hat C_x`, (D, batches_per_epoch, 2, 2).
        data_set_index: each network's data set, (E,) int64.
        noise_mean: each network's mini-batch mean noise :math:`\\bar a`, (batches_per_epoch, E, 2, 2).

    Raises:
        TypeError, ValueError: for a hyper-parameter of the wrong type or out of range (the message names it).

    Example:
        >>> ts = TeacherStudent2x2(networks=3, batch_size=4, seed=0, data_sets=2)
        >>> ts.weight.shape, ts.inputs.shape, ts.noise_mean.shape, ts.total_steps
        (torch.Size([3, 2, 2]), torch.Size([2, 500, 4, 2]), torch.Size([500, 3, 2, 2]), 5000)
        >>> ts.data_set_index.tolist()
        [0, 0, 1]
    """

    teacher: torch.Tensor  # buffers (registered in __init__)
    inputs: torch.Tensor
    input_moments: torch.Tensor
    data_set_index: torch.Tensor
    noise_mean: torch.Tensor

    def __init__(
        self,
        networks: int = 100,
        lr: float = 0.1,
        batch_size: int = 16,
        noise: float = 0.1,
        seed: int = 0,
        *,
        epochs: int = 10,
        batches_per_epoch: int = 500,
        teacher_scale: float = 2.0,
        init_std: float = 0.1,
        data_sets: int = 1,
        networks_per_stream: int = 16,
    ) -> None:
        super().__init__()
        networks, batch_size = require_int("networks", networks, 1), require_int("batch_size", batch_size, 1)
        if require_int("data_sets", data_sets, 1) > networks:
            raise ValueError(f"data_sets must be an int <= networks ({networks}), got {data_sets!r}")
        require_int("seed", seed, 0), require_int("epochs", epochs, 1)
        n_batches = require_int("batches_per_epoch", batches_per_epoch, 1)
        require_float("lr", lr), require_float("teacher_scale", teacher_scale)
        noise = require_float("noise", noise, positive=False)
        require_float("init_std", init_std, positive=False)
        self.save_hyperparameters()
        per = require_int("networks_per_stream", networks_per_stream, 1)
        w0 = init_std * randn_by_block(networks, per, (2, 2), seed=seed, purpose=INIT)
        self.weight = torch.nn.Parameter(w0)  # (E, 2, 2)
        self.register_buffer("teacher", teacher_scale * torch.eye(2, dtype=torch.float64), persistent=False)
        inputs = torch.stack(  # data set g from its own stream (seed, DATA, g)
            [
                torch.randn(n_batches, batch_size, 2, generator=_data_generator(seed, g), dtype=torch.float64)
                for g in range(data_sets)
            ]
        )
        self.register_buffer("inputs", inputs, persistent=False)  # (D, n_batches, B, 2)
        self.register_buffer("input_moments", input_moment(inputs), persistent=False)  # (D, n_batches, 2, 2)
        index = torch.arange(networks) * data_sets // networks  # contiguous groups
        self.register_buffer("data_set_index", index, persistent=False)  # (E,) network → data set
        normals = randn_by_block(networks, per, (n_batches, 2, 2), seed=seed, purpose=NOISE)  # per network
        noise_mean = goe_from_normals(normals, noise / math.sqrt(batch_size)).transpose(0, 1).contiguous()
        self.register_buffer("noise_mean", noise_mean, persistent=False)  # (n_batches, E, 2, 2): ā per network

    @property
    def steps_per_epoch(self) -> int:
        """Mini-batches per epoch."""
        return self.hparams.batches_per_epoch

    @property
    def total_steps(self) -> int:
        """SGD steps of the papers' run: ``epochs · batches_per_epoch`` (10 · 500 = 5000)."""
        return self.hparams.epochs * self.hparams.batches_per_epoch

    def training_step(self, batch: int, batch_idx: int) -> torch.Tensor:
        # Mini-batch j of the fixed data set: consecutive, in order, wrapping every epoch. Taken from the global
        # step (equal to ``batch`` in a fresh run) so that a run resumed mid-epoch keeps the data order.
        j = self.global_step % self.hparams.batches_per_epoch
        shard = self.shard  # this rank's networks (all in one process)
        moments = self.input_moments[:, j]  # (D, 2, 2)
        moment = moments[0] if moments.shape[0] == 1 else moments[self.data_set_index[shard]]  # (2, 2) | (E, 2, 2)
        return self.scaled(teacher_student_loss(self.weight[shard], moment, self.teacher, self.noise_mean[j, shard]))

    @torch.no_grad()
    def singular_values(self) -> torch.Tensor:
        """Singular values of each student, ascending (project convention): (E, 2)."""
        return torch.linalg.svdvals(self.weight.detach()).flip(-1)
