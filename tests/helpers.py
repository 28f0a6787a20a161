"""Helpers shared by the tests. The harness's deliveries (fixtures, signing, reading the
stream back) live in stripe_bridge_testing.deliveries, which the staging run uses too."""

from __future__ import annotations

import time

from stripe_bridge_testing.deliveries import FIXTURES as FIXTURES
from stripe_bridge_testing.deliveries import SECRET as SECRET
from stripe_bridge_testing.deliveries import fixture_event as fixture_event
from stripe_bridge_testing.deliveries import post_event as post_event
from stripe_bridge_testing.deliveries import signed_headers as signed_headers
from stripe_bridge_testing.deliveries import stream_messages as stream_messages
from stripe_bridge_testing.repo import REPO_ROOT as REPO_ROOT


def now() -> int:
    """The current Unix time, whole seconds."""
    return int(time.time())
