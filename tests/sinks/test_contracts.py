"""Contracts on the private names of Lightning, MLflow and torch that ``rmt_callbacks`` relies on.

Private names carry no compatibility promise: a minor release may rename, remove or change one. Each test here
checks one name exists and still does what our code expects (called on a small input, or read off a real object),
and its failure message names the ``rmt_callbacks`` file to fix. A new version that breaks one fails here, loudly,
instead of deep inside a training run.

Checked with lightning 2.6.6, mlflow 3.17.2, torch 2.13.0 (CPU build), Python 3.11: the versions of the
development environment, and the only ones this file was run with.

``pyproject.toml`` allows ``lightning>=2.4,<3``, ``mlflow>=3.7,<4`` and ``torch>=2.3,<2.16``, so the lower part
of each range is not covered by a run:

* lightning: ``MLFlowLogger``'s ``synchronous`` argument (passed by position from ``SpoolingMLFlowLogger``) came
  in 2.3 (Lightning PR #19639), so it is inside the range. The ``_add_prefix``/``_convert_params``/
  ``_flatten_dict`` helpers, ``_get_resolve_tags`` and the logger's underscore attributes are old, but 2.4 and 2.5
  were not run: run this file against them before relying on them.
* torch: the ``nn.Module`` internals, ``torch._weight_norm``, the hook-based norms, ``torch.compile``'s
  ``_orig_mod`` and the FSDP1/checkpoint wrapper names are older than 2.3 as far as known, but 2.3 to 2.12 were
  not run. ``torch._weights_only_unpickler.UnpicklingError`` is pickle's own class re-imported there.
* mlflow: no private name of MLflow itself is used (``MlflowClient.tracking_uri`` and the run-name tag are public);
  its private validator named in ``rmt_callbacks/sinks/keys.py`` is cited, not called.

``ssl._create_unverified_context`` (standard library, ``rmt_callbacks/sinks/_probe.py``) is checked too, and torch
DDP's ``_ddp_params_and_buffers_to_ignore`` opt-out, which ``reference_models/ensemble.py`` sets.
"""

from __future__ import annotations

import inspect
import pickle
import ssl
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from torch import nn

SPOOL = "rmt_callbacks/sinks/spool.py"
LOGGER = "rmt_callbacks/sinks/mlflow_logger.py"
GATHER = "rmt_callbacks/monitors/_gather.py"
SELECTION = "rmt_callbacks/spectral/selection.py"
MATRICES = "rmt_callbacks/spectral/matrices.py"
INPUTS = "rmt_callbacks/analysis/_inputs.py"
PROBE = "rmt_callbacks/sinks/_probe.py"
ENSEMBLE = "reference_models/ensemble.py"


def _broken(name: str, user: str, what: str) -> str:
    return f"private {name} changed ({what}); {user} depends on it: adapt it to the installed version"


# -- lightning.fabric.utilities.logger: mlflow_logger.py logs metrics and parameters as MLFlowLogger does --------


def test_lightning_logger_utilities() -> None:
    from lightning.fabric.utilities import logger as utils

    for name in ("_add_prefix", "_convert_params", "_flatten_dict"):
        assert callable(getattr(utils, name, None)), _broken(
            f"lightning.fabric.utilities.logger.{name}", LOGGER, "gone"
        )
    assert utils._convert_params(Namespace(lr=0.1)) == {"lr": 0.1}, _broken("_convert_params", LOGGER, "Namespace")
    assert utils._convert_params({"a": 1}) == {"a": 1}, _broken("_convert_params", LOGGER, "dict")
    flat = utils._flatten_dict({"opt": {"lr": 0.1, "betas": (0.9, 0.99)}, "n": 3})
    assert flat == {"opt/lr": 0.1, "opt/betas": (0.9, 0.99), "n": 3}, _broken("_flatten_dict", LOGGER, repr(flat))
    assert dict(utils._add_prefix({"loss": 1.0}, "train", "-")) == {"train-loss": 1.0}, _broken(
        "_add_prefix(metrics, prefix, separator)", LOGGER, "prefixed keys"
    )
    assert dict(utils._add_prefix({"loss": 1.0}, "", "-")) == {"loss": 1.0}, _broken("_add_prefix", LOGGER, "no prefix")


