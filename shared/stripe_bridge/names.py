"""Kubernetes object names short enough for everything Knative derives from them.

A Knative Service's name becomes a host label of its URL: ``{name}.{namespace}`` with the
default domain template, ``{name}-{namespace}`` with a common custom one, where a label
may have 63 characters (knative/serving ``DomainNameFromTemplate``). Revision and child
names add suffixes (``-00001``, ``-00001-private``); knative/serving issues #3236 and
#5168 show trouble from about 50 characters.
"""

from __future__ import annotations

import hashlib

#: 63 (a DNS label) - 1 ("-") - 21 (``stripe-bridge-staging``, the longest namespace):
#: ``{name}-{namespace}`` still fits one label. tests/knative checks it against the profiles.
MAX_SERVICE_NAME = 41
_HASH_CHARS = 8


def capped(name: str, limit: int = MAX_SERVICE_NAME) -> str:
    """``name`` if it fits ``limit``; else its head, ``-`` and 8 hex digits of its sha256.

    Deterministic (the same name always gives the same result) and distinct for names
    sharing a long prefix.
    """
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_CHARS]
    head = name[: limit - _HASH_CHARS - 1].rstrip("-")
    return f"{head}-{digest}"
