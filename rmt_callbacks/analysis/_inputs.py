r"""What :func:`~rmt_callbacks.analyze` accepts, read into the candidates of :mod:`rmt_callbacks.spectral.selection`.

* An ``nn.Module``: eager, ``torch.jit.script``-ed or ``torch.jit.trace``-d, ``torch.compile``-d (module kinds by
  type, or by a scripted module's ``original_name``).
* A state_dict: any ``Mapping[str, Tensor]`` (non-tensor values are ignored; a Lightning checkpoint dict is read
  from its ``"state_dict"`` key). It holds no module types, so they are inferred from names and shapes:

  - ``…in_proj_weight`` ``(3E, E)``: attention, split into q/k/v; ``…q/k/v_proj_weight``: attention;
  - ``…weight_ih_l*`` / ``weight_hh_l*`` (``_reverse`` too) and a cell's ``weight_ih`` / ``weight_hh``: recurrent,
    split into gate blocks, the gate count being the rows of ``weight_hh`` over the hidden size (the columns of
    ``weight_hr_l*`` if there is a projection, else of ``weight_hh``): 4 is an LSTM (gates named ``i f g o``),
    3 a GRU (``r z n``), 1 a plain RNN; ``weight_hr_l*``: one matrix;
  - any other ``…weight`` with ``ndim == 2``: a matrix (source ``"matrix"``: a Linear and an Embedding look alike);
  - ``…weight`` with ``ndim >= 3``: a batch over its leading dimensions (``"ensemble"``). A convolution's weight
    ``(out, in, k…)`` cannot be told from an ensemble: it is analysed as a batch of ``(k…)`` trailing matrices,
    not as the module's per-position ``(out, in)`` slices; pass the module for those (or ``include``/``exclude``);
  - a parametrized weight (``…parametrizations.weight.original*``): the applied weight where the state_dict
    determines it exactly, under the name ``….weight`` (weight norm, :math:`g\,v/\|v\|`; spectral norm from its
    stored ``_u``, ``_v``, as applied in eval mode); otherwise (orthogonal, user parametrizations) a skipped result
    whose reason says to pass the module. A raw original is never analysed under the weight's name.
  - an old-style, hook-based ``torch.nn.utils.weight_norm`` (``…X_g`` + ``…X_v``, no ``…X``) or ``spectral_norm``
    (``…X_orig`` + ``…X_u`` + ``…X_v``): likewise the weight it applies, exactly, under ``…X``; a spectral norm
    whose ``dim`` the shapes leave ambiguous is a skipped result saying why;
  - a tensor saved under several names (tied weights): analysed once, under its first name
    (:attr:`ModelAnalysis.tied <rmt_callbacks.analysis.ModelAnalysis.tied>` lists the others).
* A path (``str`` or ``os.PathLike``): ``.safetensors`` (needs the optional ``safetensors`` package), or
  ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` read by ``torch.load(path, map_location="cpu", weights_only=True)``
  only: a file that needs arbitrary unpickling (a whole pickled module, a custom class) is refused, never run.
  A TorchScript archive (``torch.jit.save``) is refused too, with a message saying to ``torch.jit.load`` it and pass
  the module: it is not loaded for you, so that the rule stays simple (files are read as weights only). An
  unreadable ``.safetensors`` file is a ``ValueError`` naming the file and what went wrong.

References: ``torch.load(weights_only=True)``; the safetensors format (huggingface/safetensors).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch._weights_only_unpickler import UnpicklingError as _UnpicklingError  # pickle's, re-exported

from ..spectral.matrices import GATED, PROJECTION, applied_from_originals, legacy_norms
from ..spectral.selection import Candidate, candidates, unwrap

__all__ = ["ACCEPTED", "read_source", "state_candidates"]

ACCEPTED = (
    "an nn.Module (eager, torch.jit scripted or traced, torch.compile'd), a state_dict (a Mapping[str, Tensor], or "
    "a Lightning checkpoint dict with a 'state_dict'), or a path (str / os.PathLike) to a .safetensors, .pt, .pth, "
    ".bin or .ckpt file"
)
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_ORIGINAL = re.compile(r"(?P<owner>(?:.*\.)?)parametrizations\.(?P<attr>[^.]+)\.(?P<part>original\d*)")
_PARAMETRIZATION_STATE = re.compile(r"(?P<owner>(?:.*\.)?)parametrizations\.(?P<attr>[^.]+)\.(?P<rest>\d+\..*)")
_ATTENTION = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def read_source(source: object) -> tuple[list[Candidate], str]:
    """The candidates of ``source`` and how to name it in messages.

    Raises:
        TypeError: ``source`` is none of :data:`ACCEPTED`.
        ValueError: empty, meta-device weights, an unreadable or unsafe file.
        ImportError: a ``.safetensors`` file without the ``safetensors`` package.
    """
    if isinstance(source, nn.Module):
        what = type(unwrap(source)).__name__
        if isinstance(source, torch.jit.ScriptModule):
            what = str(getattr(source, "original_name", what))
        cands = candidates(source)
        if not cands:
            raise ValueError(f"the model {what} has no parameters: nothing to analyse; pass a model with weights")
    elif isinstance(source, Mapping):
        what, cands = "the state_dict", state_candidates(_state_dict_of(source, "the state_dict"))
    elif isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        what, cands = repr(path), state_candidates(_state_dict_of(read_file(path), repr(path)))
    else:
        raise TypeError(f"analyze accepts {ACCEPTED}; got {type(source).__name__}")
    meta = [c.name for c in cands if c.tensor.is_meta]
    if meta:
        raise ValueError(
            f"the weights of {what} are on the meta device (shapes without values: {meta[:3]}"
            f"{' …' if len(meta) > 3 else ''}); there is nothing to analyse. Pass the module after loading real "
            "weights (e.g. model.to_empty(device='cpu') then model.load_state_dict(...)), or pass the state_dict "
            "or the checkpoint / .safetensors path itself"
        )
    return cands, what


def _state_dict_of(obj: object, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a state_dict (or of a Lightning checkpoint's ``"state_dict"``)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what} holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors)")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(
            f"{what} holds no tensors: nothing to analyse; pass model.state_dict() of a model with weights"
        )
    return tensors


def read_file(path: str) -> object:
    """The contents of a ``.safetensors`` or ``.pt``/``.pth``/``.bin``/``.ckpt`` file, read without running code.

    Raises:
        ImportError: ``.safetensors`` without the ``safetensors`` package.
        ValueError: another suffix, or a torch file that needs arbitrary unpickling.
        FileNotFoundError: no such file.
    """
    lower = path.lower()
    if lower.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ImportError(
                f"reading {path!r} needs the optional safetensors package: pip install safetensors"
            ) from exc
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path!r}")
        try:
            return load_file(path, device="cpu")
        except Exception as exc:  # safetensors' SafetensorError (header too small, bad JSON, truncated data, ...)
            raise ValueError(f"cannot read {path!r} as a .safetensors file: {type(exc).__name__}: {exc}") from exc
    if lower.endswith(_TORCH_SUFFIXES):
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path!r}")
        if _is_torchscript(path):
            raise ValueError(
                f"{path!r} is a TorchScript archive (torch.jit.save), not a state_dict or checkpoint: analyze reads "
                "files with torch.load(weights_only=True) only. Load it yourself with module = torch.jit.load(path) "
                "and pass the module: analyze(module)"
            )
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except _UnpicklingError as exc:
            raise ValueError(
                f"{path!r} cannot be read with torch.load(weights_only=True): it needs arbitrary unpickling (a whole "
                "pickled module or a custom class), which can run any code and is refused. Save the weights as a "
                "state_dict instead: torch.save(model.state_dict(), path), or safetensors.torch.save_file(...); or, "
                "only if you trust the file, load the module yourself and pass it"
            ) from exc
        except (RuntimeError, EOFError, OSError) as exc:  # not a torch.save file, cut short, unreadable
            raise ValueError(f"cannot read {path!r} as a torch checkpoint: {type(exc).__name__}: {exc}") from exc
    raise ValueError(f"cannot read {path!r}: expected a .safetensors, {', '.join(_TORCH_SUFFIXES)} file")


def _is_torchscript(path: str) -> bool:
    """Whether ``path`` is a ``torch.jit.save`` archive: a zip holding ``…/constants.pkl`` and ``…/code/``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _stored(tensors: Mapping[str, torch.Tensor], prefix: str, attr: str) -> torch.Tensor | None:
    """A weight's tensor, or one of its parametrization's originals of the same shape (new- and old-style)."""
    keys: tuple[str, ...] = (attr, f"parametrizations.{attr}.original", f"parametrizations.{attr}.original1")
    keys += (f"{attr}_v", f"{attr}_orig")
    return next((tensors[prefix + k] for k in keys if prefix + k in tensors), None)


