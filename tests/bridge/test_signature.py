"""Unit tests of Stripe-Signature verification (stripe_bridge.signature)."""

from __future__ import annotations

import pytest
from stripe_bridge.config import load_settings
from stripe_bridge.reasons import Reason
from stripe_bridge.signature import SignatureError, compute_signature, sign_header, verify

BODY = b'{"id": "evt_1", "object": "event"}'
OLD = b"whsec_old_secret"
NEW = b"whsec_new_secret"
NOW = 1_700_000_000
TOLERANCE = 300


def check(header: str | None, secrets: list[bytes], body: bytes = BODY) -> int:
    return verify(header, body, secrets, TOLERANCE, now=NOW)


def refused(header: str | None, secrets: list[bytes], body: bytes = BODY) -> Reason:
    with pytest.raises(SignatureError) as info:
        check(header, secrets, body)
    return info.value.reason


def test_valid_signature_returns_its_timestamp() -> None:
    assert check(sign_header(NEW, BODY, NOW - 10), [NEW]) == NOW - 10


def test_signature_matches_stripes_documented_scheme() -> None:
    # HMAC-SHA256 of "<t>.<body>" keyed with the whole secret, hex encoded.
    import hashlib
    import hmac

    expected = hmac.new(NEW, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert compute_signature(NEW, NOW, BODY) == expected
    assert sign_header(NEW, BODY, NOW) == f"t={NOW},v1={expected}"


def test_v0_signatures_are_ignored() -> None:
    good = compute_signature(NEW, NOW, BODY)
    assert check(f"t={NOW},v0={'0' * 64},v1={good}", [NEW]) == NOW
    # A matching v0 alone proves nothing.
    assert refused(f"t={NOW},v0={good}", [NEW]) is Reason.NO_V1_SIGNATURE


def test_several_v1_during_rotation_any_may_match() -> None:
    old_sig = compute_signature(OLD, NOW, BODY)
    new_sig = compute_signature(NEW, NOW, BODY)
    header = f"t={NOW},v1={old_sig},v1={new_sig}"
    assert check(header, [NEW]) == NOW
    assert check(header, [OLD]) == NOW
    assert refused(header, [b"whsec_other"]) is Reason.SIGNATURE_MISMATCH


def test_several_configured_secrets_any_may_match() -> None:
    assert check(sign_header(OLD, BODY, NOW), [NEW, OLD]) == NOW
    assert check(sign_header(NEW, BODY, NOW), [NEW, OLD]) == NOW


def test_comma_separated_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f" {NEW.decode()} ,{OLD.decode()},")
    settings = load_settings()
    assert settings.secrets() == [NEW, OLD]
    assert check(sign_header(OLD, BODY, NOW), settings.secrets()) == NOW


@pytest.mark.parametrize(
    ("offset", "failure"),
    [
        (-TOLERANCE - 1, Reason.TIMESTAMP_TOO_OLD),
        (TOLERANCE + 1, Reason.TIMESTAMP_IN_FUTURE),
    ],
)
def test_timestamps_outside_the_tolerance_are_refused(offset: int, failure: Reason) -> None:
    # Correctly signed, so only the timestamp can be the reason.
    assert refused(sign_header(NEW, BODY, NOW + offset), [NEW]) is failure


@pytest.mark.parametrize("offset", [-TOLERANCE, TOLERANCE])
def test_timestamps_at_the_tolerance_are_accepted(offset: int) -> None:
    assert check(sign_header(NEW, BODY, NOW + offset), [NEW]) == NOW + offset


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        f"t=abc,v1={'0' * 64}",
        f"v1={'0' * 64}",
        f"t={NOW},v1",
    ],
)
def test_malformed_headers(header: str) -> None:
    assert refused(header, [NEW]) is Reason.MALFORMED_SIGNATURE


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header(header: str | None) -> None:
    assert refused(header, [NEW]) is Reason.MISSING_SIGNATURE


def test_mismatch_on_other_secret_or_tampered_body() -> None:
    assert refused(sign_header(OLD, BODY, NOW), [NEW]) is Reason.SIGNATURE_MISMATCH
    assert refused(sign_header(NEW, BODY, NOW), [NEW], BODY + b" ") is Reason.SIGNATURE_MISMATCH
    # A signature over another timestamp does not verify under this one.
    moved = f"t={NOW},v1={compute_signature(NEW, NOW - 1, BODY)}"
    assert refused(moved, [NEW]) is Reason.SIGNATURE_MISMATCH


def test_no_secret_configured_refuses_everything() -> None:
    assert refused(sign_header(NEW, BODY, NOW), []) is Reason.NO_SECRET_CONFIGURED


def test_error_message_is_the_reason_only() -> None:
    # The reason ends up in logs and answers: it must not echo the header or the secret.
    header = sign_header(OLD, BODY, NOW)
    with pytest.raises(SignatureError) as info:
        check(header, [NEW])
    assert str(info.value) == "signature_mismatch"