def test_lightning_resolve_tags() -> None:
    from lightning.pytorch.loggers import mlflow as lightning_mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    get = getattr(lightning_mlflow, "_get_resolve_tags", None)
    assert callable(get), _broken("lightning.pytorch.loggers.mlflow._get_resolve_tags", LOGGER, "gone")
    tags = get()({"team": "rmt", MLFLOW_RUN_NAME: "r1"})
    assert isinstance(tags, dict), _broken("_get_resolve_tags()(tags)", LOGGER, f"returns {type(tags).__name__}")
    assert tags["team"] == "rmt" and tags[MLFLOW_RUN_NAME] == "r1", _broken("_get_resolve_tags", LOGGER, repr(tags))


# -- MLFlowLogger's private state: spool.py (MlflowWriter.for_logger) and mlflow_logger.py read and set it ---------


def test_mlflow_logger_constructor_order() -> None:
    """``SpoolingMLFlowLogger.__init__`` passes every argument to ``MLFlowLogger.__init__`` by position."""
    from lightning.pytorch.loggers import MLFlowLogger

    names = list(inspect.signature(MLFlowLogger.__init__).parameters)[1:]
    expected = ["experiment_name", "run_name", "tracking_uri", "tags", "save_dir", "log_model", "prefix"]
    expected += ["artifact_location", "run_id", "synchronous"]
    assert names == expected, _broken("MLFlowLogger.__init__ argument order", LOGGER, f"now {names}")
    assert MLFlowLogger.LOGGER_JOIN_CHAR == "-", _broken("MLFlowLogger.LOGGER_JOIN_CHAR", LOGGER, "not '-'")


def test_mlflow_logger_private_attributes(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    uri, art = f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "art").as_uri()
    logger = MLFlowLogger("contracts", "run-1", uri, {"k": "v"}, prefix="p", artifact_location=art)
    before = {
        "_tracking_uri": (uri, SPOOL),
        "_run_id": (None, SPOOL),
        "_experiment_name": ("contracts", SPOOL),
        "_artifact_location": (art, SPOOL),
        "_initialized": (False, LOGGER),
        "_prefix": ("p", LOGGER),
        "_run_name": ("run-1", LOGGER),
        "_checkpoint_callback": (None, LOGGER),
        "tags": ({"k": "v"}, LOGGER),
    }
    for attr, (value, user) in before.items():
        got = getattr(logger, attr, "<missing>")
        assert got == value, _broken(f"MLFlowLogger.{attr}", user, f"{got!r} after __init__, expected {value!r}")
    client = getattr(logger, "_mlflow_client", None)
    assert isinstance(client, MlflowClient), _broken("MLFlowLogger._mlflow_client", SPOOL, repr(client))
    assert client.tracking_uri == uri, _broken("MLFlowLogger._mlflow_client", SPOOL, "another tracking URI")
    assert "checkpoint_callback" in inspect.signature(logger._scan_and_log_checkpoints).parameters, _broken(
        "MLFlowLogger._scan_and_log_checkpoints(checkpoint_callback)", LOGGER, "signature"
    )

    assert logger.experiment is client, _broken("MLFlowLogger.experiment", LOGGER, "not _mlflow_client")
    assert logger._initialized is True, _broken("MLFlowLogger._initialized", LOGGER, "False after experiment")
    run_id = logger._run_id
    assert isinstance(run_id, str) and run_id == logger.run_id, _broken("MLFlowLogger._run_id", SPOOL, repr(run_id))
    run = client.get_run(run_id)
    assert run.data.tags.get(MLFLOW_RUN_NAME) == "run-1" and run.data.tags.get("k") == "v", _broken(
        "MLFlowLogger run tags", LOGGER, repr(run.data.tags)
    )
    resumed = MLFlowLogger("contracts", tracking_uri=uri, run_id=run_id)
    assert resumed._run_id == run_id, _broken("MLFlowLogger._run_id", SPOOL, "run_id= not kept")


