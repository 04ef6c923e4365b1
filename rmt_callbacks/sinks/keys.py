r"""The one metric-key scheme of rmt-callbacks, and the cleaning that makes keys and paths safe for MLflow.

Every scalar the callbacks log is keyed

.. math::

    \texttt{key} = \texttt{prefix} \,\Vert\, \texttt{parameter} \,\Vert\, \texttt{"/"} \,\Vert\, \texttt{statistic},

built by :func:`metric_key` only; run tags are keyed ``prefix || parameter`` by :func:`tag_key` only. MLflow
accepts metric and tag keys matching ``^[/\w.\- ]*$`` of at most 250 characters, and since keys may become file
names, a key must also be a normalised relative POSIX path (no ``//``, no leading or trailing ``/``, no ``.`` or
``..`` segment). Cleaning replaces every character outside ``[A-Za-z0-9_/. -]`` by ``_``, drops empty segments and
turns ``.``/``..`` segments into ``_``. Artifact paths (``spectra/…``, ``figures/<matrix>/…``) are built by
:func:`artifact_path`, whose parts allow only ``[A-Za-z0-9_.-]``, so no path can leave the run's artifact root.

No two raw names share a key or a path: whenever cleaning changes a name, or a limit shortens it, a digest of the
*original* text is appended (``-`` and 11 hex digits of SHA-256), so ``"λ"`` and ``"μ"`` (both ``"_"`` once cleaned)
or two 300-character names with one 250-character head stay apart, while a name that is already valid is kept
exactly as it is (and cleaning is idempotent). In a key the parameter name gives way and the statistic stays at
the end; in an artifact path the digest goes before a file suffix (``a_b-0123456789a.png``); a path part is at
most :data:`MAX_SEGMENT_LENGTH` characters (file systems refuse names over 255 bytes). A change warns once per
name (or key). Two names collide only if SHA-256 digests cut to 44 bits do, or if a valid name is built to look
exactly like another name's cleaned form and digest.

References: MLflow REST API limits (https://mlflow.org/docs/latest/rest-api.html#log-batch).
"""

from __future__ import annotations

import hashlib
import re
import warnings

from .._checks import positive

__all__ = ["MAX_KEY_LENGTH", "MAX_SEGMENT_LENGTH", "artifact_path", "metric_key", "sanitize", "tag_key"]

MAX_KEY_LENGTH: int = 250
MAX_SEGMENT_LENGTH: int = 200
_DIGEST_LENGTH = 12  # "-" and 11 hex digits of SHA-256
_KEY_FORBIDDEN = re.compile(r"[^A-Za-z0-9_/. \-]")
_SEGMENT_FORBIDDEN = re.compile(r"[^A-Za-z0-9_.\-]")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}$")  # a file suffix the digest goes before
_warned: set[str] = set()


def sanitize(key: str, *, max_length: int = MAX_KEY_LENGTH) -> str:
    """Clean ``key`` for MLflow: forbidden characters become ``_``, the result is normalised as a relative path
    (empty segments dropped, ``.``/``..`` segments become ``_``) and, if that changed it or it is longer than
    ``max_length``, it ends in a digest of the original key (cut to ``max_length`` before the digest).

    Changed keys trigger a :class:`UserWarning` the first time each one is seen in this process.

    Args:
        key: the raw key.
        max_length: the largest allowed length (MLflow: 250).

    Returns:
        The cleaned key; ``key`` itself when it was already valid; distinct keys give distinct results.

    Raises:
        TypeError: if ``key`` is not a ``str``.
        ValueError: if ``max_length`` is not a positive integer, or nothing is left of ``key``.

    References: MLflow metric-key rules (``mlflow.utils.validation``).

    Examples:
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     a, b, c = sanitize("rmt/w/λ_max"), sanitize("rmt/w/μ_max"), sanitize("x" * 300)
        >>> a[:-11], a != b, len(c), sanitize(a) == a
        ('rmt/w/__max-', True, 250, True)
        >>> sanitize("rmt/fc1.weight/lambda_max")
        'rmt/fc1.weight/lambda_max'
    """
    if not isinstance(key, str):
        raise TypeError(f"sanitize: key must be a str, got {type(key).__name__} ({key!r})")
    max_length = positive("max_length", max_length, owner="sanitize", integer=True)
    clean = _normalise(_KEY_FORBIDDEN.sub("_", key))
    if not clean:
        raise ValueError(f"sanitize: key {key!r} has no characters left once cleaned")
    clean = _mark(key, clean, max_length)
    if clean != key and key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"metric key {key!r} is not valid for MLflow (allowed: [A-Za-z0-9_/. -] as a normalised relative "
            f"path, at most {max_length} characters); logging it as {clean!r}",
            UserWarning,
            stacklevel=2,
        )
    return clean


