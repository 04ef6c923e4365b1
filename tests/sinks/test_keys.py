"""The metric-key scheme against MLflow's own validator: every cleaned key is accepted, valid keys pass unchanged."""

from __future__ import annotations

import posixpath
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.utils.validation import _validate_metric_name

from rmt_callbacks.sinks.keys import MAX_KEY_LENGTH, artifact_path, metric_key, sanitize

VALID = st.text(alphabet="abcXYZ019_-. ", min_size=1, max_size=30).filter(lambda s: s.strip(". ") != "")


def test_metric_key_scheme() -> None:
    assert metric_key("rmt/", "blocks.0.attn.in_proj_weight.q", "mp/sigma2") == (
        "rmt/blocks.0.attn.in_proj_weight.q/mp/sigma2"
    )
    assert metric_key("", "w", "lambda_max") == "w/lambda_max"


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=400).filter(lambda s: any(c.isalnum() and c.isascii() for c in s)))
def test_sanitized_keys_are_accepted_by_mlflow(raw: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        key = sanitize(raw)
    assert len(key) <= MAX_KEY_LENGTH
    _validate_metric_name(key)  # raises MlflowException on a key the tracking store would refuse


@settings(max_examples=100, deadline=None)
@given(st.lists(VALID, min_size=1, max_size=4))
def test_valid_keys_pass_unchanged_and_silently(segments: list[str]) -> None:
    key = "/".join(s.replace(".", "x") if s in (".", "..") else s for s in segments)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        assert sanitize(key) == key


def test_changed_key_warns_once_per_key() -> None:
    with pytest.warns(UserWarning, match="'rmt/w/λ_max_once' is not valid for MLflow"):
        assert sanitize("rmt/w/λ_max_once") == "rmt/w/__max_once"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sanitize("rmt/w/λ_max_once") == "rmt/w/__max_once"  # second time: no warning
    with pytest.warns(UserWarning, match="λ_min_once"):
        sanitize("rmt/w/λ_min_once")  # a different key warns again


def test_truncation_and_path_normalisation() -> None:
    assert len(sanitize("a" * 1000)) == MAX_KEY_LENGTH
    with pytest.warns(UserWarning):
        assert sanitize("/rmt//w/./x/") == "rmt/w/_/x"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=20), min_size=1, max_size=4))
def test_artifact_paths_never_escape_the_root(segments: list[str]) -> None:
    try:
        path = artifact_path(*segments)
    except ValueError:
        assert not any(c.isascii() and (c.isalnum() or c in "_-") for c in "".join(segments)) or all(
            p in ("", ".", "..") for p in "/".join(segments).split("/")
        )
        return
    assert posixpath.normpath(path) == path  # already normal: no '..', '//', './', trailing '/'
    assert not path.startswith(("/", "..")) and ".." not in path.split("/")
    assert all(c.isascii() and (c.isalnum() or c in "_.-/") for c in path)


def test_artifact_path_examples() -> None:
    assert (
        artifact_path("figures", "blocks.0.weight", "step_00000010.png") == "figures/blocks.0.weight/step_00000010.png"
    )
    assert artifact_path("figures", "../../etc", "x.png") == "figures/_/_/etc/x.png"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: sanitize(3), TypeError, "key must be a str, got int"),
        (lambda: sanitize("x", max_length=0), ValueError, "max_length must be a positive int, got 0"),
        (lambda: sanitize("///"), ValueError, "no characters left"),
        (lambda: metric_key("rmt/", "", "lambda_max"), ValueError, "name and stat must be non-empty"),
        (lambda: metric_key("rmt/", "w", None), TypeError, "stat must be a str, got NoneType"),
        (lambda: artifact_path(), ValueError, "at least one segment"),
        (lambda: artifact_path("a", 1), TypeError, "segments must be str, got int"),
    ],
)
def test_errors_name_the_argument(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
