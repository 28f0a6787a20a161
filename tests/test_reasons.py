"""reasons.py: every refusal is one Reason, whose value, status and outcome never disagree."""

from __future__ import annotations

import re

from stripe_bridge.reasons import SIGNATURE_REASONS, UNKNOWN_TYPE, Reason, Refused


def test_values_are_distinct_label_safe_names() -> None:
    values = [reason.value for reason in Reason]
    assert len(set(values)) == len(values)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", value) for value in values)


def test_a_4xx_is_rejected_and_a_5xx_failed() -> None:
    for reason in Reason:
        assert 400 <= reason.status < 600, reason
        assert reason.outcome == ("failed" if reason.status >= 500 else "rejected"), reason
    assert Reason.SIGNATURE_MISMATCH.outcome == "rejected"
    assert Reason.NATS_UNAVAILABLE.outcome == "failed"


def test_only_refusals_after_parsing_are_about_the_event() -> None:
    # Counted under the event's type: the body was parsed as a Stripe event first.
    assert Reason.UNSUPPORTED_EVENT_TYPE.about_event
    assert Reason.PUBACK_TIMEOUT.about_event
    for before in (Reason.BODY_TOO_LARGE, Reason.MALFORMED_JSON, *SIGNATURE_REASONS):
        assert not before.about_event, before


def test_signature_reasons_are_the_400s_of_stripe_signature() -> None:
    assert all(reason.status == 400 for reason in SIGNATURE_REASONS)
    assert len(set(SIGNATURE_REASONS)) == len(SIGNATURE_REASONS)


def test_refused_carries_its_reason_up_the_pipeline() -> None:
    bare = Refused(Reason.NO_STREAM)
    assert str(bare) == "no_stream"
    assert (bare.detail, bare.headers, bare.event_type, bare.event_id) == (
        "",
        {},
        UNKNOWN_TYPE,
        None,
    )
    named = Refused(Reason.EVENT_TOO_LARGE, "2 MiB", {"X": "1"}, "invoice.paid", "evt_1")
    assert str(named) == "event_too_large: 2 MiB"
    assert (named.reason, named.headers, named.event_type, named.event_id) == (
        Reason.EVENT_TOO_LARGE,
        {"X": "1"},
        "invoice.paid",
        "evt_1",
    )
