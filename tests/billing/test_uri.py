"""uri.py: RFC 3986 URI-references, what OpenMeter requires of a CloudEvent ``source``."""

from __future__ import annotations

import pytest
from stripe_bridge.billing.uri import is_uri_reference


@pytest.mark.parametrize(
    "value",
    [
        "stripe-bridge",  # a relative reference: a path
        "/api/v1",
        "https://app.example.com/usage?x=1#frag",
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "//host:8080/path",
        "http://[::1]:80/",
        "mailto:ops@example.com",
        "a%20b",
        "",  # the empty reference is one (the model's min_length refuses it)
    ],
)
def test_references_the_rfc_allows(value: str) -> None:
    assert is_uri_reference(value)


@pytest.mark.parametrize(
    "value",
    [
        "has space",
        "a%2",  # an incomplete percent-escape
        "1http://x",  # a scheme starts with a letter, and "1http:" cannot be a first segment
        "http://exa mple.com",
        "tab\there",
        "ünïcode",  # IRIs are not URIs
        "http://x/<script>",
        "a#b#c",
    ],
)
def test_what_the_rfc_refuses(value: str) -> None:
    assert not is_uri_reference(value)
