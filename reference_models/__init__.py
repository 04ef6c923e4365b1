"""Reference models of arXiv:2407.16427 and arXiv:2412.20496 as Lightning modules that train whole ensembles.

Each model keeps its ensemble of E networks in one ``nn.Parameter`` named ``weight`` of shape
``(E, rows, cols)`` (the way the project's monitors see an ensemble), is stepped by ``torch.optim.SGD(lr=α)``
with one optimizer step per ``training_step``, reads its mini-batch size from ``hparams.batch_size``, and
draws its randomness per block of ``hparams.networks_per_stream`` networks from generators seeded by
``hparams.seed`` (reference_models.streams), so that an ensemble can be sharded over data-parallel ranks with
the same networks for any number of ranks (:class:`EnsembleModule`).

* :class:`GaussianRBM` — the Gaussian RBM learning a free lattice field (docs/science.md#gaussian-rbm), float64.
* :class:`TeacherStudent2x2` — the 2×2 teacher–student model with GOE gradient noise (docs/science.md#teacher-student).
* :class:`HiddenLayerNetwork` — the project's linear network with a fixed hidden layer (docs/science.md#hidden-layer).

:func:`fit_reference` trains one for a number of steps.

Example:
    >>> from reference_models import TeacherStudent2x2, fit_reference
    >>> trainer = fit_reference(TeacherStudent2x2(networks=2, batch_size=4, batches_per_epoch=5), 7)
    >>> trainer.global_step
    7

References: arXiv:2407.16427, arXiv:2412.20496.
"""

from __future__ import annotations

from .data import StepIndexDataset, goe_noise, lattice_kinetic_operator, lattice_spectrum
from .ensemble import EnsembleModule, fit_reference
from .gaussian_rbm import MU, MU2, TARGET_KAPPA, TARGET_X, GaussianRBM
from .hidden_layer import HIDDEN_LAYERS, HiddenLayerNetwork
from .teacher_student import TeacherStudent2x2, predicted_mean_spacing

__all__ = [
    "HIDDEN_LAYERS",
    "MU",
    "MU2",
    "TARGET_KAPPA",
    "TARGET_X",
    "EnsembleModule",
    "GaussianRBM",
    "HiddenLayerNetwork",
    "StepIndexDataset",
    "TeacherStudent2x2",
    "fit_reference",
    "goe_noise",
    "lattice_kinetic_operator",
    "lattice_spectrum",
    "predicted_mean_spacing",
]