def _recurrent_gates(tensors: Mapping[str, torch.Tensor], name: str) -> int | None:
    """Gate blocks of the recurrent weight ``name``: rows of its ``weight_hh`` over the hidden size."""
    owner, _, attr = name.rpartition(".")
    prefix = f"{owner}." if owner else ""
    suffix = attr.removeprefix("weight_ih").removeprefix("weight_hh")
    hh, hr = (_stored(tensors, prefix, f"{w}{suffix}") for w in ("weight_hh", "weight_hr"))
    if hh is None or hh.ndim != 2:
        return None
    hidden = hr.shape[1] if hr is not None and hr.ndim == 2 else hh.shape[1]
    return hh.shape[0] // hidden if hidden and hh.shape[0] % hidden == 0 else None


def _kind(tensors: Mapping[str, torch.Tensor], name: str) -> tuple[str | None, int | None]:
    attr = name.rpartition(".")[2]
    if attr in _ATTENTION:
        return "attention", None
    if GATED.fullmatch(attr):
        return "recurrent", _recurrent_gates(tensors, name)
    if PROJECTION.fullmatch(attr):
        return "recurrent", None
    return ("tensor" if attr == "weight" else None), None


def state_candidates(tensors: Mapping[str, torch.Tensor]) -> list[Candidate]:
    """The candidates of a state_dict, kinds inferred from names and shapes (module docstring); tied tensors once.

    Examples:
        >>> sd = nn.LSTM(3, 2).state_dict()
        >>> [(c.name, c.kind, c.gates) for c in state_candidates(sd) if c.tensor.ndim == 2]
        [('weight_ih_l0', 'recurrent', 4), ('weight_hh_l0', 'recurrent', 4)]
    """
    originals: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    states: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if m := _ORIGINAL.fullmatch(key):
            originals.setdefault((m["owner"], m["attr"]), {})[m["part"]] = t
        elif m := _PARAMETRIZATION_STATE.fullmatch(key):
            states.setdefault((m["owner"], m["attr"]), {})[m["rest"]] = t
    owners: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        owner, _, attr = key.rpartition(".")
        owners.setdefault(owner + "." if owner else "", {})[attr] = t
    legacy: dict[str, tuple[str, tuple[str, ...], Any]] = {}
    behind: dict[str, str] = {}  # the keys of an old-style norm (its buffers too) -> its weight's name
    for o, local in owners.items():
        for x, (attrs, compute) in legacy_norms(local, local).items():
            legacy[o + x] = (o, attrs, compute)
            behind.update({o + a: o + x for a in (*attrs, f"{x}_u", f"{x}_v") if a in local})
    out: list[Candidate] = []
    seen: dict[tuple[Any, ...], str] = {}
    aliases: dict[str, list[str]] = {}
    for key, t in tensors.items():
        if (weight := behind.get(key)) is not None:  # old-style weight_norm / spectral_norm: the weight it applies
            if weight in legacy:
                out.append(_legacy(weight, *legacy.pop(weight), tensors))
            continue
        if m := _ORIGINAL.fullmatch(key):
            group = originals.pop((m["owner"], m["attr"]), None)
            if group is not None:  # the first original of the group stands for it
                state = states.get((m["owner"], m["attr"]), {})
                out.append(_parametrized(m["owner"], m["attr"], group, state, tensors))
            continue
        if _PARAMETRIZATION_STATE.fullmatch(key):
            continue  # a parametrization's own buffers (spectral norm's u, v): not weights
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if not t.is_meta and t.untyped_storage().data_ptr() and ident in seen:
            aliases.setdefault(seen[ident], []).append(key)  # a tied weight saved under two names: analysed once
            continue
        seen[ident] = key
        kind, gates = _kind(tensors, key)
        out.append(Candidate(key, key.rpartition(".")[2], t, kind, ((key, t),), gates))
    return [replace(c, aliases=tuple(aliases[c.name])) if c.name in aliases else c for c in out]


