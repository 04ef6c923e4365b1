r"""Linear network with a fixed hidden layer Z: the project's design for arXiv:2412.20496 Figs. 4–5.

Theory and provenance: docs/science.md#hidden-layer.

**[PROJECT] design** — the paper's matrices Z and fit function are not available; this model is built to show
the same phenomena. Student :math:`f(x) = Z W x` with trained :math:`W \in \mathbb R^{2\times2}`
(W₀ i.i.d. :math:`\mathcal N(0, 0.1^2)`) and a fixed hidden → output layer Z; teacher :math:`f_T(x) = Z W_T x`,
:math:`W_T = \kappa\mathbb 1_2`, κ = 2. Online SGD: fresh inputs :math:`x \sim \mathcal N(0, \mathbb 1_2)` for
every mini-batch (independently per network, from its stream block, reference_models.streams) and fresh
per-sample GOE noise :math:`a_b` (off-diagonal variance :math:`\varepsilon^2`, diagonal :math:`2\varepsilon^2`)
every step. Update (E28):

.. math::

    W \leftarrow W + \alpha\Big[Z^\top Z\,(W_T - W)\,\frac{1}{|B|}\sum_b x_b x_b^\top
    + \frac{1}{|B|}\sum_b a_b\Big].

It is ``torch.optim.SGD(lr=α)`` on :math:`\mathcal L = \sum_e[\frac12\,\mathrm{mean}_b\lVert Z W_T x_b -
Z W_e x_b\rVert^2 - \langle\bar a_e, W_e\rangle_F]`; the noise enters only through its batch mean
:math:`\bar a`, drawn directly as GOE with :math:`\varepsilon/\sqrt{|B|}` (equal in distribution).

``z = "mat_1"``: :math:`Z = \mathrm{diag}(1, \frac12)`;
``z = "mat_2"``: :math:`Z = \begin{pmatrix}1&1\\0&1\end{pmatrix}` (singular values φ and 1/φ).
The rows of :math:`W - W_T` in the eigenbasis of :math:`Z^\top Z` relax at rates
:math:`z_i^2` per unit Langevin time, i.e. (E29) :math:`\gamma_i = \alpha z_i^2 n_{\rm steps/epoch}` per
epoch; the squared singular values follow :math:`\xi(t) \approx A(1 - B e^{-\gamma t})^2`.

References: arXiv:2412.20496 (Figs. 4–5), arXiv:2407.16427.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from .data import goe_from_normals, require_float, require_int
from .ensemble import EnsembleModule
from .streams import INIT, normal_by_block_, randn_by_block

__all__ = ["HIDDEN_LAYERS", "HiddenLayerName", "HiddenLayerNetwork", "hidden_layer_loss", "predicted_rates"]

HiddenLayerName = Literal["mat_1", "mat_2"]
"""The keys of :data:`HIDDEN_LAYERS`."""

#: The fixed hidden → output layers (docs/science.md#hidden-layer).
HIDDEN_LAYERS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "mat_1": ((1.0, 0.0), (0.0, 0.5)),
    "mat_2": ((1.0, 1.0), (0.0, 1.0)),
}


def hidden_layer_loss(
    w: torch.Tensor, x_moment: torch.Tensor, z: torch.Tensor, teacher: torch.Tensor, noise_mean: torch.Tensor
) -> torch.Tensor:
    r"""Ensemble loss whose SGD step is (E28), summed over the networks.

    .. math::

        \mathcal L = \sum_e\Big[\tfrac12\,\frac1{|B|}\sum_b\lVert Z(W_T - W_e)x_{e,b}\rVert^2
        - \langle\bar a_e, W_e\rangle_F\Big]
        = \sum_e\Big[\tfrac12\operatorname{tr}\big(Z D_e \hat C_e D_e^\top Z^\top\big)
        - \langle\bar a_e, W_e\rangle_F\Big], \quad D_e = W_T - W_e,

    evaluated in the second form with the mini-batch moments :math:`\hat C_e = \frac1{|B|}\sum_b x_{e,b}x_{e,b}^\top`.

    Args:
        w: students, shape (E, 2, 2).
        x_moment: :math:`\hat C_e`, shape (E, 2, 2) (one mini-batch per network).
        z: hidden layer Z, shape (2, 2).
        teacher: :math:`W_T`, shape (2, 2).
        noise_mean: batch-mean noise :math:`\bar a`, shape (E, 2, 2).

    Example:
        >>> w = torch.zeros(1, 2, 2, dtype=torch.float64, requires_grad=True)
        >>> c = 0.5 * torch.eye(2, dtype=torch.float64)[None]
        >>> z = torch.diag(torch.tensor([1.0, 0.5], dtype=torch.float64))
        >>> hidden_layer_loss(w, c, z, 2 * torch.eye(2, dtype=torch.float64), torch.zeros(1, 2, 2)).backward()
        >>> (-w.grad[0] + 0.0).tolist()  # ZᵀZ (W_T − W) 𝟙/2
        [[1.0, 0.0], [0.0, 0.25]]
    """
    zd = z @ (teacher - w)  # (E, 2, 2): Z D_e
    return 0.5 * (torch.matmul(zd, x_moment) * zd).sum() - (noise_mean * w).sum()


def predicted_rates(z: torch.Tensor, lr: float, steps_per_epoch: int) -> tuple[float, ...]:
    r"""Relaxation rates per epoch (E29) for the singular values :math:`z_1 \ge z_2` of Z.

    .. math::

        \gamma_i = \alpha z_i^2 n_{\rm steps/epoch}.

    Example:
        >>> z = torch.tensor(HIDDEN_LAYERS["mat_2"], dtype=torch.float64)
        >>> [round(g, 4) for g in predicted_rates(z, 0.01, 10)]
        [0.2618, 0.0382]
    """
    return tuple(lr * float(s) ** 2 * steps_per_epoch for s in torch.linalg.svdvals(z))


class HiddenLayerNetwork(EnsembleModule):
    """An ensemble of students W behind a fixed layer Z, trained online by (E28) (project design, docs/science.md).

    Args:
        networks: ensemble size E.
        z: the fixed layer, ``"mat_1"`` or ``"mat_2"``.
        lr: learning rate α.
        batch_size: mini-batch size |B|.
        noise: GOE noise scale ε.
        seed: seeds W₀ and the training generators (inputs and noise; reference_models.streams).
        steps_per_epoch: SGD steps per epoch (the time unit of the rates).
        teacher_scale: κ in :math:`W_T = \\kappa\\mathbb 1`.
        init_std: standard deviation of the i.i.d. Gaussian W₀.
        networks_per_stream: networks per random-stream block (a network's W₀, inputs and noise depend only on
            the seed, this and its index; data-parallel ranks train whole blocks, :class:`EnsembleModule`).

    Raises:
        TypeError, ValueError: for a hyper-parameter of the wrong type or out of range (the message names it).

    Example:
        >>> net = HiddenLayerNetwork(networks=3, z="mat_1")
        >>> net.weight.shape, net.z.tolist(), [round(g, 3) for g in net.predicted_rates()]
        (torch.Size([3, 2, 2]), [[1.0, 0.0], [0.0, 0.5]], [0.1, 0.025])
    """

    z: torch.Tensor  # buffers (registered in __init__)
    teacher: torch.Tensor

    def __init__(
        self,
        networks: int = 100,
        z: HiddenLayerName = "mat_1",
        lr: float = 0.01,
        batch_size: int = 16,
        noise: float = 0.1,
        seed: int = 0,
        *,
        steps_per_epoch: int = 10,
        teacher_scale: float = 2.0,
        init_std: float = 0.1,
        networks_per_stream: int = 16,
    ) -> None:
        super().__init__()
        if z not in HIDDEN_LAYERS:
            raise ValueError(f"z must be one of {sorted(HIDDEN_LAYERS)}, got {z!r}")
        networks, batch_size = require_int("networks", networks, 1), require_int("batch_size", batch_size, 1)
        require_int("seed", seed, 0), require_int("steps_per_epoch", steps_per_epoch, 1)
        require_float("lr", lr), require_float("teacher_scale", teacher_scale)
        require_float("noise", noise, positive=False), require_float("init_std", init_std, positive=False)
        require_int("networks_per_stream", networks_per_stream, 1)
        self.save_hyperparameters()
        w0 = init_std * randn_by_block(networks, networks_per_stream, (2, 2), seed=seed, purpose=INIT)
        self.weight = torch.nn.Parameter(w0)  # (E, 2, 2)
        self.register_buffer("z", torch.tensor(HIDDEN_LAYERS[z], dtype=torch.float64), persistent=False)  # (2, 2)
        self.register_buffer("teacher", teacher_scale * torch.eye(2, dtype=torch.float64), persistent=False)

    @property
    def steps_per_epoch(self) -> int:
        """SGD steps per epoch."""
        return self.hparams.steps_per_epoch

    def predicted_rates(self) -> tuple[float, ...]:
        """(E29) rates per epoch, fast first: :math:`\\alpha z_i^2 n_{\\rm steps/epoch}`."""
        return predicted_rates(self.z, self.hparams.lr, self.steps_per_epoch)

    def training_step(self, batch: int, batch_idx: int) -> torch.Tensor:
        hp, w = self.hparams, self.weight[self.shard]  # this rank's networks (all in one process)
        e, b, gens = w.shape[0], hp.batch_size, self.generators()
        # Each block draws (S, 2|B| + 4) normals by one call: per network its inputs (|B|, 2), then 2×2 normals
        # made GOE with ε/√|B| (the batch-mean noise ā).
        z = torch.empty(len(gens) * hp.networks_per_stream, 2 * b + 4, dtype=w.dtype, device=self.device)
        normal_by_block_(z, gens, hp.networks_per_stream)
        x = z[:e, : 2 * b].view(e, b, 2)  # (E, B, 2)
        a = goe_from_normals(z[:e, 2 * b :].view(e, 2, 2), hp.noise / math.sqrt(b))  # (E, 2, 2)
        return self.scaled(hidden_layer_loss(w, x.mT @ x / b, self.z, self.teacher, a))

    @torch.no_grad()
    def singular_values(self) -> torch.Tensor:
        """Singular values of each student W, ascending (project convention): (E, 2)."""
        return torch.linalg.svdvals(self.weight.detach()).flip(-1)
