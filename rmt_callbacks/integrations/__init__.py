"""The monitors outside Lightning: a plain PyTorch loop and Hugging Face ``transformers.Trainer``.

* :func:`rmt_callbacks.watch` (:mod:`~rmt_callbacks.integrations.loop`): ``watcher.step()`` after each optimizer
  step, ``watcher.close()`` at the end.
* :mod:`rmt_callbacks.integrations.transformers`: :class:`~rmt_callbacks.integrations.transformers.RMTCallback`, a
  ``TrainerCallback`` (``pip install "rmt-callbacks[transformers]"``; importing this package never imports
  ``transformers``).

Both drive the Lightning callbacks' own hooks through :class:`~rmt_callbacks.integrations._host.LoopHost`, so every
stack records the same keys and values.
"""

from __future__ import annotations
