"""redact.py: a URL's credentials never reach a log line or an error message."""

from __future__ import annotations

import pytest
from stripe_bridge.redact import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://user:secret@nats:4222", "nats://***@nats:4222"),
        ("redis://:p%40ss@redis:6379/0", "redis://***@redis:6379/0"),
        ("https://token@push.example.com/metrics", "https://***@push.example.com/metrics"),
        # An "@" in the password: everything up to the last "@" of the authority goes.
        ("nats://u:a@b@nats:4222", "nats://***@nats:4222"),
        # An "@" in the path is not a credential.
        ("http://pushgateway:9091/metrics/job@x", "http://pushgateway:9091/metrics/job@x"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("not a url", "not a url"),
    ],
)
def test_credentials_are_replaced_and_the_rest_kept(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_every_url_of_a_list_is_redacted() -> None:
    listed = "nats://a:1@n1:4222,nats://n2:4222,tls://b:2@n3:4222"
    assert redact_url(listed) == "nats://***@n1:4222,nats://n2:4222,tls://***@n3:4222"
