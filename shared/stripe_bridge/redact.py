"""URLs without their credentials, for logs and error messages."""

from __future__ import annotations


def redact_url(url: str) -> str:
    """``url`` (one URL or a comma-separated list) without credentials, for logs and errors."""
    return ",".join(_redact_one(part) for part in url.split(","))


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"