def _normalise(path: str, forbidden: re.Pattern[str] | None = None) -> str:
    """Drop empty segments, clean each segment with ``forbidden``, turn ``.`` and ``..`` into ``_``."""
    parts = [forbidden.sub("_", p) if forbidden else p for p in path.split("/") if p]
    return "/".join("_" if p in (".", "..") else p for p in parts)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[: _DIGEST_LENGTH - 1]


def _mark(raw: str, clean: str, length: int) -> str:
    """``raw`` if cleaning kept it and it fits in ``length``; else the head of ``clean`` and a digest of ``raw``."""
    if clean == raw and len(raw) <= length:
        return raw
    if len(clean) + _DIGEST_LENGTH <= length:
        return f"{clean}-{_digest(raw)}"
    return f"{clean[: max(length - _DIGEST_LENGTH, 0)]}-{_digest(raw)}"[:length]


def _name(name: str, room: int) -> str:
    """A parameter name as a valid key fragment of at most ``room`` characters (digest-marked when changed)."""
    clean = _normalise(_KEY_FORBIDDEN.sub("_", name))
    short = _mark(name, clean, room if room >= 2 * _DIGEST_LENGTH else max(len(clean), 1) + _DIGEST_LENGTH)
    if short != name and name not in _warned:  # else prefix and stat nearly fill the key: sanitize cuts it
        _warned.add(name)
        why = "too long for an MLflow key" if clean == name else "not valid in an MLflow key"
        warnings.warn(f"matrix name {name!r} is {why}; logging it as {short!r}", stacklevel=3)
    return short


def _check_str(function: str, **values: object) -> None:
    for arg, value in values.items():
        if not isinstance(value, str):
            raise TypeError(f"{function}: {arg} must be a str, got {type(value).__name__} ({value!r})")


def metric_key(prefix: str, name: str, stat: str) -> str:
    """Build the metric key ``f"{prefix}{name}/{stat}"``, the name cleaned (see the module docstring).

    Args:
        prefix: the callback's ``log_key_prefix`` (e.g. ``"rmt/"``; may be empty).
        name: the matrix name (a parameter name such as ``"encoder.0.weight"``, or ``"attn.in_proj_weight.q"``).
        stat: the statistic (e.g. ``"lambda_max"``, ``"mp/sigma2"``).

    Returns:
        The MLflow-safe key, at most :data:`MAX_KEY_LENGTH` characters. A valid name that fits is kept as is; a
        name that cleaning changes, or too long for the key, becomes its cleaned head and a digest of it, so the
        statistic stays at the end and distinct names stay distinct.

    Raises:
        TypeError: if an argument is not a ``str``.
        ValueError: if ``name`` or ``stat`` is empty.

    References: the module docstring (one documented key scheme); MLflow metric-key rules.

    Examples:
        >>> metric_key("rmt/", "fc1.weight", "lambda_max")
        'rmt/fc1.weight/lambda_max'
        >>> with warnings.catch_warnings():  # an over-long or invalid name is digest-marked, with a warning
        ...     warnings.simplefilter("ignore")
        ...     key, other = metric_key("rmt/", "x" * 300, "lambda_max"), metric_key("rmt/", "x" * 299, "lambda_max")
        ...     greek = [metric_key("rmt/", n, "lambda_max") for n in ("λ.weight", "μ.weight")]
        >>> len(key), key.endswith("/lambda_max"), key != other, greek[0] != greek[1], greek[0][:13]
        (250, True, True, True, 'rmt/_.weight-')
    """
    _check_str("metric_key", prefix=prefix, name=name, stat=stat)
    if not name or not stat:
        raise ValueError(f"metric_key: name and stat must be non-empty, got name={name!r}, stat={stat!r}")
    return sanitize(f"{prefix}{_name(name, MAX_KEY_LENGTH - len(prefix) - len(stat) - 1)}/{stat}")


