"""The sizing table in docs/deploy.md is what the committed manifests run, and adds up.

The table is generated from the profiles (``stripe_bridge.deploy.sizing``); these tests read
it back from the doc and compare it with the rendered files under ``knative/`` and the built
``nats/overlays/``, so neither a stale table nor a renderer that ignores a profile field
goes unnoticed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from stripe_bridge.cli import build_parser
from stripe_bridge.deploy import alert_model, knative, profiles, workloads
from stripe_bridge.deploy.kustomize import build
from stripe_bridge.deploy.natsconf import size_bytes
from stripe_bridge.deploy.sizing import Column, columns, counter_ceiling, retention_rate
from stripe_bridge_testing.repo import REPO_ROOT

ENVS = list(profiles.PROFILES)


def doc_table() -> dict[str, dict[str, str]]:
    """The generated sizing table of docs/deploy.md: row label -> column heading -> cell."""
    text = (REPO_ROOT / "docs" / "deploy.md").read_text()
    begin, end = "<!-- generated:sizing -->\n", "<!-- /generated:sizing -->"
    body = text[text.index(begin) + len(begin) : text.index(end)]
    lines = [line.strip("|").split(" | ") for line in body.strip().splitlines()]
    headings = [cell.strip() for cell in lines[0][1:]]
    return {
        row[0].strip(): dict(zip(headings, (c.strip() for c in row[1:]), strict=True))
        for row in lines[2:]
    }


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def nats_container(env: str) -> dict[str, Any]:
    (sts,) = [o for o in build(REPO_ROOT / "nats" / "overlays" / env) if o["kind"] == "StatefulSet"]
    container: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]
    container["volume"] = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]
    return container


@pytest.mark.parametrize("env", ENVS)
def test_the_docs_table_is_what_the_manifests_run(env: str) -> None:
    table = {label: cells[env] for label, cells in doc_table().items()}
    services = {
        d["metadata"]["annotations"].get("stripe-bridge.io/event-type", ""): d
        for path in sorted((REPO_ROOT / "knative" / env).glob("stripe-*.yaml"))
        for d in documents(path)
    }
    cpu = {
        t: d["spec"]["template"]["spec"]["containers"][0]["resources"] for t, d in services.items()
    }
    default = cpu.pop("*")
    busy = "".join(
        f"; {r['requests']['cpu']} on `{t}`" for t, r in sorted(cpu.items()) if r != default
    )
    cpu_cell = f"{default['requests']['cpu']}{busy} (limit {default['limits']['cpu']})"
    assert table["function pods: CPU request"] == cpu_cell
    paid = services["invoice.paid"]["spec"]["template"]
    notes = paid["metadata"]["annotations"]
    scale = ", ".join(
        [str(paid["spec"]["containerConcurrency"])]
        + [notes[f"autoscaling.knative.dev/{k}"] for k in ("target", "max-scale", "min-scale")]
    )
    assert table["function pods: `containerConcurrency`, target, `max-scale`, `min-scale`"] == scale

    consumers = {
        d["metadata"]["name"]: d for d in documents(REPO_ROOT / "knative" / env / "consumers.yaml")
    }
    parser = build_parser()
    args = {
        name: parser.parse_args(d["spec"]["template"]["spec"]["containers"][0]["args"])
        for name, d in consumers.items()
        if d["kind"] == "Deployment"
    }
    replicas = {name: consumers[name]["spec"]["replicas"] for name in args}
    assert table["`project-tiers` replicas"] == str(replicas["project-tiers"])
    assert table["`project-lifecycle` replicas"] == str(replicas["project-lifecycle"])
    counters = [a for a in args.values() if a.command == "count-usage"]
    assert table["`count-usage` partitions (a Deployment each)"].split(":")[0] == str(len(counters))
    assert {(a.partitions, a.partition) for a in counters} == {
        (len(counters), i) for i in range(len(counters))
    }
    forwarder = f"{replicas['forward-openmeter']}, {args['forward-openmeter'].batch_size:,}"
    assert table["`forward-openmeter` replicas, `batch_size`"] == forwarder

    nats = nats_container(env)
    env_vars = {e["name"]: e.get("value") for e in nats["env"]}
    limits = nats["resources"]["limits"]
    assert nats["resources"]["requests"] == limits
    assert table["NATS per node: CPU, memory (requests = limits), `GOMEMLIMIT`"] == (
        f"{limits['cpu']}, {limits['memory']}, {env_vars['GOMEMLIMIT']}"
    )
    assert table["NATS per node: volume, `max_file_store`"] == (
        f"{nats['volume']['requests']['storage']}, {env_vars['NATS_MAX_FILE_STORE']}"
    )
    # Every consumer that may create USAGE gives it the table's limit (none resets it).
    stripe_limit, usage_limit = table["`max_bytes`: STRIPE, USAGE"].split(", ")
    usage_args = [a for a in args.values() if hasattr(a, "usage_max_bytes")]
    assert len(usage_args) == 3
    assert {a.usage_max_bytes for a in usage_args} == {size_bytes(usage_limit)}
    assert stripe_limit == profiles.PROFILES[env].nats.stripe_max_bytes


@pytest.mark.parametrize("column", columns(), ids=lambda c: c.heading)
def test_every_column_holds_30_days_at_its_rate_and_its_chain_is_ordered(column: Column) -> None:
    nats = column.profile.nats
    store = size_bytes(nats.max_file_store)
    assert store <= 0.9 * size_bytes(nats.volume)
    # Each stream's limit is above the alert line, so one alert warns before any is full.
    for limit in (nats.stripe_max_bytes, nats.usage_max_bytes):
        assert alert_model.STORAGE_ALERT_RATIO * store < size_bytes(limit) < store
    if column.events_per_second is not None:
        assert retention_rate(column.profile) >= column.events_per_second


@pytest.mark.parametrize("column", columns(), ids=lambda c: c.heading)
def test_every_column_renders(column: Column) -> None:
    """An override is a whole profile: its Services and consumers render and parse."""
    profile = column.profile
    services = {
        s["metadata"].get("annotations", {}).get("stripe-bridge.io/event-type"): s
        for s in knative.services(profile)
    }
    for event_type, cpu in profile.function_cpu_requests.items():
        resources = services[event_type]["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert resources["requests"]["cpu"] == cpu
    parser = build_parser()
    for spec in workloads.consumer_specs(profile):
        parser.parse_args(list(spec.args))


def test_count_usage_has_enough_partitions_for_every_rate() -> None:
    """Each column's partitions keep up with its rate; the 1,000/s override needs more
    than one (a single ordered reader tops out near 500 events/s)."""
    table = doc_table()["`count-usage` partitions (a Deployment each)"]
    for column in columns():
        partitions = column.profile.counter_partitions
        if column.events_per_second is not None:
            assert counter_ceiling(partitions) >= column.events_per_second
        assert "cannot keep up" not in table[column.heading]
        assert table[column.heading].startswith(str(partitions))
    assert counter_ceiling() == pytest.approx(500)
    assert counter_ceiling(4) > 1000 > counter_ceiling(2)
    assert "keeps up with 4 partitions" in table["override 1,000/s"]


def test_a_partitioned_profile_renders_a_counter_deployment_and_pod_monitor_per_partition() -> None:
    """The 1,000/s override: count-usage-0..3, each one replica with its --partition, each
    scraped into the usage-counter job; no unpartitioned count-usage beside them."""
    from stripe_bridge.deploy import promoperator

    profile = profiles.OVERRIDES[1000]
    parser = build_parser()
    counters = {
        d["metadata"]["name"]: d
        for d in workloads.consumers(profile)
        if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("count-usage")
    }
    assert sorted(counters) == [f"count-usage-{i}" for i in range(4)]
    for i in range(4):
        doc = counters[f"count-usage-{i}"]
        args = parser.parse_args(doc["spec"]["template"]["spec"]["containers"][0]["args"])
        assert (args.partitions, args.partition, doc["spec"]["replicas"]) == (4, i, 1)
    monitors = {m["metadata"]["name"]: m for m in promoperator.pod_monitors(profile)}
    for name in counters:
        (endpoint,) = monitors[name]["spec"]["podMetricsEndpoints"]
        assert {
            "targetLabel": "job",
            "replacement": alert_model.COUNTER_JOB,
            "action": "replace",
        } in (endpoint["relabelings"])
