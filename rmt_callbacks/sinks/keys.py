r"""The one metric-key scheme of rmt-callbacks, and the cleaning that makes keys and paths safe for MLflow.

Every scalar the callbacks log is keyed

.. math::

    \texttt{key} = \texttt{prefix} \,\Vert\, \texttt{parameter} \,\Vert\, \texttt{"/"} \,\Vert\, \texttt{statistic},

built by :func:`metric_key` only. MLflow accepts metric keys matching ``^[/\w.\- ]*$`` of at most 250
characters, and since keys may become file names, a key must also be a normalised relative POSIX path (no
``//``, no leading or trailing ``/``, no ``.`` or ``..`` segment). :func:`sanitize` replaces every character
outside ``[A-Za-z0-9_/. -]`` by ``_``, truncates, drops empty segments and turns ``.``/``..`` segments into
``_``, warning once per key that it had to change. Artifact paths (``spectra/…``, ``figures/<matrix>/…``) are built
by :func:`artifact_path`, which also refuses path traversal (``..``, absolute paths). Names too long for the limits
are shortened by a hash rather than cut: in a key the parameter name gives way and the statistic is kept, so two
statistics (or two long names) never share a key; an artifact path segment is at most
:data:`MAX_SEGMENT_LENGTH` characters (file systems refuse names over 255 bytes).

References: MLflow REST API limits (https://mlflow.org/docs/latest/rest-api.html#log-batch).
"""

from __future__ import annotations

import hashlib
import re
import warnings

__all__ = ["MAX_KEY_LENGTH", "MAX_SEGMENT_LENGTH", "artifact_path", "metric_key", "sanitize"]

MAX_KEY_LENGTH: int = 250
MAX_SEGMENT_LENGTH: int = 200
_DIGEST_LENGTH = 12  # "-" and 11 hex digits of SHA-256
_KEY_FORBIDDEN = re.compile(r"[^A-Za-z0-9_/. \-]")
_SEGMENT_FORBIDDEN = re.compile(r"[^A-Za-z0-9_.\-]")
_warned: set[str] = set()


def sanitize(key: str, *, max_length: int = MAX_KEY_LENGTH) -> str:
    """Clean ``key`` for MLflow: forbidden characters become ``_``, the result is cut to ``max_length`` and
    normalised as a relative path (empty segments dropped, ``.``/``..`` segments become ``_``).

    Changed keys trigger a :class:`UserWarning` the first time each one is seen in this process.

    Args:
        key: the raw key.
        max_length: the largest allowed length (MLflow: 250).

    Returns:
        The cleaned key; ``key`` itself when it was already valid.

    Raises:
        TypeError: if ``key`` is not a ``str``.
        ValueError: if ``max_length`` is not a positive integer, or nothing is left of ``key``.

    References: MLflow metric-key rules (``mlflow.utils.validation``).

    Examples:
        >>> sanitize("rmt/blocks.0.attn/λ_max")
        'rmt/blocks.0.attn/__max'
        >>> len(sanitize("x" * 300))
        250
        >>> sanitize("/rmt//a/../b/")
        'rmt/a/_/b'
    """
    if not isinstance(key, str):
        raise TypeError(f"sanitize: key must be a str, got {type(key).__name__} ({key!r})")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"sanitize: max_length must be a positive int, got {max_length!r}")
    clean = _normalise(_KEY_FORBIDDEN.sub("_", key)[:max_length])
    if not clean:
        raise ValueError(f"sanitize: key {key!r} has no characters left once cleaned")
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


def _shorten(text: str, length: int) -> str:
    """``text`` if it fits in ``length`` characters, else its head and a digest of all of it (``length`` long)."""
    if len(text) <= length:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[: _DIGEST_LENGTH - 1]
    return f"{text[: length - _DIGEST_LENGTH]}-{digest}"


