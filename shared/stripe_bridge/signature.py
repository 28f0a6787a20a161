"""Stripe-Signature verification, following Stripe's documented scheme.

The header is ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">[,v1=...]``.
Several ``v1`` values arrive while Stripe rotates a secret, and test mode may add
``v0=`` which must be ignored. Unlike stripe-python, timestamps too far in the future
are rejected as well: a clock that runs ahead is as suspicious as a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

from .reasons import Reason


class SignatureError(Exception):
    """The request's signature does not prove it came from Stripe.

    ``timestamp`` is set when the signature matched but its time is out of tolerance: an
    authentic delivery, whose age shows how far the clocks are apart.
    """

    def __init__(self, reason: Reason, timestamp: int | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.timestamp = timestamp


def compute_signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The hex ``v1`` signature Stripe computes for ``body`` at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret, signed, hashlib.sha256).hexdigest()


def sign_header(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """A complete Stripe-Signature header value, as Stripe would send it."""
    ts = int(time.time()) if timestamp is None else timestamp
    return f"t={ts},v1={compute_signature(secret, ts, body)}"


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    v1: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError(Reason.MALFORMED_SIGNATURE)
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(Reason.MALFORMED_SIGNATURE) from None
        elif key == "v1":
            v1.append(value)
    if timestamp is None:
        raise SignatureError(Reason.MALFORMED_SIGNATURE)
    if not v1:
        raise SignatureError(Reason.NO_V1_SIGNATURE)
    return timestamp, v1


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[bytes],
    tolerance: int,
    now: float | None = None,
) -> int:
    """Check ``header`` against ``body``; return its timestamp or raise SignatureError.

    The request is accepted when any ``v1`` signature matches any of ``secrets``.
    """
    if not secrets:
        raise SignatureError(Reason.NO_SECRET_CONFIGURED)
    if not header:
        raise SignatureError(Reason.MISSING_SIGNATURE)
    timestamp, candidates = _parse(header)
    expected = [compute_signature(secret, timestamp, body) for secret in secrets]
    # Compare every pair without an early exit so timing does not reveal which matched.
    matched = False
    for candidate in candidates:
        for digest in expected:
            matched |= hmac.compare_digest(candidate, digest)
    if not matched:
        raise SignatureError(Reason.SIGNATURE_MISMATCH)
    # Checked after the HMAC, so that a refusal for time is known to be Stripe's delivery.
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise SignatureError(Reason.TIMESTAMP_TOO_OLD, timestamp)
    if timestamp > current + tolerance:
        raise SignatureError(Reason.TIMESTAMP_IN_FUTURE, timestamp)
    return timestamp