# -- torch.nn.Module internals: _gather.py copies module trees, selection.py walks them, matrices.py reads hooks ----


def test_module_internals() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    assert list(net._modules) == ["0", "1"], _broken("nn.Module._modules", f"{SELECTION}, {GATHER}", "children")
    assert list(net[0]._parameters) == ["weight", "bias"], _broken("nn.Module._parameters", GATHER, "parameters")
    assert "running_mean" in net[1]._buffers, _broken("nn.Module._buffers", GATHER, "buffers")
    assert isinstance(net[1].__dict__.get("_non_persistent_buffers_set"), set), _broken(
        "nn.Module._non_persistent_buffers_set", GATHER, "not a set in __dict__"
    )
    # stand_in: a module made with object.__new__ and a copied __dict__ reads its parameters from _parameters
    copy = object.__new__(nn.Linear)
    copy.__dict__.update(net[0].__dict__, _parameters={}, _buffers={}, _non_persistent_buffers_set=set())
    copy._parameters["weight"] = nn.Parameter(torch.ones(2, 3), requires_grad=False)
    assert [n for n, _ in copy.named_parameters()] == ["weight"] and copy.weight.sum() == 6, _broken(
        "nn.Module.__dict__ layout", GATHER, "a shallow copy does not read _parameters"
    )


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_old_style_norm_hooks() -> None:
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    wn = torch.nn.utils.weight_norm(nn.Linear(4, 3))  # deprecated, but users' old models still carry its hooks
    [hook] = wn._forward_pre_hooks.values()
    assert isinstance(hook, WeightNorm) and hook.name == "weight" and hook.dim == 0, _broken(
        "WeightNorm hook (.name, .dim) in _forward_pre_hooks", MATRICES, repr(vars(hook))
    )
    applied = torch._weight_norm(wn.weight_v.detach(), wn.weight_g.detach(), hook.dim)
    wn(torch.zeros(1, 4))
    assert torch.allclose(applied, wn.weight), _broken("torch._weight_norm(v, g, dim)", MATRICES, "another weight")

    sn = torch.nn.utils.spectral_norm(nn.Linear(4, 3)).eval()
    [hook] = sn._forward_pre_hooks.values()
    assert isinstance(hook, SpectralNorm) and hook.name == "weight" and hook.dim == 0, _broken(
        "SpectralNorm hook (.name, .dim)", f"{MATRICES}, {GATHER}", repr(vars(hook))
    )
    assert {"weight_u", "weight_v"} <= sn._buffers.keys() and "weight_orig" in sn._parameters, _broken(
        "spectral_norm's weight_orig/weight_u/weight_v", f"{MATRICES}, {GATHER}", "names"
    )
    u = sn.weight_u.clone()
    with torch.no_grad():
        w = hook.compute_weight(sn, False)
    assert torch.equal(u, sn.weight_u), _broken("SpectralNorm.compute_weight(module, False)", MATRICES, "iterated")
    expected = sn.weight_orig / torch.dot(sn.weight_u, sn.weight_orig @ sn.weight_v)
    assert torch.allclose(w, expected), _broken("SpectralNorm.compute_weight", MATRICES, "another weight")


def test_parametrized_spectral_norm_state() -> None:
    """New-style spectral norm: the state_dict holds ``original`` and the power-iteration ``0._u``, ``0._v``."""
    lin = torch.nn.utils.parametrizations.spectral_norm(nn.Linear(4, 3))
    lin(torch.zeros(1, 4))
    lin.eval()
    sd = lin.state_dict()
    keys = {k for k in sd if k.startswith("parametrizations.weight.")}
    expected = {"parametrizations.weight.original", "parametrizations.weight.0._u", "parametrizations.weight.0._v"}
    assert keys == expected, _broken("parametrizations.spectral_norm state keys", f"{MATRICES}, {INPUTS}", str(keys))
    w, u, v = (
        sd["parametrizations.weight.original"],
        sd["parametrizations.weight.0._u"],
        sd["parametrizations.weight.0._v"],
    )
    assert torch.allclose(lin.weight, w / torch.dot(u, w @ v)), _broken(
        "spectral_norm's _u, _v", MATRICES, "eval weight"
    )