def metric_key(prefix: str, name: str, stat: str) -> str:
    """Build the metric key ``f"{prefix}{name}/{stat}"`` and clean it with :func:`sanitize`.

    Args:
        prefix: the callback's ``log_key_prefix`` (e.g. ``"rmt/"``; may be empty).
        name: the matrix name (a parameter name such as ``"encoder.0.weight"``, or ``"attn.in_proj_weight.q"``).
        stat: the statistic (e.g. ``"lambda_max"``, ``"mp/sigma2"``).

    Returns:
        The MLflow-safe key, at most :data:`MAX_KEY_LENGTH` characters; an over-long ``name`` is shortened to its
        head and a hash of it, so the statistic stays at the end and distinct names stay distinct.

    Raises:
        TypeError: if an argument is not a ``str``.
        ValueError: if ``name`` or ``stat`` is empty.

    References: style.md principle 9 (one documented key scheme).

    Examples:
        >>> metric_key("rmt/", "fc1.weight", "lambda_max")
        'rmt/fc1.weight/lambda_max'
        >>> with warnings.catch_warnings():  # an over-long name is shortened with a warning
        ...     warnings.simplefilter("ignore")
        ...     key, other = metric_key("rmt/", "x" * 300, "lambda_max"), metric_key("rmt/", "x" * 299, "lambda_max")
        >>> len(key), key.endswith("/lambda_max"), key != other
        (250, True, True)
    """
    for arg, value in (("prefix", prefix), ("name", name), ("stat", stat)):
        if not isinstance(value, str):
            raise TypeError(f"metric_key: {arg} must be a str, got {type(value).__name__} ({value!r})")
    if not name or not stat:
        raise ValueError(f"metric_key: name and stat must be non-empty, got name={name!r}, stat={stat!r}")
    room = MAX_KEY_LENGTH - len(prefix) - len(stat) - 1
    if room >= 2 * _DIGEST_LENGTH and len(name) > room:  # else prefix and stat nearly fill it: sanitize truncates
        short = _shorten(name, room)
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"matrix name {name!r} is too long for an MLflow key; logging it as {short!r}", stacklevel=2)
        name = short
    return sanitize(f"{prefix}{name}/{stat}")


def artifact_path(*segments: str) -> str:
    """Join path segments into a relative artifact path that stays inside the run's artifact root.

    Each segment is split at ``/``; in every part characters outside ``[A-Za-z0-9_.-]`` become ``_``, empty
    parts are dropped and the parts ``"."`` and ``".."`` become ``"_"``, so no result can escape the root. A part
    longer than :data:`MAX_SEGMENT_LENGTH` keeps its head and a hash of itself (its last 8 characters, such as a
    file suffix, stay at the end).

    Args:
        segments: the path parts, e.g. ``("figures", "fc1.weight", "step_00000010.png")``.

    Returns:
        A POSIX relative path.

    Raises:
        TypeError: if a segment is not a ``str``.
        ValueError: if no segment is given, or nothing is left once cleaned.

    References: OWASP path traversal (CWE-22).

    Examples:
        >>> artifact_path("figures", "/../etc/passwd", "a b.png")
        'figures/_/etc/passwd/a_b.png'
    """
    if not segments:
        raise ValueError("artifact_path: at least one segment is required")
    for segment in segments:
        if not isinstance(segment, str):
            raise TypeError(f"artifact_path: segments must be str, got {type(segment).__name__} ({segment!r})")
    path = "/".join(_shorten_part(p) for p in _normalise("/".join(segments), _SEGMENT_FORBIDDEN).split("/"))
    if not path:
        raise ValueError(f"artifact_path: {segments!r} has no characters left once cleaned")
    return path


def _shorten_part(part: str) -> str:
    """A path part of at most :data:`MAX_SEGMENT_LENGTH` characters, its last 8 (a suffix) kept."""
    if len(part) <= MAX_SEGMENT_LENGTH:
        return part
    return _shorten(part[:-8], MAX_SEGMENT_LENGTH - 8) + part[-8:]