def tag_key(prefix: str, name: str) -> str:
    """Build the run-tag key ``f"{prefix}{name}"`` (e.g. ``"rmt.skipped." + matrix``), the name cleaned as in
    :func:`metric_key`.

    Args:
        prefix: the tag family, e.g. ``"rmt.skipped."``.
        name: the matrix name.

    Returns:
        The MLflow-safe tag key, at most :data:`MAX_KEY_LENGTH` characters; distinct names give distinct keys (an
        over-long or invalid name becomes its cleaned head and a digest of it).

    Raises:
        TypeError: if an argument is not a ``str``.
        ValueError: if ``name`` is empty.

    References: MLflow tag-key rules (``mlflow.utils.validation._validate_tag_name``).

    Examples:
        >>> tag_key("rmt.skipped.", "fc1.weight")
        'rmt.skipped.fc1.weight'
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     a, b = tag_key("rmt.skipped.", "y" * 300 + ".a"), tag_key("rmt.skipped.", "y" * 300 + ".b")
        >>> len(a), a != b
        (250, True)
    """
    _check_str("tag_key", prefix=prefix, name=name)
    if not name:
        raise ValueError("tag_key: name must be non-empty")
    return sanitize(f"{prefix}{_name(name, MAX_KEY_LENGTH - len(prefix))}")


def artifact_path(*segments: str) -> str:
    """Join path segments into a relative artifact path that stays inside the run's artifact root.

    Each segment is split at ``/``; in every part characters outside ``[A-Za-z0-9_.-]`` become ``_``, empty
    parts are dropped and the parts ``"."`` and ``".."`` become ``"_"``, so no result can escape the root. A
    segment that this changed ends in a digest of the original segment (before a file suffix such as ``.png``),
    so distinct matrix names give distinct paths; an empty segment is left out. A part longer than
    :data:`MAX_SEGMENT_LENGTH` keeps its head and a hash of itself (its last 8 characters, such as a file suffix,
    stay at the end). Valid paths pass unchanged: ``artifact_path(artifact_path(*s)) == artifact_path(*s)``.

    Args:
        segments: the path parts, e.g. ``("figures", "fc1.weight", "step_00000010.png")``.

    Returns:
        A POSIX relative path.

    Raises:
        TypeError: if a segment is not a ``str``.
        ValueError: if no segment is given, or all are empty.

    References: OWASP path traversal (CWE-22).

    Examples:
        >>> artifact_path("figures", "fc1.weight", "step_00000010.png")
        'figures/fc1.weight/step_00000010.png'
        >>> path = artifact_path("figures", "/../etc/passwd", "a b.png")
        >>> path.startswith("figures/_/etc/passwd-"), path.endswith(".png"), path.split("/")[-1][:4]
        (True, True, 'a_b-')
    """
    if not segments:
        raise ValueError("artifact_path: at least one segment is required")
    for segment in segments:
        if not isinstance(segment, str):
            raise TypeError(f"artifact_path: segments must be str, got {type(segment).__name__} ({segment!r})")
    parts = [_shorten_part(p) for segment in segments if segment for p in _segment_parts(segment)]
    if not parts:
        raise ValueError(f"artifact_path: {segments!r} has no characters left once cleaned")
    return "/".join(parts)


def _segment_parts(segment: str) -> list[str]:
    """The cleaned parts of one non-empty segment, the last digest-marked when cleaning changed the segment."""
    parts = _normalise(segment, _SEGMENT_FORBIDDEN).split("/") if segment.strip("/") else ["_"]
    if "/".join(parts) != segment:
        last = parts[-1]
        suffix = _SUFFIX.search(last)
        cut = suffix.start() if suffix and suffix.start() > 0 else len(last)  # "x.png" -> "x-<digest>.png"
        parts[-1] = f"{last[:cut]}-{_digest(segment)}{last[cut:]}"
    return parts


def _shorten(text: str, length: int) -> str:
    """``text`` if it fits in ``length`` characters, else its head and a digest of all of it (``length`` long)."""
    return _mark(text, text, length)


def _shorten_part(part: str) -> str:
    """A path part of at most :data:`MAX_SEGMENT_LENGTH` characters, its last 8 (a suffix) kept."""
    if len(part) <= MAX_SEGMENT_LENGTH:
        return part
    return _shorten(part[:-8], MAX_SEGMENT_LENGTH - 8) + part[-8:]
