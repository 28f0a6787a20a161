"""``replay`` with the Events API's filters, and ``show`` of one event, on a real nats-server.

Stripe's recovery guidance: list events with ``delivery_success=false``, ``types[]`` and
``ending_before``; the Stripe stand-in (stripe_bridge_testing.stripe_standin) follows the
documented list contract.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from stripe_bridge.cli import main
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import fixture_event, stream_messages
from stripe_bridge_testing.stripe_standin import StripeStandIn

API_KEY = "rk_test_filters"
NAMES = (
    "invoice_paid",
    "invoice_payment_failed",
    "customer_updated",
    "charge_succeeded",
    "subscription_created",
    "subscription_updated",
    "product_created",
)
#: Far enough back for every fixture (they were created years ago).
ALL_OF_THEM = "36500d"


def events() -> list[dict[str, Any]]:
    return [fixture_event(name) for name in NAMES]


def newest_first() -> list[dict[str, Any]]:
    return sorted(events(), key=lambda e: (e["created"], e["id"]), reverse=True)


async def replay(url: str, api: StripeStandIn, *options: str) -> int:
    argv = ["replay", "--nats-url", url, "--api-base", api.url, "--api-key", API_KEY, *options]
    return await asyncio.to_thread(main, argv)


async def stored_ids(url: str) -> list[str]:
    return [m.headers["Nats-Msg-Id"] for m in await stream_messages(url)]


async def test_types_ask_stripe_for_those_types_only(
    stream: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with StripeStandIn(API_KEY, events()) as api:
        code = await replay(
            stream.url, api, "--since", ALL_OF_THEM, "--types", "invoice.paid,product.created"
        )
        assert code == 0, capsys.readouterr().err
        ((_, _, request),) = api.calls
    # stripe-python sends the array as types[0], types[1], as Stripe documents it takes.
    assert sorted(v for k, v in request.items() if k.startswith("types[")) == [
        "invoice.paid",
        "product.created",
    ]
    assert "types invoice.paid,product.created: 2 events, published 2" in capsys.readouterr().out
    wanted = {fixture_event(n)["id"] for n in ("invoice_paid", "product_created")}
    assert set(await stored_ids(stream.url)) == wanted


async def test_undelivered_stores_only_events_stripe_failed_to_deliver(
    stream: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = {
        fixture_event("invoice_payment_failed")["id"],
        fixture_event("customer_updated")["id"],
    }
    with StripeStandIn(API_KEY, events(), undelivered=frozenset(failed)) as api:
        assert await replay(stream.url, api, "--since", ALL_OF_THEM, "--undelivered") == 0
        assert api.calls[0][2]["delivery_success"] == "false"
    assert "undelivered: 2 events, published 2, duplicate 0" in capsys.readouterr().out
    assert set(await stored_ids(stream.url)) == failed


async def test_after_pages_towards_the_newest_with_ending_before(
    stream: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ordered = newest_first()
    cursor = ordered[-2]["id"]  # everything newer than the second oldest: five events
    with StripeStandIn(API_KEY, events(), page_cap=2) as api:
        assert await replay(stream.url, api, "--after", cursor) == 0
        cursors = [form["ending_before"] for _, _, form in api.calls]
    assert len(cursors) == 3  # pages of 2 + 2 + 1, each starting after the newest seen
    assert cursors[0] == cursor and cursors[1] != cursor
    assert "after " + cursor + ": 5 events, published 5" in capsys.readouterr().out
    # Stored oldest first, as the events happened.
    assert await stored_ids(stream.url) == [e["id"] for e in reversed(ordered[:-2])]


async def test_one_event_then_again_then_one_stripe_does_not_have(
    stream: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    wanted = fixture_event("subscription_updated")["id"]
    with StripeStandIn(API_KEY, events()) as api:
        assert await replay(stream.url, api, "--event", wanted) == 0
        assert "published 1, duplicate 0" in capsys.readouterr().out
        assert await replay(stream.url, api, "--event", wanted) == 0
        assert "published 0, duplicate 1" in capsys.readouterr().out
        assert await replay(stream.url, api, "--event", "evt_missing") == 4
        err = capsys.readouterr().err
    assert err.startswith("stripe-bridge replay: ") and "404" in err
    assert await stored_ids(stream.url) == [wanted]


async def test_dry_run_lists_and_stores_nothing(
    stream: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    first = fixture_event("charge_succeeded")["id"]
    with StripeStandIn(API_KEY, events()) as api:
        assert await replay(stream.url, api, "--event", first) == 0
        capsys.readouterr()
        assert await replay(stream.url, api, "--since", ALL_OF_THEM, "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert f"stored {first} charge.succeeded" in "\n".join(out)
    assert sum(line.startswith("would publish evt_") for line in out) == len(NAMES) - 1
    assert out[-1].endswith(f"would publish {len(NAMES) - 1}, already stored 1")
    assert await stored_ids(stream.url) == [first]


@pytest.mark.parametrize(
    "options",
    [(), ("--event", "evt_x", "--types", "invoice.paid"), ("--since", "2 days")],
)
def test_contradicting_or_missing_options_are_one_config_line(
    options: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["replay", "--nats-url", "nats://127.0.0.1:1", "--api-key", API_KEY, *options]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("stripe-bridge: ") and len(err.strip().splitlines()) == 1


async def test_show_finds_an_event_its_cloudevent_and_translation(
    stream: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    wanted = fixture_event("invoice_paid")
    with StripeStandIn(API_KEY, events()) as api:
        assert await replay(stream.url, api, "--since", ALL_OF_THEM) == 0
    capsys.readouterr()
    show = ["show", "--nats-url", stream.url, wanted["id"]]
    assert await asyncio.to_thread(main, show) == 0
    human = capsys.readouterr().out
    assert f"{wanted['id']}: stream STRIPE seq " in human
    assert "subject stripe.test.invoice.paid" in human
    assert "translation (InvoiceChanged):" in human and '"amount_paid"' in human
    assert await asyncio.to_thread(main, [*show, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)  # nothing but JSON on stdout
    assert found["headers"]["Nats-Msg-Id"] == wanted["id"]
    assert found["cloudevent"]["data"]["stripe"] == wanted
    messages = await stream_messages(stream.url)
    assert [m.seq for m in messages if m.headers["Nats-Msg-Id"] == wanted["id"]] == [found["seq"]]

    untranslated = fixture_event("product_created")["id"]
    assert await asyncio.to_thread(main, ["show", "--nats-url", stream.url, untranslated]) == 0
    assert "no translation: not_translated" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["show", "--nats-url", stream.url, "evt_nope"]) == 4
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "evt_nope: not in stream STRIPE\n"
