"""``envelope``: a body is parsed as strictly as Stripe writes it, then validated uncoerced.

No server: what this module alone promises. The webhook path's answers to the same bodies
(400 and the reason, counted and logged) are in tests/bridge/test_bad_input.py.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from stripe_bridge.envelope import (
    MAX_DEPTH,
    AmbiguousBody,
    MalformedBody,
    StripeEvent,
    parse_body,
)
from stripe_bridge_testing.deliveries import fixture_event


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
