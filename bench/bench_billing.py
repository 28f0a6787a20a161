"""Benchmark the billing consumers beside the ceilings of their two halves.

Run: ``.venv/bin/python bench/bench_billing.py [--quick] [--events N]``.

In one run, on loopback only, it starts its own nats-server and the OpenMeter ingest
stand-in (``stripe_bridge_testing.openmeter_standin``), then prints events/s for:

* forwarder, per batch size: the HTTP ceiling (the same batches POSTed straight to the
  stand-in, no NATS), the JetStream ceiling (a plain pull consumer that fetches and acks,
  no HTTP), and ``Forwarder`` doing both (fetch, POST, ack after 2xx);
* projector: the JetStream ceiling (fetch + ack of the same STRIPE messages) and
  ``TierProjector`` (parse, reduce, KV compare-and-set), for many customers and for one
  hot customer (every write contends on one KV key).

Every loop is bounded; the servers stop at the end. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from stripe_bridge.billing.openmeter import (
    BATCH_CONTENT_TYPE,
    INGEST_PATH,
    Forwarder,
    ForwarderSettings,
)
from stripe_bridge.billing.projector import TierProjector
from stripe_bridge.billing.tiers import DEFAULT_TIERS
from stripe_bridge.billing.usage import UsageRecord, encode, provision_usage_streams
from stripe_bridge.envelope import StripeEvent
from stripe_bridge.message import build_message
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.ops.samples import sample_event
from stripe_bridge.streams import StreamSpec, provision
from stripe_bridge_testing.openmeter_standin import IngestStandIn

DEADLINE = 300.0


async def until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``predicate`` (bounded by DEADLINE)."""
    deadline = time.monotonic() + DEADLINE
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def publish_usage(js: Any, count: int) -> list[bytes]:
    """``count`` usage events in USAGE; their bodies."""
    bodies = []
    pending = []
    for n in range(count):
        record = UsageRecord(meter="tokens", customer_id=f"cus_{n % 100}", value=n, id=f"b{n}")
        subject, body, headers = encode(record)
        bodies.append(body)
        pending.append(js.publish(subject, body, headers=headers))
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    return bodies


async def http_ceiling(ingest: IngestStandIn, bodies: list[bytes], batch: int) -> float:
    """Events/s POSTing ``bodies`` in batches straight to the stand-in."""
    headers = {"Authorization": f"Bearer {ingest.api_key}", "Content-Type": BATCH_CONTENT_TYPE}
    async with httpx.AsyncClient(base_url=ingest.url, headers=headers) as client:
        started = time.perf_counter()
        for i in range(0, len(bodies), batch):
            chunk = bodies[i : i + batch]
            response = await client.post(INGEST_PATH, content=b"[" + b",".join(chunk) + b"]")
            response.raise_for_status()
        return len(bodies) / (time.perf_counter() - started)


async def jetstream_ceiling(js: Any, stream: str, subject: str, count: int, batch: int) -> float:
    """Events/s of a plain durable pull consumer that fetches and acks ``count`` messages."""

    sub = await js.pull_subscribe(
        subject, durable=f"ceiling-{batch}-{time.time_ns()}", stream=stream
    )
    done = 0
    started = time.perf_counter()
    deadline = time.monotonic() + DEADLINE
    while done < count and time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(batch, timeout=1)
        except TimeoutError:  # nats-py raises asyncio's or its own subclass
            continue
        for msg in msgs:
            await msg.ack()
        done += len(msgs)
    rate = done / (time.perf_counter() - started)
    await sub.unsubscribe()
    return rate


async def forwarder_rate(nc: Any, ingest: IngestStandIn, count: int, batch: int) -> float:
    """Events/s of ``Forwarder`` from the first fetch to the last accept."""
    settings = ForwarderSettings(
        url=ingest.url,
        api_key=ingest.api_key,
        batch_size=batch,
        fetch_wait=0.2,
        durable=f"bench-{batch}",
        max_requests_per_second=1e6,
    )
    forwarder = Forwarder(nc, settings)
    stop = asyncio.Event()
    before = len(ingest.accepted)
    started = time.perf_counter()
    task = asyncio.create_task(forwarder.run(stop))

    async def accepted() -> bool:
        if task.done():
            task.result()
        return len(ingest.accepted) - before >= count

    await until(accepted, "forwarder accepted everything")
    rate = count / (time.perf_counter() - started)
    stop.set()
    await task
    return rate


