"""The sizing table of docs/deploy.md, generated from the profiles the manifests come from.

Each column is a ``Profile``: staging and production as rendered under ``knative/`` and
``nats/``, and the documented overrides (``profiles.OVERRIDES``). The per-unit figures are
the month-end load test's (bench/bench_month_end.py on the podman staging stack).
"""

from __future__ import annotations

from dataclasses import dataclass

from .natsconf import size_bytes
from .profiles import OVERRIDES, PROFILES, Profile

#: Stored bytes per Stripe event in STRIPE and per usage record in USAGE (one replica).
STRIPE_BYTES_PER_EVENT = 5_000
USAGE_BYTES_PER_RECORD = 430
#: Usage records per Stripe event in the month-end mix.
RECORDS_PER_EVENT = 10
#: STRIPE's and USAGE's ``max_age``.
RETENTION_SECONDS = 30 * 86_400
#: count-usage's CPU per usage record (bench/bench_counter.py: 180-230 us at R1 and R3 since
#: it applies a fetched batch at once; 0.5 ms in the month-end load test before). It reads
#: USAGE with one ordered consumer, so one process on at most one core is a partition's
#: ceiling.
COUNTER_SECONDS_PER_RECORD = 0.0002
#: A partition's CPU per record of another partition it reads and skips (fetch, parse, hash:
#: 46-52 us, a partition owning none of 20,000 records; bench/README.md, partitions). It
#: bounds what partitions add: never past 1 / (this * RECORDS_PER_EVENT), 2,000 events/s.
COUNTER_SKIP_SECONDS_PER_RECORD = 0.00005


@dataclass(frozen=True)
class Column:
    """One column: a profile and the sustained Stripe events/s it is sized for."""

    heading: str
    profile: Profile
    #: None: no rate (staging: a small copy of production's shape).
    events_per_second: float | None


def columns() -> list[Column]:
    """The table's columns: the rendered environments, then the overrides."""
    return [
        Column("staging", PROFILES["staging"], None),
        Column("production", PROFILES["production"], 10),
        *(Column(f"override {rate:,}/s", profile, rate) for rate, profile in OVERRIDES.items()),
    ]


def retention_rate(profile: Profile) -> float:
    """Stripe events/s (with their usage records) whose 30 days fit the storage chain."""
    nats = profile.nats
    stripe = STRIPE_BYTES_PER_EVENT * RETENTION_SECONDS
    usage = USAGE_BYTES_PER_RECORD * RECORDS_PER_EVENT * RETENTION_SECONDS
    return min(
        size_bytes(nats.stripe_max_bytes) / stripe,
        size_bytes(nats.usage_max_bytes) / usage,
        size_bytes(nats.max_file_store) / (stripe + usage),
    )


def counter_ceiling(partitions: int = 1) -> float:
    """Stripe events/s (with their usage records) ``partitions`` count-usage partitions keep
    up with, one core each: each counts its share and skips the others'."""
    share = 1 / partitions
    per_record = COUNTER_SECONDS_PER_RECORD * share
    per_record += COUNTER_SKIP_SECONDS_PER_RECORD * (1 - share)
    return 1 / (per_record * RECORDS_PER_EVENT)


def _functions(profile: Profile) -> str:
    busy = "".join(
        f"; {cpu} on `{event_type}`"
        for event_type, cpu in sorted(profile.function_cpu_requests.items())
    )
    return f"{profile.cpu_request}{busy} (limit {profile.cpu_limit})"


def _counter(column: Column) -> str:
    partitions = column.profile.counter_partitions
    ceiling = counter_ceiling(partitions)
    if column.events_per_second is not None and column.events_per_second > ceiling:
        return f"{partitions}: **cannot keep up** (~{ceiling:,.0f} events/s)"
    if partitions > 1:
        return f"{partitions}: keeps up with {partitions} partitions (~{ceiling:,.0f} events/s)"
    return "1"


def _rows(column: Column) -> dict[str, str]:
    p, nats = column.profile, column.profile.nats
    rate = column.events_per_second
    return {
        "sized for (Stripe events/s sustained)": "—" if rate is None else _rate(rate),
        "function pods: CPU request": _functions(p),
        "function pods: memory request, limit": f"{p.memory_request}, {p.memory_limit}",
        "function pods: `containerConcurrency`, target, `max-scale`, `min-scale`": (
            f"{p.container_concurrency}, {p.target_concurrency}, {p.max_scale}, {p.min_scale}"
        ),
        "`project-tiers` replicas": str(p.tiers_replicas),
        "`project-lifecycle` replicas": "1",
        "`count-usage` partitions (a Deployment each)": _counter(column),
        "`forward-openmeter` replicas, `batch_size`": (
            f"{p.forwarder_replicas}, {p.forwarder_batch_size:,}"
        ),
        "consumer pods: CPU request (limit), memory request (limit)": (
            f"{p.consumer_cpu_request} ({p.consumer_cpu_limit}), "
            f"{p.consumer_memory_request} ({p.consumer_memory_limit})"
        ),
        "NATS per node: CPU, memory (requests = limits), `GOMEMLIMIT`": (
            f"{nats.cpu}, {nats.memory}, {nats.gomemlimit}"
        ),
        "NATS per node: volume, `max_file_store`": f"{nats.volume}, {nats.max_file_store}",
        "`max_bytes`: STRIPE, USAGE": f"{nats.stripe_max_bytes}, {nats.usage_max_bytes}",
        "30 days of STRIPE and USAGE fit up to (events/s)": _rate(retention_rate(p)),
    }


def _rate(value: float) -> str:
    return f"{value:.2g}" if value < 10 else f"{value:,.0f}"


def sizing_table() -> str:
    """The Markdown table for docs/deploy.md (``stripe-bridge generate`` writes it)."""
    cols = columns()
    lines = [
        "| | " + " | ".join(c.heading for c in cols) + " |",
        "| --- |" + " --- |" * len(cols),
    ]
    rows = [_rows(c) for c in cols]
    for label in rows[0]:
        lines.append(f"| {label} | " + " | ".join(r[label] for r in rows) + " |")
    return "\n".join(lines) + "\n"
