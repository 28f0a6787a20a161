"""The JetStream streams' names and shapes, created or updated idempotently (``provision``).

Neither operations nor billing: the billing functions and consumers record into USAGE,
the operators' redrive moves USAGE_DLQ back, ``stripe-bridge provision`` creates STRIPE;
each imports this module, none the other's (tests/test_import_graph.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stripe_bridge_events.deadletter import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM

from .config import Settings

#: The USAGE stream billing records usage into (billing/usage.py) and its dead letters
#: (USAGE_DLQ, filled by the OpenMeter forwarder), which ops/redrive.py moves back.
USAGE_STREAM = "USAGE"
USAGE_SUBJECT_PREFIX = "usage"
USAGE_DLQ = "USAGE_DLQ"
USAGE_DLQ_SUBJECT_PREFIX = "usage_dlq"


@dataclass(frozen=True)
class StreamSpec:
    """The stream's shape; defaults suit one Stripe account's billing traffic."""

    name: str
    subject_prefix: str
    replicas: int = 1
    max_age_seconds: float = 30 * 86400
    # Far longer than JetStream's 2 min default: Stripe's first retry comes minutes later,
    # and this window is the backstop when a PubAck was lost after the store happened.
    duplicate_window_seconds: float = 2 * 3600
    #: Below max_file_store (natsconf.SIZING): a full stream refuses writes (discard new,
    #: the bridge answers 503 and Stripe retries) before a full store disables JetStream.
    max_bytes: int = -1

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> StreamSpec:
        """The spec for the configured stream name and prefix."""
        return cls(settings.nats_stream, settings.nats_subject_prefix, **overrides)

    def config(self) -> Any:
        """The nats-py ``StreamConfig`` for this spec."""
        from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

        return StreamConfig(
            name=self.name,
            subjects=[f"{self.subject_prefix}.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            # With a size limit, refuse new events rather than drop stored ones silently.
            discard=DiscardPolicy.NEW if self.max_bytes > 0 else DiscardPolicy.OLD,
            num_replicas=self.replicas,
            max_age=self.max_age_seconds,
            duplicate_window=self.duplicate_window_seconds,
            max_bytes=self.max_bytes,
            description="Stripe webhook events as CloudEvents (stripe-bridge)",
        )


def dead_letter_spec(replicas: int = 1) -> StreamSpec:
    """STRIPE_DLQ: STRIPE consumers' dead letters and redriven messages, kept a year."""
    return StreamSpec(
        DEAD_LETTER_STREAM, DEAD_LETTER_PREFIX, replicas=replicas, max_age_seconds=365 * 86400
    )


async def provision(js: Any, spec: StreamSpec) -> str:
    """Create the stream, or update it to ``spec``; return "created", "updated" or "unchanged"."""
    from nats.js.errors import NotFoundError

    wanted = spec.config()
    try:
        current = await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(wanted)
        return "created"
    keys = (
        "subjects", "num_replicas", "max_age", "duplicate_window", "max_bytes", "discard",
        "storage",
    )  # fmt: skip
    if all(getattr(current.config, key) == getattr(wanted, key) for key in keys):
        return "unchanged"
    await js.update_stream(wanted)
    return "updated"
