r"""Shared plumbing of the reference models: step-index data, GOE noise, the lattice operator, validators.

The reference models train an *ensemble* of :math:`E` independent small networks at once: one
``nn.Parameter`` named ``weight`` of shape ``(E, rows, cols)``, stepped by ``torch.optim.SGD(lr=α)``. Because
the data either do not exist (the RBM's positive phase is exact) or live in the module as buffers drawn from
the seed, the data loader only yields an index per step (:class:`StepIndexDataset`); a ``Trainer(max_steps=N)``
then drives N optimizer steps with no per-step host work beyond Lightning's own.

The ensemble base class (per-network random streams, data-parallel shards) and :func:`fit_reference` are in
reference_models.ensemble, the streams themselves in reference_models.streams.

References: arXiv:2407.16427, arXiv:2412.20496.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "StepIndexDataset",
    "goe_from_normals",
    "goe_noise",
    "lattice_kinetic_operator",
    "lattice_spectrum",
    "require_float",
    "require_int",
    "step_index_loader",
]


class StepIndexDataset(Dataset[int]):
    """A data set whose ``i``-th item is the integer ``start + i``: one item per optimizer step.

    Args:
        length: number of items (steps per Lightning epoch), at least 1.
        start: value of the first item.

    Raises:
        ValueError: if ``length < 1``.

    Example:
        >>> ds = StepIndexDataset(3, start=5)
        >>> len(ds), [ds[i] for i in range(len(ds))]
        (3, [5, 6, 7])
    """

    def __init__(self, length: int, start: int = 0) -> None:
        if int(length) < 1:
            raise ValueError(f"length must be >= 1, got {length!r}")
        self.length, self.start = int(length), int(start)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for StepIndexDataset of length {self.length}")
        return self.start + index


def step_index_loader(length: int, start: int = 0) -> DataLoader[int]:
    """An unbatched, unshuffled loader over :class:`StepIndexDataset` (plain ``int`` items, no worker processes)."""
    return DataLoader(StepIndexDataset(length, start), batch_size=None, shuffle=False, num_workers=0)


def require_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum``; else ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def require_float(name: str, value: object, *, positive: bool = True) -> float:
    """``value`` as a finite ``float`` that is ``> 0`` (``positive``) or ``>= 0``; else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    bound_ok = value > 0 if positive else value >= 0
    if not (math.isfinite(value) and bound_ok):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def goe_noise(
    shape: Sequence[int],
    noise: float,
    *,
    n: int = 2,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Symmetric Gaussian (GOE) matrices: off-diagonal variance :math:`\varepsilon^2`, diagonal :math:`2\varepsilon^2`.

    .. math::

        a_{ij} = a_{ji} \sim \mathcal N(0, \varepsilon^2)\ (i < j), \qquad a_{ii} \sim \mathcal N(0, 2\varepsilon^2).

    This is the per-sample gradient noise of the teacher–student model (docs/science.md, E25). The mean of
    :math:`|B|` independent draws is again of this form with :math:`\varepsilon \to \varepsilon/\sqrt{|B|}`.

    Args:
        shape: leading (batch) shape; the result has shape ``(*shape, n, n)``.
        noise: :math:`\varepsilon \ge 0`.
        n: matrix size.
        generator: source of randomness (on ``device``).
        dtype: floating dtype of the result.
        device: device of the result.

    Raises:
        ValueError: if ``noise < 0`` or ``n < 1``.

    References: arXiv:2407.16427.

    Example:
        >>> a = goe_noise((20000,), 0.5, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.equal(a, a.mT)), round(float(a[:, 0, 0].var() / a[:, 0, 1].var()), 1)
        (True, 2.0)
    """
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    return goe_from_normals(torch.randn((*shape, n, n), generator=generator, dtype=dtype, device=device), noise)


def goe_from_normals(g: torch.Tensor, noise: float) -> torch.Tensor:
    r"""GOE matrices from i.i.d. standard normals ``g`` of shape (..., n, n): the strict upper triangle mirrored.

    .. math::

        a_{ij} = a_{ji} = \varepsilon\, g_{ij}\ (i < j), \qquad a_{ii} = \sqrt2\,\varepsilon\, g_{ii};

    the strict lower triangle of ``g`` is not used. :func:`goe_noise` draws ``g`` and calls this.

    Example:
        >>> goe_from_normals(torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64), 0.5).tolist()
        [[0.7071067811865476, 1.0], [1.0, 2.8284271247461903]]
    """
    n = g.shape[-1]
    eye = torch.eye(n, dtype=g.dtype, device=g.device)
    upper = g * torch.ones_like(eye).triu_(1)  # masks broadcast: far faster than triu/diag_embed on many small matrices
    return noise * (upper + upper.mT + g * (math.sqrt(2.0) * eye))


def lattice_kinetic_operator(
    n_sites: int, mass: float, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""The periodic 1-D lattice operator :math:`K_\phi = -\partial^2 + m^2` (docs/science.md, E19), shape ``(N, N)``.

    .. math::

        (K_\phi)_{ii} = 2 + m^2, \qquad (K_\phi)_{i, i\pm1 \bmod N} = -1 .

    Args:
        n_sites: number of lattice sites :math:`N \ge 3`.
        mass: lattice mass :math:`m`.
        dtype: floating dtype.
        device: device of the result.

    Raises:
        ValueError: if ``n_sites < 3``.

    References: arXiv:2407.16427 (set-up of arXiv:2309.15002).

    Example:
        >>> k = lattice_kinetic_operator(10, 2.0)
        >>> k[0, :3].tolist(), k[0, -1].item(), k.sum(dim=1).unique().tolist()
        ([6.0, -1.0, 0.0], -1.0, [4.0])
    """
    if n_sites < 3:
        raise ValueError(f"n_sites must be >= 3, got {n_sites!r}")
    eye = torch.eye(n_sites, dtype=dtype, device=device)
    shift = torch.roll(eye, 1, dims=1)
    return (2.0 + mass**2) * eye - shift - shift.mT


def lattice_spectrum(n_sites: int, mass: float) -> tuple[float, ...]:
    r"""Eigenvalues of :math:`K_\phi` in ascending order (docs/science.md, E20).

    .. math::

        \kappa_n = m^2 + 4 \sin^2\frac{\pi n}{N}, \qquad n = 0, \dots, N - 1 .

    Raises:
        ValueError: if ``n_sites < 3``.

    References: arXiv:2407.16427.

    Example:
        >>> [round(k, 6) for k in lattice_spectrum(10, 2.0)][:4]
        [4.0, 4.381966, 4.381966, 5.381966]
    """
    if n_sites < 3:
        raise ValueError(f"n_sites must be >= 3, got {n_sites!r}")
    return tuple(sorted(mass**2 + 4.0 * math.sin(math.pi * n / n_sites) ** 2 for n in range(n_sites)))
