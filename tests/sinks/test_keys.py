"""The metric-key scheme against MLflow's own validator: every cleaned key is accepted, valid keys pass unchanged."""

from __future__ import annotations

import posixpath
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.utils.validation import _validate_metric_name, _validate_tag_name

from rmt_callbacks.sinks.keys import MAX_KEY_LENGTH, MAX_SEGMENT_LENGTH, artifact_path, metric_key, sanitize, tag_key

VALID = st.text(alphabet="abcXYZ019_-. ", min_size=1, max_size=30).filter(lambda s: s.strip(". ") != "")
# raw parameter names: any text, text made of the characters cleaning maps together, and names past every limit
NAMES = st.one_of(
    st.text(min_size=1, max_size=40),
    st.text(alphabet="ab/._ -λμ", min_size=1, max_size=40),
    st.text(alphabet="ab/.λ", min_size=230, max_size=300),
)
DISTINCT_NAMES = st.lists(NAMES, min_size=2, max_size=6, unique=True)


def test_metric_key_scheme() -> None:
    assert metric_key("rmt/", "blocks.0.attn.in_proj_weight.q", "mp_sigma2") == (
        "rmt/blocks.0.attn.in_proj_weight.q/mp_sigma2"
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
        first = sanitize("rmt/w/λ_max_once")
    assert first.startswith("rmt/w/__max_once-")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sanitize("rmt/w/λ_max_once") == first  # second time: no warning
    with pytest.warns(UserWarning, match="λ_min_once"):
        sanitize("rmt/w/λ_min_once")  # a different key warns again


def test_truncation_and_path_normalisation() -> None:
    with pytest.warns(UserWarning):
        long = sanitize("a" * 1000)
        other = sanitize("a" * 999)
    assert len(long) == MAX_KEY_LENGTH and long != other  # cut with a digest, not plainly
    with pytest.warns(UserWarning):
        assert sanitize("/rmt//w/./x/").startswith("rmt/w/_/x-")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=20), min_size=1, max_size=4))
def test_artifact_paths_never_escape_the_root(segments: list[str]) -> None:
    try:
        path = artifact_path(*segments)
    except ValueError:
        assert all(s == "" for s in segments)  # only all-empty segments leave nothing
        return
    assert posixpath.normpath(path) == path  # already normal: no '..', '//', './', trailing '/'
    assert not path.startswith(("/", "..")) and ".." not in path.split("/")
    assert all(c.isascii() and (c.isalnum() or c in "_.-/") for c in path)
    assert all(len(part) <= MAX_SEGMENT_LENGTH for part in path.split("/"))
    assert artifact_path(path) == path  # idempotent: a cleaned path passes unchanged


def test_artifact_path_examples() -> None:
    assert (
        artifact_path("figures", "blocks.0.weight", "step_00000010.png") == "figures/blocks.0.weight/step_00000010.png"
    )
    traversal = artifact_path("figures", "../../etc", "x.png")
    assert traversal.startswith("figures/_/_/etc-") and traversal.endswith("/x.png")
    assert artifact_path("a b.png").startswith("a_b-") and artifact_path("a b.png").endswith(".png")  # suffix kept


@pytest.mark.parametrize(
    ("a", "b"),
    [("a.b/c", "a.b_c"), ("λ", "μ"), ("a b", "a_b"), ("a//b", "a/b"), ("x/", "x"), ("y" * 300 + "1", "y" * 300 + "2")],
)
def test_names_that_plain_cleaning_merges_stay_apart(a: str, b: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert metric_key("rmt/", a, "lambda_max") != metric_key("rmt/", b, "lambda_max")
        assert tag_key("rmt.skipped.", a) != tag_key("rmt.skipped.", b)
        assert sanitize(f"rmt.skipped.{a}") != sanitize(f"rmt.skipped.{b}")
        assert artifact_path("figures", a, "step_00000001.png") != artifact_path("figures", b, "step_00000001.png")


@settings(max_examples=300, deadline=None)
@given(DISTINCT_NAMES)
def test_distinct_names_give_distinct_keys_tags_and_paths(names: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = [metric_key("rmt/", n, "mp_sigma2") for n in names]
        tags = [tag_key("rmt.skipped.", n) for n in names]
        paths = [artifact_path("figures", n, "step_00000010.png") for n in names]
    assert len(set(keys)) == len(set(tags)) == len(set(paths)) == len(names)
    for key, tag, path in zip(keys, tags, paths, strict=True):
        _validate_metric_name(key)
        _validate_tag_name(tag)
        assert len(key) <= MAX_KEY_LENGTH and len(tag) <= MAX_KEY_LENGTH and key.endswith("/mp_sigma2")
        assert path.startswith("figures/") and path.endswith("/step_00000010.png") and ".." not in path.split("/")
        assert sanitize(key) == key and sanitize(tag) == tag and artifact_path(path) == path  # idempotent


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="abcXYZ019_-.", min_size=1, max_size=30), min_size=1, max_size=3))
def test_valid_names_are_kept_as_they_are(parts: list[str]) -> None:
    name = ".".join(parts)
    if any(p in (".", "..") for p in name.split("/")):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid name warns about nothing
        assert metric_key("rmt/", name, "lambda_max") == f"rmt/{name}/lambda_max"
        assert tag_key("rmt.skipped.", name) == f"rmt.skipped.{name}"
        assert artifact_path("figures", name, "x.png") == f"figures/{name}/x.png"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: sanitize(3), TypeError, "key must be a str, got int"),
        (lambda: sanitize("x", max_length=0), ValueError, "max_length must be a positive int, got 0"),
        (lambda: sanitize("///"), ValueError, "no characters left"),
        (lambda: metric_key("rmt/", "", "lambda_max"), ValueError, "name and stat must be non-empty"),
        (lambda: metric_key("rmt/", "w", None), TypeError, "stat must be a str, got NoneType"),
        (lambda: tag_key("rmt.skipped.", ""), ValueError, "name must be non-empty"),
        (lambda: tag_key(None, "w"), TypeError, "prefix must be a str, got NoneType"),
        (lambda: artifact_path(), ValueError, "at least one segment"),
        (lambda: artifact_path("a", 1), TypeError, "segments must be str, got int"),
    ],
)
def test_errors_name_the_argument(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