# -- wrapper attribute names skipped in user-visible names: spectral/selection.py WRAPPER_ATTRS --------------------


def test_wrapper_attribute_names() -> None:
    from rmt_callbacks.spectral.selection import WRAPPER_ATTRS

    inner = nn.Linear(2, 2)
    compiled = torch.compile(inner)
    assert compiled._modules.get("_orig_mod") is inner, _broken("torch.compile's _orig_mod", SELECTION, "renamed")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available: the FSDP and checkpoint wrapper names cannot be checked")
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
    from torch.distributed.fsdp._common_utils import FSDP_WRAPPED_MODULE

    wrapped = CheckpointWrapper(inner)
    assert wrapped._modules.get("_checkpoint_wrapped_module") is inner, _broken(
        "CheckpointWrapper._checkpoint_wrapped_module", SELECTION, "renamed"
    )
    assert FSDP_WRAPPED_MODULE == "_fsdp_wrapped_module", _broken("FSDP1's _fsdp_wrapped_module", SELECTION, "renamed")
    assert set(WRAPPER_ATTRS) == {"_orig_mod", "_checkpoint_wrapped_module", FSDP_WRAPPED_MODULE}


# -- DDP's buffer opt-out: reference_models/ensemble.py keeps every ensemble buffer out of DDP's broadcast -----------


def test_ddp_params_and_buffers_to_ignore(tmp_path: Path) -> None:
    """``DistributedDataParallel`` reads ``module._ddp_params_and_buffers_to_ignore`` (names relative to the module).

    Checked on a real DDP wrapper in a one-process gloo group: the reference model's buffers are left out of the
    buffers DDP broadcasts from rank 0, a plain module's are not.
    """
    if not torch.distributed.is_available() or torch.distributed.is_initialized():
        pytest.skip("needs torch.distributed and no process group already running in this process")
    from torch.nn.parallel import DistributedDataParallel

    from reference_models import GaussianRBM

    torch.distributed.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        rbm, plain = GaussianRBM(networks=2, batch_size=2), nn.BatchNorm1d(2)
        ignored, kept = DistributedDataParallel(rbm), DistributedDataParallel(plain)
        names = {name for name, _ in rbm.named_buffers()}
        assert names == {"chains", "k_inv"}
        assert getattr(ignored, "parameters_to_ignore", None) == names, _broken(
            "DistributedDataParallel.parameters_to_ignore", ENSEMBLE, "module._ddp_params_and_buffers_to_ignore unread"
        )
        assert ignored.modules_buffers == [] and not ignored.will_sync_module_buffers(), _broken(
            "DDP's buffer sync", ENSEMBLE, "ignored buffers still broadcast"
        )
        assert len(kept.modules_buffers) == 3 and kept.will_sync_module_buffers()  # the check can fail
    finally:
        torch.distributed.destroy_process_group()


# -- torch.load(weights_only=True) refusals: analysis/_inputs.py catches torch._weights_only_unpickler's class -----


class _Custom:
    """Not on torch's allow-list: ``torch.load(weights_only=True)`` must refuse it."""


def test_weights_only_refusal_type(tmp_path: Path) -> None:
    from torch import _weights_only_unpickler

    error = getattr(_weights_only_unpickler, "UnpicklingError", None)
    assert error is pickle.UnpicklingError, _broken("torch._weights_only_unpickler.UnpicklingError", INPUTS, "gone")
    path = tmp_path / "custom.pt"
    torch.save({"x": _Custom()}, path)
    with pytest.raises(error):
        torch.load(path, weights_only=True)


def test_ssl_unverified_context() -> None:
    """The ``/health`` probe skips certificate checks as MLflow does when told to (stdlib's private factory)."""
    context = ssl._create_unverified_context()
    assert context.verify_mode == ssl.CERT_NONE, _broken("ssl._create_unverified_context", PROBE, "verifies")
