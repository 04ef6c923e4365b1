r"""Gaussian (scalar-field) restricted Boltzmann machine learning a free lattice field (docs/science.md#gaussian-rbm).

Model (E17–E18): visible field :math:`\phi \in \mathbb R^{N_v}`, hidden :math:`h \in \mathbb R^{N_h}`,

.. math::

    S(\phi, h) = \tfrac12 \mu^2 \phi^\top\phi + \tfrac{1}{2\sigma_h^2} h^\top h - h^\top W \phi,
    \qquad p(\phi) \propto e^{-\frac12 \phi^\top (\mu^2 - \sigma_h^2 W^\top W) \phi},

Gibbs conditionals :math:`h \mid \phi \sim \mathcal N(\sigma_h^2 W\phi, \sigma_h^2)` and
:math:`\phi \mid h \sim \mathcal N(W^\top h / \mu^2, 1/\mu^2)`. Target: :math:`p(\phi) \propto
e^{-\frac12\phi^\top K_\phi \phi}` with the periodic lattice operator :math:`K_\phi` (E19), whose covariance
:math:`K_\phi^{-1}` is used exactly. One SGD step (E21), the model covariance estimated by :math:`|B|`
persistent chains advanced by PCD-k (k = 3):

.. math::

    W \leftarrow W + \alpha\big(W K_\phi^{-1} - \sigma_h^2 W \hat C_B\big), \qquad
    \hat C_B = \frac{1}{|B|}\sum_b \phi^{(b)}\phi^{(b)\top}.

**Construction.** The step is driven by a standard ``torch.optim.SGD(lr=α)`` on the surrogate loss

.. math::

    \mathcal L(W) = \sum_{e=1}^{E} \Big[-\tfrac12 \operatorname{tr}(W_e K_\phi^{-1} W_e^\top)
    + \tfrac12 \sigma_h^2 \operatorname{tr}(W_e \hat C_e W_e^\top)\Big],

with :math:`\hat C_e` computed from the chains *before* the step and detached. Both matrices are symmetric,
so :math:`-\partial\mathcal L/\partial W_e = W_e K_\phi^{-1} - \sigma_h^2 W_e \hat C_e`: SGD performs (E21)
exactly, network by network (a sum, not a mean, over the ensemble). The chains first advance by one
PCD sweep with the current weights: ``h ~ p(h|φ)``, then k times ``φ ~ p(φ|h)``, each followed by
``h ~ p(h|φ)`` except the last (that final hidden sample is never used, so it is not drawn). The chains'
visible state is kept in the ``chains`` buffer, so it is saved in checkpoints and moves with the module.

The eigenvalues :math:`x` of :math:`W^\top W` (unnormalised, descending as in the papers) approach
:math:`x^* = (\mu^2 - \kappa)/\sigma_h^2` with :math:`\kappa` the spectrum of :math:`K_\phi` (E20).

References: arXiv:2407.16427 (Sections on the Gaussian RBM), arXiv:2412.20496, arXiv:2309.15002.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .data import lattice_kinetic_operator, lattice_spectrum, require_float, require_int
from .ensemble import EnsembleModule
from .streams import INIT, block_count, normal_by_block_, randn_by_block

__all__ = [
    "MU",
    "MU2",
    "TARGET_KAPPA",
    "TARGET_X",
    "GaussianRBM",
    "chain_covariance",
    "pcd_sweep",
    "rbm_surrogate_loss",
]

#: Visible mass μ of the papers' RBM (docs/science.md#gaussian-rbm; not trained), the default of ``GaussianRBM(mu=)``.
MU: float = 3.0
#: :math:`\mu^2 = 9`: the learnt kernel's eigenvalues are :math:`\lambda = \mu^2 - x` (σ_h = 1; E18), the targets
#: :math:`x^* = \mu^2 - \kappa`.
MU2: float = MU**2
#: Eigenvalues of :math:`K_\phi` for N = 10, m = 2, ascending (= the order of descending ``x``), E20.
TARGET_KAPPA: tuple[float, ...] = lattice_spectrum(10, 2.0)
#: Targets :math:`x^* = \mu^2 - \kappa` (μ = :data:`MU`, σ_h = 1), descending.
TARGET_X: tuple[float, ...] = tuple(MU2 - k for k in TARGET_KAPPA)


def pcd_sweep(
    phi: torch.Tensor,
    w: torch.Tensor,
    *,
    k: int,
    mu: float,
    sigma_h: float,
    generator: torch.Generator | Sequence[torch.Generator] | None,
    networks_per_stream: int | None = None,
    noise_dtype: torch.dtype | None = None,
    workspace: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Advance persistent chains by one PCD-k sweep: ``h ~ p(h|φ)``, then k × (``φ ~ p(φ|h)``, ``h ~ p(h|φ)``).

    .. math::

        h = \sigma_h^2 W\phi + \sigma_h \xi, \qquad \phi = W^\top h/\mu^2 + \xi'/\mu .

    The hidden sample after the k-th visible sample is not drawn (it is unused).

    **Noise streams.** The networks form consecutive stream blocks of :math:`S` = ``networks_per_stream``
    (one block of all E if ``generator`` is a single generator); block b draws all its normals of the sweep by
    one ``normal_`` call on ``generator[b]``, for a full block of S networks (the rows past E are drawn and
    dropped): an (S, L) row-major array, :math:`L = |B|\,k\,(N_h + N_v)`, one row per network. A network's
    row is consumed in order: the first hidden sample's block, then the visible and hidden blocks alternately,
    each laid out (n, B) row-major (unit, chain). So a network's noise depends only on its block's generator
    and its place in the block. Each half-step is one ``baddbmm`` from its (E, n, B) noise view into a state
    buffer in the workspace, :math:`h^\top = \sigma_h \xi^\top + \sigma_h^2 W \phi^\top`, so a sweep
    allocates nothing beyond ``workspace``.

    Args:
        phi: chains, shape (E, B, N_v).
        w: weights, shape (E, N_h, N_v).
        k: number of visible samples (k >= 1).
        mu: visible mass μ.
        sigma_h: hidden standard deviation σ_h.
        generator: source of the Gaussian noise, on ``phi``'s device: one generator (one stream for all
            networks), or one per stream block (``networks_per_stream`` given).
        networks_per_stream: S, the networks per stream block, when ``generator`` is a sequence of
            :math:`\lceil E/S\rceil` generators.
        noise_dtype: dtype of the normals *and of the sweep's arithmetic* (default ``phi.dtype``); the result
            is returned in ``phi.dtype``. ``torch.float32`` on float64 chains halves the matrix-product cost and
            makes the draws 4–6× faster on CPUs; see :class:`GaussianRBM` (``float32_noise``) for its accuracy.
        workspace: optional 1-D buffer of at least :math:`n = (\text{blocks}\cdot S)\,L + E\,|B|\,(N_h + N_v)`
            elements (the normals, then the states) of dtype ``noise_dtype`` on ``phi``'s device,
            overwritten by the sweep (pass the same buffer every step to avoid a large allocation per step).
            It must not share memory with ``phi`` or ``out``; the result may be a view of it.
        out: optional tensor of ``phi``'s shape to write the result into (converted in the same pass); it may
            be ``phi`` itself, which is read only before the result is written.

    Returns:
        The chains' visible state after the k-th visible sample, shape (E, B, N_v): ``out`` if given, else a
        tensor of dtype ``phi.dtype``.

    Raises:
        ValueError: if ``k < 1``, the shapes of ``phi`` and ``w`` do not match, the generators do not cover
            the blocks, or ``workspace`` is too small,
            of another dtype or device, or overlaps ``phi``, or ``out`` has another shape.

    References: arXiv:2407.16427.

    Example:
        >>> w = torch.zeros(1, 2, 3, dtype=torch.float64)
        >>> phi = pcd_sweep(torch.ones(1, 50000, 3, dtype=torch.float64), w, k=3, mu=3.0, sigma_h=1.0,
        ...                 generator=torch.Generator().manual_seed(0))
        >>> round(float(phi.var()), 3)  # W = 0: φ ~ N(0, 1/μ²)
        0.111
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    if phi.ndim != 3 or w.ndim != 3 or w.shape[0] != phi.shape[0] or w.shape[2] != phi.shape[2]:
        raise ValueError(f"phi (E, B, N_v) and w (E, N_h, N_v) do not match: {tuple(phi.shape)}, {tuple(w.shape)}")
    if out is not None and out.shape != phi.shape:
        raise ValueError(f"out must have phi's shape {tuple(phi.shape)}, got {tuple(out.shape)}")
    e, b, n_v = phi.shape
    n_h = w.shape[1]
    dtype = noise_dtype or phi.dtype
    if isinstance(generator, torch.Generator) or generator is None:
        gens: Sequence[torch.Generator | None] = [generator]
        per = e
    else:
        gens, per = generator, int(networks_per_stream or 0)
        if per < 1 or len(gens) != block_count(e, per):
            raise ValueError(
                f"{len(gens)} generators do not cover {e} networks in blocks of networks_per_stream="
                f"{networks_per_stream!r}"
            )
    row = b * k * (n_h + n_v)  # normals per network and sweep
    n_noise = len(gens) * per * row
    n = n_noise + e * b * (n_h + n_v)  # the normals, then one hidden and one visible state
    if workspace is None:
        workspace = torch.empty(n, dtype=dtype, device=phi.device)
    elif (
        workspace.ndim != 1
        or workspace.numel() < n
        or workspace.dtype != dtype
        or workspace.device != phi.device
        or not workspace.is_contiguous()
    ):
        raise ValueError(
            f"workspace must be a contiguous 1-D {dtype} tensor of >= {n} elements on {phi.device}, got "
            f"{workspace.dtype} {tuple(workspace.shape)} on {workspace.device}"
        )
    elif any(
        t is not None and workspace.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() for t in (phi, out)
    ):
        raise ValueError("workspace must not share memory with phi or out")
    noise = workspace[:n_noise].view(len(gens) * per, row)  # network-major: one row per network
    normal_by_block_(noise, gens, per)
    h_buf, v_buf = workspace[n_noise:n].split([e * n_h * b, e * n_v * b])
    h_buf, v_buf = h_buf.view(e, n_h, b), v_buf.view(e, n_v, b)  # contiguous: fast batched products
    w_d = w.to(dtype)  # (E, N_h, N_v); a copy only when the sweep runs in another dtype
    w_t = w_d.mT  # (E, N_v, N_h), a view: the matrix products read it transposed
    offset = 0

    def block(m: int) -> torch.Tensor:  # the next (E, m, B) block of each network's normals (a strided view)
        nonlocal offset
        offset += m * b
        return noise[:e, offset - m * b : offset].view(e, m, b)

    # Each half-step reads its noise block and writes its own contiguous state buffer (an in-place baddbmm_ on
    # the strided noise view would be ~10x slower on CPUs).
    phi_t = phi.mT.to(dtype)  # (E, N_v, B), a view unless the dtype changes
    h_t = torch.baddbmm(block(n_h), w_d, phi_t, beta=sigma_h, alpha=sigma_h**2, out=h_buf)  # (E, N_h, B)
    for step in range(k):
        phi_t = torch.baddbmm(block(n_v), w_t, h_t, beta=1.0 / mu, alpha=1.0 / mu**2, out=v_buf)  # (E, N_v, B)
        if step < k - 1:
            h_t = torch.baddbmm(block(n_h), w_d, phi_t, beta=sigma_h, alpha=sigma_h**2, out=h_buf)
    return phi_t.mT.to(phi.dtype) if out is None else out.copy_(phi_t.mT)


def chain_covariance(phi: torch.Tensor) -> torch.Tensor:
    r"""Chain estimate :math:`\hat C = \frac1{|B|}\sum_b \phi^{(b)}\phi^{(b)\top}`: (E, B, N) → (E, N, N).

    Example:
        >>> chain_covariance(torch.ones(2, 4, 3)).shape
        torch.Size([2, 3, 3])
    """
    return torch.bmm(phi.mT, phi).div_(phi.shape[1])


def rbm_surrogate_loss(w: torch.Tensor, k_inv: torch.Tensor, c_hat: torch.Tensor, sigma_h: float) -> torch.Tensor:
    r"""Loss whose negative gradient is the (E21) update direction, summed over the ensemble.

    .. math::

        \mathcal L = \sum_e \Big[-\tfrac12\operatorname{tr}(W_e K^{-1} W_e^\top)
        + \tfrac12\sigma_h^2 \operatorname{tr}(W_e \hat C_e W_e^\top)\Big]
        = \tfrac12 \sum_e \langle W_e, G_e\rangle, \qquad G_e = \sigma_h^2 W_e \hat C_e - W_e K^{-1}.

    Since :math:`K^{-1}` and :math:`\hat C_e` are symmetric, :math:`\partial\mathcal L/\partial W_e = G_e`
    exactly. The graph is built so that autograd returns this :math:`G` (one batched product, computed once
    and detached) instead of differentiating through the products: with
    :math:`s = \langle W, G\rangle`, the returned value is :math:`s - \tfrac12\,\mathrm{sg}(s) = \mathcal L`
    (sg: stop-gradient) and its gradient is :math:`G`.

    Args:
        w: weights, shape (E, N_h, N_v).
        k_inv: target covariance :math:`K_\phi^{-1}`, shape (N_v, N_v), symmetric.
        c_hat: chain covariance (detached), shape (E, N_v, N_v), symmetric.
        sigma_h: hidden standard deviation.

    Example:
        >>> w = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> _ = w.requires_grad_()
        >>> eye, zero = torch.eye(2, dtype=torch.float64), torch.zeros(3, 2, 2, dtype=torch.float64)
        >>> rbm_surrogate_loss(w, eye, zero, 1.0).backward()  # K⁻¹ = 1, Ĉ = 0: −∂L/∂W = W
        >>> bool(torch.allclose(-w.grad, w.detach()))
        True
    """
    with torch.no_grad():  # G = W (σ² Ĉ − K⁻¹) = ∂L/∂W, (E, N_h, N_v): one pass for A, one batched product
        g = torch.bmm(w, torch.add(k_inv.neg(), c_hat, alpha=sigma_h**2))
    s = torch.dot(w.reshape(-1), g.reshape(-1))  # Σ_e ⟨W_e, G_e⟩ = 2L, gradient G (g carries no graph)
    return s - 0.5 * s.detach()


class GaussianRBM(EnsembleModule):
    """An ensemble of Gaussian RBMs trained by (E21) with exact positive phase and PCD-3 chains (docs/science.md).

    Args:
        networks: ensemble size E.
        lr: learning rate α.
        batch_size: persistent chains per network |B|.
        seed: seeds W₀ and the training generators (reference_models.streams).
        n_sites: lattice sites = visible nodes N_v.
        n_hidden: hidden nodes N_h.
        mu: visible mass μ (not trained).
        lattice_mass: mass m of the target :math:`K_\\phi`.
        sigma_h: hidden standard deviation σ_h.
        gibbs_steps: k of PCD-k.
        init_std: standard deviation of the i.i.d. Gaussian W₀.
        float32_noise: run the Gibbs sweep in float32: float32 normals and float32 chain arithmetic, while the
            weights, the stored chains, :math:`\\hat C_B` and the update stay float64. 3–4× faster on CPUs,
            where float64 normals dominate the step. The float32 normals' tail is cut near 5.8σ (probability
            < 1e-8 per draw) and each draw and product is rounded at 6e-8 relative; the sweep is a contraction
            (spectral radius :math:`\\sigma_h^2 x_{\\max}/\\mu^2 < 1`), so the rounding does not accumulate and
            changes the chain covariance by ~1e-7 relative, far below its 1/√|B| sampling noise. Off by
            default (the papers' float64 throughout).
        networks_per_stream: networks per random-stream block (W₀ and the Gibbs noise of a network depend only
            on the seed, this and its index; data-parallel ranks train whole blocks, :class:`EnsembleModule`).
            Each step draws whole blocks, so up to ``networks_per_stream - 1`` networks' noise is drawn and
            dropped when it does not divide E.

    Raises:
        TypeError, ValueError: for a hyper-parameter of the wrong type or out of range (the message names it).

    Example:
        >>> rbm = GaussianRBM(networks=4, batch_size=8, seed=0)
        >>> rbm.weight.shape, rbm.weight.dtype, rbm.chains.shape, rbm.eigenvalues().shape
        (torch.Size([4, 10, 10]), torch.float64, torch.Size([4, 8, 10]), torch.Size([4, 10]))
    """

    chains: torch.Tensor  # buffers (registered in __init__)
    k_inv: torch.Tensor
    sharded_buffers = ("chains",)

    def __init__(
        self,
        networks: int = 100,
        lr: float = 0.1,
        batch_size: int = 16,
        seed: int = 0,
        *,
        n_sites: int = 10,
        n_hidden: int = 10,
        mu: float = MU,
        lattice_mass: float = 2.0,
        sigma_h: float = 1.0,
        gibbs_steps: int = 3,
        init_std: float = 0.1,
        float32_noise: bool = False,
        networks_per_stream: int = 16,
    ) -> None:
        super().__init__()
        networks, batch_size = require_int("networks", networks, 1), require_int("batch_size", batch_size, 1)
        require_int("seed", seed, 0), require_int("n_sites", n_sites, 3), require_int("n_hidden", n_hidden, 1)
        require_int("gibbs_steps", gibbs_steps, 1), require_float("init_std", init_std, positive=False)
        require_int("networks_per_stream", networks_per_stream, 1)
        if not isinstance(float32_noise, bool):
            raise TypeError(f"float32_noise must be a bool, got {float32_noise!r}")
        for name, value in (("lr", lr), ("mu", mu), ("lattice_mass", lattice_mass), ("sigma_h", sigma_h)):
            require_float(name, value)
        self.save_hyperparameters()
        w0 = init_std * randn_by_block(networks, networks_per_stream, (n_hidden, n_sites), seed=seed, purpose=INIT)
        self.weight = torch.nn.Parameter(w0)  # (E, N_h, N_v)
        self.register_buffer("chains", torch.ones(networks, batch_size, n_sites, dtype=torch.float64))  # (E, B, N_v)
        k_inv = torch.linalg.inv(lattice_kinetic_operator(n_sites, lattice_mass))
        self.register_buffer("k_inv", 0.5 * (k_inv + k_inv.mT), persistent=False)  # (N_v, N_v), exactly symmetric
        self._noise: torch.Tensor | None = None  # the sweep's workspace, reused every step (not state)

    def _workspace(self, dtype: torch.dtype) -> torch.Tensor:
        """The shard's sweep workspace (:func:`pcd_sweep`), (re)allocated on a change of device, dtype or size."""
        hp = self.hparams
        rows, shard = len(self.shard_blocks) * hp.networks_per_stream, self.shard
        n = (rows * hp.gibbs_steps + shard.stop - shard.start) * hp.batch_size * (hp.n_hidden + hp.n_sites)
        ws = self._noise
        if ws is None or ws.numel() != n or ws.dtype != dtype or ws.device != self.device:
            ws = self._noise = torch.empty(n, dtype=dtype, device=self.device)
        return ws

    @property
    def steps_per_epoch(self) -> int:
        """Steps left to ``Trainer(max_steps)`` (one Lightning epoch covers the run), else 1 (the papers' "epoch")."""
        trainer = self._trainer
        if trainer is not None and trainer.max_steps > 0:
            return max(1, trainer.max_steps - trainer.global_step)
        return 1

    def training_step(self, batch: int, batch_idx: int) -> torch.Tensor:
        hp, shard = self.hparams, self.shard
        w = self.weight[shard]  # (E_shard, N_h, N_v): this rank's networks (all in one process)
        with torch.no_grad():
            noise_dtype = torch.float32 if hp.float32_noise else self.chains.dtype
            chains = self.chains[shard]  # a view: updated in place
            phi = pcd_sweep(
                chains,
                w,
                k=hp.gibbs_steps,
                mu=hp.mu,
                sigma_h=hp.sigma_h,
                generator=self.generators(),
                networks_per_stream=hp.networks_per_stream,
                noise_dtype=noise_dtype,
                workspace=self._workspace(noise_dtype),
                out=chains,
            )
            c_hat = chain_covariance(phi)  # (E_shard, N_v, N_v), from the stored float64 state
        return self.scaled(rbm_surrogate_loss(w, self.k_inv, c_hat, hp.sigma_h))

    @torch.no_grad()
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues x of :math:`W^\\top W` (unnormalised, as the papers), **descending** as the papers: (E, N_v)."""
        w = self.weight.detach()
        return torch.linalg.eigvalsh(w.mT @ w).flip(-1)

    def target_kappa_descending_x(self) -> tuple[float, ...]:
        """Spectrum κ of :math:`K_\\phi` ascending, i.e. aligned with :meth:`eigenvalues` (E20)."""
        return lattice_spectrum(self.hparams.n_sites, self.hparams.lattice_mass)

    def target_x(self) -> tuple[float, ...]:
        """Targets :math:`x^* = (\\mu^2 - \\kappa)/\\sigma_h^2`, descending, aligned with :meth:`eigenvalues`."""
        mu2, s2 = self.hparams.mu**2, self.hparams.sigma_h**2
        return tuple((mu2 - k) / s2 for k in self.target_kappa_descending_x())