def stripe_events(customers: int, per_customer: int, tag: str) -> list[dict[str, Any]]:
    """Subscription and entitlement events (real sample payloads) for ``customers``."""
    base_sub = sample_event("customer.subscription.updated", fresh=False)
    base_ent = sample_event("entitlements.active_entitlement_summary.updated", fresh=False)
    keys = ["pro_monthly", "teams_monthly", None]
    statuses = ["active", "past_due", "active", "canceled"]
    events = []
    for c in range(customers):
        for n in range(per_customer):
            base = base_ent if n % 5 == 4 else base_sub
            event = copy.deepcopy(base)
            # Ids unique per data set: JetStream's duplicate window outlives a purge.
            event.update(id=f"evt_{tag}{c}x{n}", created=1_700_000_000 + n)
            obj = event["data"]["object"]
            obj["customer"] = f"cus_b{c}"
            if base is base_sub:
                obj.update(id=f"sub_b{c}", status=statuses[n % len(statuses)])
                for item in obj["items"]["data"]:
                    item["price"]["lookup_key"] = keys[n % len(keys)]
            events.append(event)
    return events


async def publish_stripe(js: Any, events: list[dict[str, Any]]) -> None:
    """Publish events to STRIPE as the bridge does."""
    pending = []
    for raw in events:
        message = build_message(StripeEvent.model_validate(raw), raw, "stripe")
        pending.append(js.publish(message.subject, message.body, headers=message.headers))
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


async def projector_rate(nc: Any, count: int, durable: str) -> float:
    """Events/s of ``TierProjector`` over ``count`` messages."""
    projector = TierProjector(nc, DEFAULT_TIERS, durable=durable)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(projector.run(stop, fetch_wait=0.2))

    async def handled() -> bool:
        if task.done():
            task.result()
        total = sum(
            s.value
            for metric in projector.metrics.registry.collect()
            for s in metric.samples
            if s.name == "stripe_bridge_tiers_events_total"
        )
        return total >= count

    await until(handled, "projector handled everything")
    rate = count / (time.perf_counter() - started)
    stop.set()
    await task
    return rate


async def main_async(events: int, batches: list[int], customers: int) -> None:
    """Run every measurement and print the table."""
    import nats

    with (
        tempfile.TemporaryDirectory() as tmp,
        NatsServer(Path(tmp) / "nats") as server,
        IngestStandIn() as ingest,
    ):
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await provision_usage_streams(js)
        await provision(js, StreamSpec("STRIPE", "stripe"))
        bodies = await publish_usage(js, events)
        print(f"forwarder: {events} usage events, OpenMeter stand-in on loopback")
        print(f"{'batch':>6} {'HTTP ceiling':>14} {'JetStream ceiling':>18} {'forwarder':>11}")
        for batch in batches:
            http = await http_ceiling(ingest, bodies, batch)
            jets = await jetstream_ceiling(js, "USAGE", "usage.>", events, batch)
            fwd = await forwarder_rate(nc, ingest, events, batch)
            print(f"{batch:>6} {http:>12.0f}/s {jets:>16.0f}/s {fwd:>9.0f}/s")

        print()
        per_customer = 10
        spread = stripe_events(customers, per_customer, "many")
        hot = stripe_events(1, customers * per_customer, "hot")
        for name, sample in (("many customers", spread), ("one hot customer", hot)):
            await js.purge_stream("STRIPE")
            await publish_stripe(js, sample)
            n = len(sample)
            ceiling = await jetstream_ceiling(js, "STRIPE", "stripe.>", n, 100)
            rate = await projector_rate(nc, n, f"tiers-{name.split()[1]}")
            print(
                f"projector ({name}, {n} events): JetStream ceiling {ceiling:.0f}/s, "
                f"projector {rate:.0f}/s ({rate / ceiling:.0%} of ceiling)"
            )
        await nc.close()


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events (smoke run)")
    parser.add_argument("--events", type=int, default=20_000, help="usage events")
    args = parser.parse_args()
    events = 2_000 if args.quick else args.events
    customers = 50 if args.quick else 300
    asyncio.run(main_async(events, [100, 500], customers))


if __name__ == "__main__":
    main()
