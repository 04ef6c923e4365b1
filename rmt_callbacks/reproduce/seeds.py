"""Per-setting seeds: what makes the settings of one ``rmt-reproduce`` run statistically independent.

Every setting of a command (an RBM (α, |B|), a teacher–student (α, |B|, ε), a hidden-layer experiment) seeds its
model from the run seed *and the setting*: settings are statistically independent, as the authors' runs were
(one W₀, noise stream and data set per setting, arXiv:2407.16427), instead of all sharing the draws of one seed
and a scan shifting as a block. The seed is recorded in ``summary.json`` and as the run's ``seed`` param.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["setting_seed"]


def setting_seed(seed: int, *setting: str | int | float) -> int:
    """The seed of one setting of a run seeded with ``seed``: a 63-bit integer ``>= 0``.

    numpy's ``SeedSequence`` of ``[seed, crc32(key)]``, ``key`` the canonical text of the setting (its parts joined
    by ``|``; integers as integers, other numbers by ``repr(float(v))``, so ``16``, ``np.int64(16)`` and ``16.0`` as
    a batch size differ only where their types do). Distinct settings, and distinct run seeds, give unrelated
    streams; the same setting always gives the same seed, in any process and on any machine.

    Raises:
        ValueError: ``seed`` negative, or no setting.
        TypeError: a part of the setting that is not a string or a number.

    Example:
        >>> setting_seed(0, "rbm", 0.1, 16) == setting_seed(0, "rbm", 0.1, np.int64(16))
        True
        >>> len({setting_seed(0, "rbm", 0.1, 16), setting_seed(0, "rbm", 0.1, 8), setting_seed(1, "rbm", 0.1, 16)})
        3
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"setting_seed: seed must be an integer >= 0, got {seed!r}")
    if not setting:
        raise ValueError("setting_seed: give the setting (e.g. 'rbm', lr, batch_size)")
    key = "|".join(_canonical(part) for part in setting)
    state = np.random.SeedSequence([int(seed), zlib.crc32(key.encode())]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & (2**63 - 1)


def _canonical(part: object) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, bool):
        raise TypeError(f"setting_seed: a setting part must be a string or a number, got {part!r}")
    if isinstance(part, int | np.integer):
        return str(int(part))
    if isinstance(part, float | np.floating):
        return repr(float(part))
    raise TypeError(f"setting_seed: a setting part must be a string or a number, got {type(part).__name__}")