def _legacy(
    name: str, owner: str, attrs: tuple[str, ...], compute: Any, tensors: Mapping[str, torch.Tensor]
) -> Candidate:
    raw = tuple((owner + a, tensors[owner + a]) for a in attrs)
    kind, gates = _kind(tensors, name)
    applied, attr = compute(), name.rpartition(".")[2]
    if isinstance(applied, str):
        reason = (
            f"the weight an old-style weight_norm / spectral_norm applies cannot be computed from "
            f"{[n for n, _ in raw]} alone (their shapes leave its dim ambiguous); pass the nn.Module itself"
        )
        return Candidate(name, attr, max((t for _, t in raw), key=lambda t: t.ndim), kind, raw, gates, skipped=reason)
    return Candidate(name, attr, applied, kind, raw, gates)


def _parametrized(
    owner: str,
    attr: str,
    group: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    tensors: Mapping[str, torch.Tensor],
) -> Candidate:
    name = f"{owner}{attr}"
    raw = tuple((f"{owner}parametrizations.{attr}.{k}", v) for k, v in sorted(group.items()))
    kind, gates = _kind(tensors, name)
    applied = applied_from_originals(group, state)
    if isinstance(applied, str):
        return Candidate(name, attr, max(group.values(), key=lambda t: t.ndim), kind, raw, gates, skipped=applied)
    return Candidate(name, attr, applied, kind, raw, gates)
