"""``envelope``: a body is parsed as strictly as Stripe writes it, then validated uncoerced.

No server: what this module alone promises. The webhook path's answers to the same bodies
(400 and the reason, counted and logged) are in tests/bridge/test_bad_input.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from stripe_bridge import envelope
from stripe_bridge.envelope import (
    MAX_DEPTH,
    AmbiguousBody,
    MalformedBody,
    StripeEvent,
    parse_body,
)
from stripe_bridge_testing.deliveries import FIXTURES, fixture_event


def test_a_stripe_body_parses_to_what_json_reads() -> None:
    event = fixture_event("invoice_paid")
    body = json.dumps(event, indent=2).encode()
    assert parse_body(body) == event


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "evt_1", "id": "evt_2"}',
        b'{"data": {"object": {"a": 1, "b": 2, "a": 1}}}',
        b'[{"x": 1}, {"x": 1, "x": 1}]',
    ],
)
def test_a_duplicate_key_is_ambiguous(body: bytes) -> None:
    with pytest.raises(AmbiguousBody, match="duplicate key"):
        parse_body(body)


@pytest.mark.parametrize(
    "body",
    [
        rb'{"a": "\ud800"}',
        rb'{"a": "x\uDBFFy"}',
        rb'{"a": "\udc00"}',
        rb'{"a": "\ude00\ud83d"}',  # the two halves in the wrong order
        rb'{"\ud800": 1}',
        rb'{"a": [["\ud800"]]}',
    ],
)
def test_an_unpaired_surrogate_is_ambiguous(body: bytes) -> None:
    with pytest.raises(AmbiguousBody, match="surrogate"):
        parse_body(body)


def test_escapes_that_are_not_surrogates_pass() -> None:
    # A paired escape is one character; "\\ud800" is a backslash and text, no escape.
    body = rb'{"emoji": "\ud83d\ude00", "text": "\\ud800", "quote": "\"", "e": "\u00e9"}'
    assert parse_body(body) == {"emoji": "\U0001f600", "text": "\\ud800", "quote": '"', "e": "é"}


def test_ambiguous_is_a_kind_of_malformed() -> None:
    # Callers that only care whether a body is usable (replay, import) catch one error.
    assert issubclass(AmbiguousBody, MalformedBody)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
        (b"\xef\xbb\xbf{}", "not JSON"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b'{"a": 1e400}', "out of range"),
        (b'{"a": ' + b"1" * 5000 + b"}", "out of range"),  # over int()'s 4300 digits
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    ],
)
def test_what_is_not_strict_json_is_malformed(body: bytes, message: str) -> None:
    with pytest.raises(MalformedBody, match=message) as raised:
        parse_body(body)
    assert not isinstance(raised.value, AmbiguousBody)


def test_nesting_up_to_the_limit_passes() -> None:
    assert parse_body(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None


def test_the_envelope_is_validated_without_coercion() -> None:
    event = fixture_event("invoice_paid")
    assert StripeEvent.model_validate(event).mode == "test"
    for field, value in (("livemode", "false"), ("created", True), ("id", "ch_1")):
        with pytest.raises(ValidationError):
            StripeEvent.model_validate({**event, field: value})


# The fast path (one C parse) and the strict one (the standard library, rule by rule) must
# read every body alike: the same value, or the same refusal.


def _outcome(parse: Callable[[bytes], Any], body: bytes) -> tuple[str, Any]:
    try:
        return "value", parse(body)
    except MalformedBody as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_stripe_bodies_take_the_fast_path(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = path.read_bytes()

    def not_here(_body: bytes) -> Any:
        raise AssertionError("fell back to the strict parse")

    monkeypatch.setattr(envelope, "parse_body_strictly", not_here)
    assert parse_body(body) == json.loads(body)
    assert parse_body(json.dumps(json.loads(body), indent=2).encode()) == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a:b": 1, "a\\u003ab": 2}',  # the same key, once with an escaped colon
        b'{"a:b": 1, "a\\u003Ab": 2}',
        b'{"k": "\\u003a", "k": 1}',
        b'{"u": "x:y", "u": "z"}',  # the first value's colon goes with it
        b'{"a": 1, "a" : 2}',
        b'{"a" :1,"b":{"c":"::","c":"::"}}',
        b'{"a": 1, "\\u0061": 2}',
        b'{"url": "https://x.test/a:b", "n": [1, 2, {"t": "1:2"}]}',
        b'{"n": 123456789012345678901234567890, "m": -123456789012345678901234567890}',
        b'{"n": 18446744073709551616, "f": 1.7976931348623157e308, "z": -0, "e": 1E5}',
        b"[1e400]",
        b"[" + b"9" * 5000 + b"]",
        b"[" + b"9" * 4300 + b"]",
        b"[-1e400]",
        b"[1e-400]",
        b'"\\ud800"',
        b'["\\udc00", "\\ud83d\\ude00"]',
        b'{"\\ud800": 1}',
        b'"\xed\xa0\x80"',
        b'"\xff"',
        b"[NaN]",
        b"[-Infinity]",
        b' {"a": [] } \n',
        b'{"a": 1,}',
        b"[01]",
        b"",
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
        b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
        b"[" * 2000 + b"]" * 2000,
    ],
)
def test_the_fast_path_reads_as_the_strict_one(body: bytes) -> None:
    assert _outcome(parse_body, body) == _outcome(envelope.parse_body_strictly, body)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='{}[]":,. 0123456789eE+-abtrufl\\:', max_size=40))
def test_the_two_paths_agree_on_any_body(text: str) -> None:
    body = text.encode()
    assert _outcome(parse_body, body) == _outcome(envelope.parse_body_strictly, body)


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab:"\\\u00e9\U0001f600\n')),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(st.tuples(st.sampled_from(["a", "b", "a:b", "é"]), inner), max_size=4)
    ),
    max_leaves=20,
)


def _dumps(value: Any) -> str:
    # Lists of pairs become objects, written as they are: duplicates stay duplicates.
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        return "{" + ", ".join(f"{json.dumps(k)}: {_dumps(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES)
def test_the_two_paths_agree_on_any_json(value: Any) -> None:
    body = _dumps(value).encode()
    assert _outcome(parse_body, body) == _outcome(envelope.parse_body_strictly, body)
