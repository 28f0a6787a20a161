"""The NATS reply subjects ("inboxes") each user may subscribe to."""

from __future__ import annotations


def inbox_prefix(user: str | None) -> str:
    """The reply-subject prefix of NATS ``user``: nats.conf allows each user only its own.

    A shared ``_INBOX.>`` would let any user (the internet-facing functions' ``publisher``
    among them) subscribe to every other user's JetStream and KV replies.
    """
    return f"_INBOX_{user}" if user else "_INBOX"
