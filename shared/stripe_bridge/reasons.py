"""Why a request was not answered 2xx: one enum for the reply, the metric and the log line.

Every refusal on the request path, the shell's (method, size, time), the webhook's
(signature, JSON, envelope) and storing's (idempotency, JetStream), is a ``Reason``. Its
value is the JSON ``error``, the ``reason`` label of ``stripe_bridge_webhooks_total`` and
the log's ``reason=``; its ``status`` the HTTP status. ``Refused`` carries one up the
pipeline to the one place that turns it into a reply.
"""

from __future__ import annotations

from enum import StrEnum

#: ``event_type`` label of deliveries refused before their type was known.
UNKNOWN_TYPE = "unknown"


class Reason(StrEnum):
    """A refusal's machine-readable name, with its HTTP ``status``.

    4xx: a retry of the same request cannot succeed (outcome ``rejected``); 5xx: transient,
    Stripe's retry succeeds later (outcome ``failed``, with ``Retry-After``).
    """

    status: int
    #: Known only once the event is: counted under its type, not ``unknown``.
    about_event: bool

    def __new__(cls, value: str, status: int, about_event: bool = False) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        member.about_event = about_event
        return member

    # The HTTP shell, before the body is complete.
    NOT_FOUND = "not_found", 404
    METHOD_NOT_ALLOWED = "method_not_allowed", 405
    HEADER_READ_TIMEOUT = "header_read_timeout", 408
    BODY_READ_TIMEOUT = "body_read_timeout", 408
    BODY_TOO_LARGE = "body_too_large", 413
    #: Nobody reads the answer; 499 is nginx's "client closed request", for log and metrics.
    CLIENT_DISCONNECTED = "client_disconnected", 499
    SHUTTING_DOWN = "shutting_down", 503
    # Stripe-Signature (signature.verify).
    MISSING_SIGNATURE = "missing_signature", 400
    MALFORMED_SIGNATURE = "malformed_signature", 400
    NO_V1_SIGNATURE = "no_v1_signature", 400
    SIGNATURE_MISMATCH = "signature_mismatch", 400
    TIMESTAMP_TOO_OLD = "timestamp_too_old", 400
    TIMESTAMP_IN_FUTURE = "timestamp_in_future", 400
    NO_SECRET_CONFIGURED = "no_secret_configured", 400
    # The body.
    MALFORMED_JSON = "malformed_json", 400
    AMBIGUOUS_JSON = "ambiguous_json", 400
    NOT_A_STRIPE_EVENT = "not_a_stripe_event", 400
    UNSUPPORTED_EVENT_TYPE = "unsupported_event_type", 400, True
    # Storing the event (ingest, jetstream).
    EVENT_TOO_LARGE = "event_too_large", 413, True
    IDEMPOTENCY_UNAVAILABLE = "idempotency_unavailable", 503, True
    NATS_UNAVAILABLE = "nats_unavailable", 503, True
    PUBACK_TIMEOUT = "puback_timeout", 503, True
    #: The stream does not exist: `stripe-bridge provision`.
    NO_STREAM = "no_stream", 503, True
    #: It exists but has no leader (quorum lost, an election).
    STREAM_UNAVAILABLE = "stream_unavailable", 503, True
    STORAGE_FULL = "storage_full", 503, True
    JETSTREAM_ERROR = "jetstream_error", 503, True
    INTERNAL_ERROR = "internal_error", 503, True

    @property
    def outcome(self) -> str:
        """The ``outcome`` label: ``failed`` (5xx, transient) or ``rejected``."""
        return "failed" if self.status >= 500 else "rejected"


#: Why a Stripe-Signature did not verify (also counted by ``stripe_bridge_signature_failures``).
SIGNATURE_REASONS = (
    Reason.MISSING_SIGNATURE,
    Reason.MALFORMED_SIGNATURE,
    Reason.NO_V1_SIGNATURE,
    Reason.SIGNATURE_MISMATCH,
    Reason.TIMESTAMP_TOO_OLD,
    Reason.TIMESTAMP_IN_FUTURE,
    Reason.NO_SECRET_CONFIGURED,
)


class Refused(Exception):
    """The request ends here with ``reason``; ``detail`` is one line safe to send and log.

    ``event_type`` and ``event_id`` name the event when it is known (webhook functions).
    """

    def __init__(
        self,
        reason: Reason,
        detail: str = "",
        headers: dict[str, str] | None = None,
        event_type: str = UNKNOWN_TYPE,
        event_id: str | None = None,
    ) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}
        self.event_type = event_type
        self.event_id = event_id
