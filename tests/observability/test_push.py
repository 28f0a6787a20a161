"""MetricsPusher and pushgateway-gc against a real Pushgateway."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from stripe_bridge.cli import main
from stripe_bridge.metrics import BridgeMetrics
from stripe_bridge.ops.natsserver import free_port
from stripe_bridge.push import (
    JOB,
    MetricsPusher,
    delete_group,
    group_url,
    list_groups,
    stale_groups,
)
from stripe_bridge_testing.processes import PushgatewayServer
from stripe_bridge_testing.waiting import wait_until_async

from .conftest import pushed_value

PUBLISHED = {"event_type": "invoice.paid", "outcome": "published", "reason": ""}


def make_pusher(
    url: str, instance: str, min_interval: float, environment: str | None = None
) -> tuple[BridgeMetrics, MetricsPusher]:
    metrics = BridgeMetrics()
    metrics.preinitialise(["invoice.paid"], "memory")
    pusher = MetricsPusher(
        url,
        metrics.registry,
        "invoice_paid",
        instance,
        min_interval,
        failures=metrics.push_failures,
        environment=environment,
    )
    return metrics, pusher


def published(url: str, instance: str) -> float | None:
    return pushed_value(url, "stripe_bridge_webhooks_total", instance=instance, **PUBLISHED)


async def test_zero_snapshot_first_then_current_values(pushgateway: PushgatewayServer) -> None:
    # min_interval is long enough for a loaded machine to push and read back the zero
    # before the value may replace it (with 2 s the zero had to be seen within 1.5 s).
    metrics, pusher = make_pusher(pushgateway.url, "pod-a-1", min_interval=10.0)
    metrics.webhooks.labels(*PUBLISHED.values()).inc()
    pusher.request_done()
    # The zero snapshot stays up for min_interval, so Prometheus can scrape the 0.
    await wait_until_async(lambda: published(pushgateway.url, "pod-a-1") == 0, 8, "zero pushed")
    await wait_until_async(lambda: published(pushgateway.url, "pod-a-1") == 1, 30, "value pushed")
    await pusher.final_push()
    assert pusher.pushes == 3
    assert pusher.failed == 0


async def test_pushes_are_rate_limited(pushgateway: PushgatewayServer) -> None:
    metrics, pusher = make_pusher(pushgateway.url, "pod-b-1", min_interval=0.25)
    counter = metrics.webhooks.labels(*PUBLISHED.values())
    started = time.monotonic()
    deliveries = 0
    while time.monotonic() - started < 1.5:
        counter.inc()
        deliveries += 1
        pusher.request_done()
        await asyncio.sleep(0.005)  # deliveries arriving, not synchronisation
    await pusher.final_push()
    elapsed = time.monotonic() - started
    # zero snapshot + one per interval + the final push
    assert 3 <= pusher.pushes <= 1 + elapsed / 0.25 + 1, (pusher.pushes, deliveries)
    assert published(pushgateway.url, "pod-b-1") == deliveries


async def test_final_push_carries_latest_values(pushgateway: PushgatewayServer) -> None:
    metrics, pusher = make_pusher(pushgateway.url, "pod-c-1", min_interval=60)
    counter = metrics.webhooks.labels(*PUBLISHED.values())
    counter.inc()
    pusher.request_done()
    await wait_until_async(lambda: pusher.pushes == 1, 30, "zero snapshot pushed")
    counter.inc(4)
    await pusher.final_push()
    assert published(pushgateway.url, "pod-c-1") == 5


async def test_instances_keep_their_own_counters(pushgateway: PushgatewayServer) -> None:
    first, first_pusher = make_pusher(pushgateway.url, "pod-d-1", min_interval=60)
    second, second_pusher = make_pusher(pushgateway.url, "pod-d-2", min_interval=60)
    first.webhooks.labels(*PUBLISHED.values()).inc(2)
    second.webhooks.labels(*PUBLISHED.values()).inc(3)
    await first_pusher.final_push()
    await second_pusher.final_push()
    assert published(pushgateway.url, "pod-d-1") == 2
    assert published(pushgateway.url, "pod-d-2") == 3


async def test_environments_sharing_a_pushgateway_stay_apart(
    pushgateway: PushgatewayServer,
) -> None:
    """Same function, same pod name: staging's push must not replace production's group."""
    staging, staging_pusher = make_pusher(pushgateway.url, "pod-f-1", 60, "staging")
    production, production_pusher = make_pusher(pushgateway.url, "pod-f-1", 60, "production")
    staging.webhooks.labels(*PUBLISHED.values()).inc(7)
    production.webhooks.labels(*PUBLISHED.values()).inc(2)
    await production_pusher.final_push()
    await staging_pusher.final_push()
    groups = sorted(g.labels["environment"] for g in list_groups(pushgateway.url))
    assert groups == ["production", "staging"]
    for environment, value in (("production", 2), ("staging", 7)):
        labels = {**PUBLISHED, "instance": "pod-f-1", "environment": environment}
        assert pushed_value(pushgateway.url, "stripe_bridge_webhooks_total", **labels) == value
    assert production_pusher.endpoint.endswith(
        "/metrics/job/stripe-bridge/environment/production/function/invoice_paid/instance/pod-f-1"
    )


async def test_instance_with_slash_is_escaped(pushgateway: PushgatewayServer) -> None:
    assert (
        group_url("http://pg:9091/", {"job": JOB, "instance": "a/b"})
        == "http://pg:9091/metrics/job/stripe-bridge/instance@base64/YS9i"
    )
    _, pusher = make_pusher(pushgateway.url, "node/7", min_interval=60)
    await pusher.final_push()
    assert pusher.pushes == 1
    assert published(pushgateway.url, "node/7") == 0


@pytest.mark.parametrize("instance", ["node/7", "", "zürich-π", "a b+c%d"])
async def test_grouping_key_values_that_need_escaping_land_under_their_labels(
    pushgateway: PushgatewayServer, instance: str
) -> None:
    """A slash, an empty value, unicode, a space: each group holds exactly its labels."""
    environment = "stag/ing"
    _, pusher = make_pusher(pushgateway.url, instance, 60, environment)
    await pusher.final_push()
    assert (pusher.pushes, pusher.failed) == (1, 0)

    def ours() -> list[dict[str, str]]:
        groups = list_groups(pushgateway.url)
        return [g.labels for g in groups if g.labels.get("environment") == environment]

    expected = {"job": JOB, "environment": environment, "function": "invoice_paid"}
    expected |= {"instance": instance}
    assert expected in ours()
    labels = {**PUBLISHED, "environment": environment, "instance": instance}
    assert pushed_value(pushgateway.url, "stripe_bridge_webhooks_total", **labels) == 0
    # pushgateway-gc deletes that group through the same URL, and only it.
    delete_group(
        pushgateway.url, next(g for g in list_groups(pushgateway.url) if g.labels == expected)
    )
    assert expected not in ours()


async def test_unreachable_pushgateway_is_counted_not_raised() -> None:
    metrics, pusher = make_pusher(f"http://127.0.0.1:{free_port()}", "pod-e-1", min_interval=60)
    await pusher.final_push()
    assert pusher.failed == 1
    failures = {"reason": "unreachable"}
    assert metrics.registry.get_sample_value("stripe_bridge_push_failures_total", failures) == 1


async def test_gc_deletes_only_old_groups_of_the_bridge(
    pushgateway: PushgatewayServer, capsys: pytest.CaptureFixture[str]
) -> None:
    _, old = make_pusher(pushgateway.url, "pod-old", min_interval=60)
    await old.final_push()
    _, new = make_pusher(pushgateway.url, "pod-new", min_interval=60)
    await new.final_push()
    other = httpx.put(f"{pushgateway.url}/metrics/job/nightly-backup", content=b"x 1\n")
    other.raise_for_status()
    times = {g.labels.get("instance"): g.push_time for g in list_groups(pushgateway.url)}
    assert times["pod-old"] < times["pod-new"]
    between = (times["pod-old"] + times["pod-new"]) / 2
    stale = stale_groups(pushgateway.url, older_than=600, now=between + 600)
    assert [g.labels["instance"] for g in stale] == ["pod-old"]

    assert (
        main(["pushgateway-gc", "--url", pushgateway.url, "--older-than", "0s", "--dry-run"]) == 0
    )
    assert "would delete" in capsys.readouterr().out
    assert len(list_groups(pushgateway.url)) == 3

    assert main(["pushgateway-gc", "--url", pushgateway.url, "--older-than", "0s"]) == 0
    out = capsys.readouterr().out
    assert "deleted function=invoice_paid instance=pod-new job=stripe-bridge" in out
    remaining = [g.labels for g in list_groups(pushgateway.url)]
    assert remaining == [{"job": "nightly-backup"}]


def test_gc_exit_codes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    assert main(["pushgateway-gc"]) == 2
    down = f"http://127.0.0.1:{free_port()}"
    assert main(["pushgateway-gc", "--url", down, "--older-than", "1h"]) == 3
    assert "cannot list groups: ConnectError" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pushgateway-gc", "--url", down, "--older-than", "soon"])
