"""LightningCLI with ``SpectrumMonitor`` added from a YAML config: no Python change to the model.

    .venv/bin/python examples/cli.py fit --config examples/spectrum_monitor.yaml
    .venv/bin/python examples/cli.py fit --config examples/spectrum_monitor.yaml \\
        --trainer.callbacks.init_args.every_n_train_steps=20     # override any monitor argument

``save_config_callback=None``: Lightning's ``SaveConfigCallback`` writes the config into ``trainer.log_dir``,
which is ``None`` for an ``MLFlowLogger`` on a ``sqlite:`` or ``http:`` store (it would fail); log the config
to MLflow yourself if you want it there, or add a ``CSVLogger`` first in ``trainer.logger`` to keep it.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI
from mlp import MLP, SyntheticData  # examples/mlp.py: run this file from anywhere, its folder is on sys.path


def main(args: Sequence[str] | None = None) -> LightningCLI:
    """Run the CLI (``args``: the command line without the program name; ``None`` reads ``sys.argv``)."""
    return LightningCLI(MLP, SyntheticData, save_config_callback=None, args=args)


if __name__ == "__main__":
    main()
