r"""Per-network random streams of the reference models: the same numbers for a network however the ensemble is split.

An ensemble of :math:`E` networks is cut into consecutive *stream blocks* of ``networks_per_stream`` = :math:`S`
networks (block :math:`b` holds networks :math:`[bS, \min((b+1)S, E))`; the last block may be shorter). Block
:math:`b` has its own generators, one per purpose (:data:`INIT` initial weights, :data:`TRAIN` training noise,
:data:`NOISE` the teacher–student's fixed noise), each seeded from ``(seed, purpose, b)`` by :func:`stream_seed`.
Every draw of a block is made for a *full* block of :math:`S` rows (a shorter last block draws all :math:`S`
rows and drops the extra ones), so a network's random numbers depend only on the seed, :math:`S` and its index:
not on :math:`E`, not on the other networks, and not on which process trains it. Data-parallel ranks train
whole blocks (:func:`shard_blocks`; reference_models.ensemble).

References: arXiv:2407.16427, arXiv:2412.20496 (the ensembles whose networks these streams drive).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "DATA",
    "INIT",
    "NOISE",
    "TRAIN",
    "block_count",
    "normal_by_block_",
    "randn_by_block",
    "shard_blocks",
    "stream_seed",
]

INIT = 0  #: purpose of the initial weights W₀ (drawn on the CPU)
TRAIN = 1  #: purpose of the noise drawn during training (on the module's device)
DATA = 2  #: purpose of the teacher–student data sets (one stream per data set, on the CPU)
NOISE = 3  #: purpose of the teacher–student's fixed mini-batch noise (on the CPU)


def stream_seed(seed: int, purpose: int, block: int = 0) -> int:
    """A 63-bit seed for stream ``block`` of kind ``purpose`` in a run seeded with ``seed``: the one seed helper.

    Hashed by ``numpy.random.SeedSequence([seed, purpose, block])`` (entropy mixing, so nearby triples give
    unrelated seeds), reduced to 63 bits (``torch.Generator.manual_seed`` takes a signed 64-bit value).

    Example:
        >>> stream_seed(0, 1, 2) == stream_seed(0, 1, 2), stream_seed(0, 1, 2) != stream_seed(0, 2, 1)
        (True, True)
    """
    state = np.random.SeedSequence([int(seed), int(purpose), int(block)]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def block_count(networks: int, networks_per_stream: int) -> int:
    """Number of stream blocks, :math:`\\lceil E / S\\rceil`.

    Example:
        >>> block_count(16, 4), block_count(17, 4), block_count(3, 16)
        (4, 5, 1)
    """
    return -(-int(networks) // int(networks_per_stream))


def shard_blocks(blocks: int, world_size: int, rank: int) -> range:
    """The blocks rank ``rank`` of ``world_size`` trains: ``[rank·blocks//world_size, (rank+1)·blocks//world_size)``.

    Contiguous, in rank order, as even as possible (sizes differ by at most one), every block in exactly one shard.

    Raises:
        ValueError: if ``rank`` is not in ``[0, world_size)`` or ``world_size > blocks`` (a rank without a block).

    Example:
        >>> [list(shard_blocks(3, 2, r)) for r in range(2)]
        [[0], [1, 2]]
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size = {world_size}), got {rank!r}")
    if world_size > blocks:
        raise ValueError(f"{world_size} ranks cannot share {blocks} stream blocks: each rank needs at least one")
    return range(rank * blocks // world_size, (rank + 1) * blocks // world_size)


def randn_by_block(
    networks: int,
    networks_per_stream: int,
    shape: Sequence[int],
    *,
    seed: int,
    purpose: int,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Standard normals of shape ``(networks, *shape)`` drawn on the CPU, row e from block ``e // S``'s stream.

    Block b's generator (seeded ``stream_seed(seed, purpose, b)``) draws one ``(S, *shape)`` tensor; rows past
    ``networks`` are dropped.

    Example:
        >>> a = randn_by_block(3, 2, (4,), seed=0, purpose=INIT)
        >>> b = randn_by_block(8, 2, (4,), seed=0, purpose=INIT)
        >>> a.shape, bool(torch.equal(a, b[:3]))
        (torch.Size([3, 4]), True)
    """
    s = int(networks_per_stream)
    draws = [
        torch.randn(s, *shape, generator=torch.Generator().manual_seed(stream_seed(seed, purpose, b)), dtype=dtype)
        for b in range(block_count(networks, s))
    ]
    return torch.cat(draws)[:networks]


def normal_by_block_(out: torch.Tensor, generators: Sequence[torch.Generator | None], networks_per_stream: int) -> None:
    """Fill ``out`` (rows, ...) with standard normals in place: rows ``[bS, (b+1)S)`` by one call on ``generators[b]``.

    ``out`` must have exactly ``len(generators) · S`` rows (whole blocks) and be contiguous, so that each
    block is one ``normal_`` call on a contiguous ``(S, ...)`` tensor: the same numbers whatever the rest.

    Raises:
        ValueError: if ``out`` is not contiguous or has another number of rows.

    Example:
        >>> out = torch.empty(4, 3, dtype=torch.float64)
        >>> normal_by_block_(out, [torch.Generator().manual_seed(s) for s in (1, 2)], 2)
        >>> ref = torch.empty(2, 3, dtype=torch.float64).normal_(generator=torch.Generator().manual_seed(2))
        >>> bool(torch.equal(out[2:], ref))
        True
    """
    s = int(networks_per_stream)
    if not out.is_contiguous() or out.shape[0] != len(generators) * s:
        raise ValueError(
            f"out must be contiguous with {len(generators)} blocks × {s} = {len(generators) * s} rows, "
            f"got shape {tuple(out.shape)}{'' if out.is_contiguous() else ' (not contiguous)'}"
        )
    for b, gen in enumerate(generators):
        out[b * s : (b + 1) * s].normal_(generator=gen)
