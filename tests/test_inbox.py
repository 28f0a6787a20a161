"""inbox.py: each NATS user's reply subjects, the ones nats.conf lets it subscribe to."""

from __future__ import annotations

from stripe_bridge.deploy.natsconf import PASSWORD_ENV
from stripe_bridge.inbox import inbox_prefix


def test_a_user_gets_its_own_inbox_and_no_user_the_shared_one() -> None:
    assert inbox_prefix("publisher") == "_INBOX_publisher"
    assert inbox_prefix(None) == "_INBOX"
    assert inbox_prefix("") == "_INBOX"


def test_no_users_inbox_is_a_subject_under_another_users() -> None:
    # "_INBOX_a.>" must not match "_INBOX_ab..." replies: the prefix is a whole token.
    prefixes = [inbox_prefix(user) for user in PASSWORD_ENV]
    assert len(set(prefixes)) == len(prefixes)
    assert all("." not in prefix and "*" not in prefix for prefix in prefixes)
