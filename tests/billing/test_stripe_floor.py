"""The declared ``stripe`` floor is what the code needs (issue #18 item 5).

pyproject.toml's ``billing`` and ``replay`` extras allow ``stripe>=<floor>``. The checkout,
portal and replay code (``client.v1``, async list/create, both paging directions) runs here
with exactly the floor version against the Stripe stand-in, and fails with the release just
below it, so the floor is neither too low nor unproven. Exact pins, installed by the
project's uv from its cache or the registry: the answer never depends on what is newest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from stripe_bridge_testing.deliveries import fixture_event
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.stripe_standin import StripeStandIn

pytestmark = pytest.mark.servers

API_KEY = "sk_test_floor"
#: The newest release without ``StripeClient.v1`` (stripe-python's CHANGELOG: 12.5.0 adds it).
BELOW_FLOOR = "12.4.0"
NAMES = ("invoice_paid", "customer_updated", "charge_succeeded", "product_created")
#: Run as ``python -m`` in a child whose ``stripe`` is the version under test.
PROBE = "stripe_bridge_testing.stripe_floor_probe"


def declared_floor() -> str:
    """The one ``>=`` version both extras that use stripe declare."""
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    floors = {
        spec.version
        for extra in ("billing", "replay")
        for requirement in map(Requirement, extras[extra])
        if requirement.name == "stripe"
        for spec in requirement.specifier
        if spec.operator == ">="
    }
    (floor,) = floors
    return floor


def install(version: str, target: Path) -> None:
    """``stripe==version`` alone into ``target`` (its own dependencies are the project's)."""
    uv = REPO_ROOT / ".tools" / "bin" / "uv"
    command = [str(uv), "pip", "install", "--quiet", "--no-deps", "--python", sys.executable]
    subprocess.run([*command, "--target", str(target), f"stripe=={version}"], check=True)


def probe(
    version: str, tmp_path: Path, api: StripeStandIn, event_id: str
) -> subprocess.CompletedProcess[str]:
    target = tmp_path / f"stripe-{version}"
    install(version, target)
    return subprocess.run(
        [sys.executable, "-m", PROBE, api.url, API_KEY, event_id],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,  # -m puts the working directory first on sys.path
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def api() -> Iterator[StripeStandIn]:
    """The stand-in with a few events, two to a page so both paging directions run."""
    with StripeStandIn(API_KEY, [fixture_event(n) for n in NAMES], page_cap=2) as server:
        yield server


def test_checkout_portal_and_replay_run_on_the_declared_floor(
    api: StripeStandIn, tmp_path: Path
) -> None:
    floor = declared_floor()
    oldest = min((fixture_event(n) for n in NAMES), key=lambda e: (e["created"], e["id"]))
    result = probe(floor, tmp_path, api, oldest["id"])
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert answers["stripe"] == floor
    assert [url.split("/")[2] for url in answers["sessions"]] == [
        "checkout.stripe.com",
        "billing.stripe.com",
    ]
    by_age = sorted((fixture_event(n) for n in NAMES), key=lambda e: (e["created"], e["id"]))
    assert answers["since"] == [e["id"] for e in by_age]
    assert answers["types"] == [fixture_event("invoice_paid")["id"]]
    assert answers["after"] == [e["id"] for e in by_age[1:]]
    assert answers["event"] == oldest["id"]


def test_the_release_below_the_floor_lacks_what_the_code_calls(
    api: StripeStandIn, tmp_path: Path
) -> None:
    result = probe(BELOW_FLOOR, tmp_path, api, fixture_event("invoice_paid")["id"])
    assert result.returncode != 0
    assert "AttributeError" in result.stderr and "'v1'" in result.stderr
