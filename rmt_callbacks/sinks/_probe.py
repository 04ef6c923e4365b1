r"""Is the tracking server there? The ``/health`` probe, and which failures count as an outage.

For an ``http(s)`` tracking URI the writer (:mod:`~rmt_callbacks.sinks.spool`) precedes every request with
``GET <uri>/health`` with a short timeout (:data:`PROBE_TIMEOUT_S`), because a request to a server that refuses
connections would otherwise sit in MLflow's own retry loop: ``MLFLOW_HTTP_REQUEST_MAX_RETRIES = 7`` retries with
urllib3's exponential backoff (``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR = 2``, at most 120 s a wait, up to 1 s jitter)
sleep

.. math::

    \sum_{n=2}^{7} \min(2 \cdot 2^{\,n-1}, 120)\,\mathrm{s} = 4 + 8 + 16 + 32 + 64 + 120 = 244\ \mathrm{s}

before the error surfaces (measured here: 246 s for one ``get_experiment_by_name``).

An error is an outage (retry later, keep the operation) when the store is away or the disk is full; it is a
rejection (drop the operation) when the store answers 4xx, except 429 (too many requests).

References: ``mlflow.environment_variables`` (``MLFLOW_HTTP_REQUEST_*``); urllib3 ``Retry.get_backoff_time``.
"""

from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.request

from mlflow.exceptions import MlflowException

__all__ = ["PROBE_TIMEOUT_S", "probe"]

PROBE_TIMEOUT_S: float = 2.0


def probe(tracking_uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the tracking server answers ``GET <uri>/health``; ``True`` for stores that are not ``http(s)``.

    Any answer below 500 counts (the server is there; a proxy's 502/503 does not). Honours
    ``MLFLOW_TRACKING_INSECURE_TLS`` and ``MLFLOW_TRACKING_SERVER_CERT_PATH`` as MLflow's client does.

    Args:
        tracking_uri: the MLflow tracking URI.
        timeout_s: connect and read timeout of the probe.

    Returns:
        ``True`` if the store can be talked to now.

    Examples:
        >>> probe("sqlite:///mlflow.db")
        True
        >>> probe("http://127.0.0.1:9", timeout_s=0.5)  # the discard port: nothing listens on loopback
        False
    """
    if not _is_http(tracking_uri):
        return True
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s, context=_tls()) as r:
            return r.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _tls() -> ssl.SSLContext | None:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        return ssl._create_unverified_context()  # the user asked MLflow to skip verification too
    cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cert) if cert else None


def _is_outage(error: BaseException) -> bool:
    """A failure worth retrying later (a server away, a full disk), as opposed to an operation the store refuses."""
    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return not 400 <= status < 500 or status == 429
    return isinstance(error, OSError)
