"""A staging run in containers: the image and its servers on one podman network.

``scripts/staging up|test|down`` and tests/containers/test_staging.py both use this. What
runs, and under which names (the Kubernetes DNS names the manifests use, as network
aliases):

- ``nats-0..2`` (aliases ``nats-<i>.nats-headless`` and ``nats``): nats-server with the
  nats.conf the ConfigMap holds (``natsconf.kubernetes_params``), the StatefulSet's
  SERVER_NAME and the users' passwords from the environment, data in a host folder;
- ``redis``, ``prometheus-pushgateway.monitoring.svc.cluster.local``, ``prometheus``:
  Debian's servers (redis-server from the services image, the Go binaries of this machine's
  prometheus and prometheus-pushgateway packages mounted read-only into it);
- every webhook Service of knative/staging/ and ``billing-usage``, and the
  ``forward-openmeter`` and ``project-tiers`` Deployments, from the image, each with the
  manifest's environment, command, limits and a read-only root filesystem;
- ``openmeter``: the OpenMeter ingest stand-in (the test harness, mounted read-only), run
  by the image's Python.

Everything this machine reaches is published on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from stripe_bridge import registry
from stripe_bridge.billing.usage import DEFAULT_SOURCE
from stripe_bridge.deploy.alert_model import FORWARDER_JOB, PROJECTOR_JOB
from stripe_bridge.deploy.billing_rows import backup_row, usage_row
from stripe_bridge.deploy.kustomize import build
from stripe_bridge.deploy.natsconf import (
    HEADLESS_SERVICE,
    PASSWORD_ENV,
    STATEFULSET,
    kubernetes_params,
    new_password,
    render_nats_conf,
)
from stripe_bridge.ops.natsserver import free_port, nats_server_binary

from stripe_bridge_testing.container_specs import (
    ContainerSpec,
    deployments,
    knative_env,
    knative_service,
)
from stripe_bridge_testing.podman import RUN_ID, Container, Stack, scripts_image
from stripe_bridge_testing.waiting import wait_until

from .dashboard_queries import VARIABLES, assert_every_panel_has_data
from .deliveries import FIXTURE_OF, SECRET, fixture_event, signed_headers, stream_messages
from .repo import REPO_ROOT

ENVIRONMENT = "staging"
NATS_REPLICAS = 3
PUSHGATEWAY_HOST = "prometheus-pushgateway.monitoring.svc.cluster.local"
WEBHOOK_SERVICES = [t.service_name for t in registry.EVENT_TYPES] + ["stripe-event"]
USAGE_SERVICE = "billing-usage"
CONSUMERS = ("forward-openmeter", "project-tiers")
#: Settings the staging run adds to the forwarder: one scripted OpenMeter failure opens the
#: breaker and a quick half-open trial closes it, so the breaker panels see a transition.
FORWARDER_OVERRIDES = {
    "OPENMETER_BREAKER_FAILURES": "1",
    "OPENMETER_BREAKER_RESET": "0.5",
    "OPENMETER_BACKOFF_BASE": "0.05",
    "OPENMETER_BACKOFF_MAX": "0.2",
}
STATE_FILE = "staging.json"


def knative_options(spec: ContainerSpec) -> list[str]:
    """podman options for what the manifest's securityContext and limits ask for."""
    options = ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    options += ["--memory", spec.memory, "--cpus", spec.cpus]
    options += ["--stop-timeout", str(spec.grace_seconds)]
    if spec.read_only:
        options.append("--read-only")
    if spec.user is not None:
        options += ["--user", f"{spec.user}:{spec.user}"]
    return options


@dataclass(frozen=True)
class Published:
    """A server in the stack, at its published loopback URL."""

    url: str


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Staging:
    """One staging stack: its containers, the secrets it made and its loopback ports.

    The last five fields are the staging test's choices; bench/bench_month_end.py changes
    them (every consumer, the manifests' forwarder settings, a rate-limited OpenMeter, more
    time to start on a machine its own burst and other work keep busy, and optionally
    another log level, to measure what DEBUG costs).
    """

    stack: Stack
    secrets: dict[str, str]
    ports: dict[str, int]
    consumers: tuple[str, ...] = CONSUMERS
    forwarder_overrides: dict[str, str] = field(default_factory=lambda: dict(FORWARDER_OVERRIDES))
    #: Requests per second the OpenMeter stand-in accepts before answering 429 (None: any).
    openmeter_rate_limit: float | None = None
    #: How long a container may take to answer its readiness probe.
    ready_timeout: float = 90.0
    #: LOG_LEVEL for the functions and consumers instead of the manifests' (DEBUG).
    log_level: str | None = None

    @classmethod
    def new(cls, workdir: Path) -> Staging:
        """A stack not started yet, with fresh secrets."""
        token = secrets.token_hex(3)
        made = {f"nats-auth/{user}-password": new_password() for user in PASSWORD_ENV}
        made |= {f"stripe-bridge-webhook-secrets/{n}": SECRET for n in registry.function_names()}
        made |= {
            "stripe-bridge-redis/url": "redis://redis:6379/0",
            "stripe-bridge-billing/usage-api-token": secrets.token_hex(16),
            "stripe-bridge-billing/stripe-api-key": "rk_test_staging",
            "stripe-bridge-openmeter/url": "http://openmeter:8080",
            "stripe-bridge-openmeter/api-key": "om_staging_" + secrets.token_hex(8),
        }
        return cls(Stack(f"sb-{RUN_ID}-{token}", workdir), made, {})

    def secret(self, name: str, key: str) -> str:
        """A value of one of the stack's Secrets."""
        return self.secrets[f"{name}/{key}"]

    def secret_map(self) -> dict[tuple[str, str], str]:
        """(Secret name, key) -> value, as manifests.ContainerSpec.environment takes them."""
        return {tuple(k.split("/", 1)): v for k, v in self.secrets.items()}  # type: ignore[misc]

    def url(self, name: str) -> str:
        """http://127.0.0.1:<published port> of a published container port."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def nats_url(self, user: str = "admin", node: int = 0) -> str:
        """A client URL of one NATS node, from this machine."""
        password = self.secret("nats-auth", f"{user}-password")
        return f"nats://{user}:{password}@127.0.0.1:{self.ports[f'nats-{node}']}"

    # --- persistence for scripts/staging, whose up, test and down are separate processes

    def save(self) -> None:
        """Write the state next to the stack's files (readable by root only)."""
        path = self.stack.workdir / STATE_FILE
        path.touch(mode=0o600)
        state = {"prefix": self.stack.prefix, "secrets": self.secrets, "ports": self.ports}
        path.write_text(json.dumps(state))

    @classmethod
    def load(cls, workdir: Path) -> Staging:
        """The stack ``save`` wrote in ``workdir``."""
        state = json.loads((workdir / STATE_FILE).read_text())
        return cls(Stack(state["prefix"], workdir), state["secrets"], state["ports"])

    # --- up and down

    def publish(self, name: str) -> int:
        """A free loopback port for ``name``, remembered for later."""
        self.ports[name] = free_port()
        return self.ports[name]

    def start_nats(self, services: str) -> None:
        """Three clustered nats-servers from the ConfigMap's nats.conf."""
        conf = self.stack.workdir / "nats.conf"
        conf.write_text(render_nats_conf(kubernetes_params(NATS_REPLICAS)))
        passwords = {
            PASSWORD_ENV[user]: self.secret("nats-auth", f"{user}-password")
            for user in PASSWORD_ENV
        }
        for index in range(NATS_REPLICAS):
            name = f"{STATEFULSET}-{index}"
            data = self.stack.workdir / name
            data.mkdir(exist_ok=True)
            self.stack.run(
                name,
                services,
                ["/usr/local/bin/nats-server", "--config", "/etc/nats-config/nats.conf"],
                env={"SERVER_NAME": name, **self.nats_sizes(), **passwords},
                aliases=[f"{name}.{HEADLESS_SERVICE}", STATEFULSET],
                publish={4222: self.publish(name), 8222: self.publish(f"{name}-monitor")},
                mounts=[
                    f"{conf}:/etc/nats-config/nats.conf:ro",
                    f"{nats_server_binary()}:/usr/local/bin/nats-server:ro",
                    f"{data}:/data",
                ],
                options=["--tmpfs", "/var/run/nats"],
            )

    @staticmethod
    def nats_sizes() -> dict[str, str]:
        """The staging StatefulSet's literal env values (GOMEMLIMIT, NATS_MAX_FILE_STORE)."""
        (sts,) = [
            o
            for o in build(REPO_ROOT / "nats" / "overlays" / ENVIRONMENT)
            if o["kind"] == "StatefulSet"
        ]
        (nats,) = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "nats"]
        return {e["name"]: e["value"] for e in nats["env"] if "$(" not in e.get("value", "$(")}

    def wait_nats_healthy(self, timeout: float = 60) -> None:
        """Every node answers /healthz (JetStream meta layer current)."""
        for index in range(NATS_REPLICAS):
            url = self.url(f"nats-{index}-monitor") + "/healthz"
            wait_until(lambda url=url: http_ok(url), timeout, f"{url} healthy")  # type: ignore[misc]

    def start_servers(self, services: str, prometheus: bool) -> None:
        """Redis, the Pushgateway and (optionally) Prometheus scraping the staging targets."""
        self.stack.run(
            "redis",
            services,
            ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"],
        )
        self.stack.run(
            "pushgateway",
            services,
            ["/usr/local/bin/pushgateway", "--web.listen-address=:9091", "--persistence.file="],
            aliases=[PUSHGATEWAY_HOST],
            publish={9091: self.publish("pushgateway")},
            mounts=["/usr/bin/prometheus-pushgateway:/usr/local/bin/pushgateway:ro"],
        )
        if not prometheus:
            return
        config = self.stack.workdir / "prometheus.yml"
        config.write_text(prometheus_config())
        self.stack.run(
            "prometheus",
            services,
            [
                "/usr/local/bin/prometheus",
                "--config.file=/etc/prometheus/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
            ],
            publish={9090: self.publish("prometheus")},
            mounts=[
                "/usr/bin/prometheus:/usr/local/bin/prometheus:ro",
                f"{config}:/etc/prometheus/prometheus.yml:ro",
            ],
            options=["--tmpfs", "/prometheus"],
        )

    def provision(self, image: str) -> None:
        """``stripe-bridge provision --replicas 3`` as a one-off container (an operator's job)."""
        admin = {
            "NATS_URL": "nats://nats:4222",
            "NATS_USER": "admin",
            "NATS_PASSWORD": self.secret("nats-auth", "admin-password"),
        }
        job = self.stack.run(
            "provision",
            image,
            ["provision", "--replicas", str(NATS_REPLICAS)],
            env=admin,
            options=["--entrypoint", "stripe-bridge", "--read-only"],
        )
        wait_until(lambda: job.exit_code() is not None, 60, "stripe-bridge provision")
        assert job.exit_code() == 0, job.logs()

    def start_openmeter(self, image: str) -> Container:
        """The OpenMeter stand-in, run by the image's Python from read-only mounts."""
        harness = Path(__file__).parent
        key = self.secret("stripe-bridge-openmeter", "api-key")
        args = ["-m", "stripe_bridge_testing.openmeter_container", key]
        if self.openmeter_rate_limit is not None:
            args.append(str(self.openmeter_rate_limit))
        return self.stack.run(
            "openmeter",
            image,
            args,
            env={"PYTHONPATH": "/standin"},
            publish={8081: self.publish("openmeter-control")},
            mounts=[
                f"{harness}:/standin/stripe_bridge_testing:ro",
            ],
            options=["--entrypoint", "python3", "--read-only"],
        )

    def log_override(self) -> dict[str, str]:
        """The LOG_LEVEL that replaces the manifest's, if ``log_level`` is set."""
        return {"LOG_LEVEL": self.log_level} if self.log_level else {}

    def start_consumer(self, image: str, name: str) -> Container:
        """A Deployment of knative/staging/consumers.yaml, ready at its readiness probe."""
        spec = deployments(ENVIRONMENT)[name]
        env = spec.environment(self.secret_map())
        if name == "forward-openmeter":
            env |= self.forwarder_overrides
        env |= self.log_override()
        port = self.publish(name)
        container = self.stack.run(
            name,
            image,
            spec.command[1:],
            env=env,
            publish={spec.readiness.port: port},
            options=["--entrypoint", spec.command[0], *knative_options(spec)],
        )
        return container

    def start_function(
        self, image: str, service: str, cpus: str | None = None
    ) -> tuple[Container, ContainerSpec]:
        """A Knative Service of knative/staging/ as its revision's container (with ``cpus``
        instead of its CPU limit, if given: bench/bench_container_start.py)."""
        spec = knative_service(ENVIRONMENT, service)
        if cpus is not None:
            spec = replace(spec, cpus=cpus)
        env = spec.environment(self.secret_map()) | knative_env(spec) | self.log_override()
        container = self.stack.run(
            service,
            image,
            env=env,
            publish={spec.port: self.publish(service)},
            options=knative_options(spec),
        )
        return container, spec

    def wait_ready(self, name: str, path: str) -> None:
        """The published port of ``name`` answers ``path`` with 200."""
        url = self.url(name) + path
        wait_until(lambda: http_ok(url), self.ready_timeout, f"{name} at {path}")

    def up(self, functions: list[str], consumers: bool = True, prometheus: bool = True) -> str:
        """Build or reuse the images, start everything, wait until ready; the image's name."""
        image = scripts_image()
        services = scripts_image("--services")
        self.stack.create_network()
        self.save()
        self.start_nats(services)
        self.start_servers(services, prometheus)
        self.wait_nats_healthy()
        self.provision(image)
        if consumers:
            # forward-openmeter creates the USAGE streams billing-usage publishes to.
            self.start_openmeter(image)
            for name in self.consumers:
                self.start_consumer(image, name)
            for name in self.consumers:
                self.wait_ready(name, deployments(ENVIRONMENT)[name].readiness.path)
        ready = [self.start_function(image, service) for service in functions]
        for _, spec in ready:
            self.wait_ready(spec.name, spec.readiness.path)
        if prometheus:
            self.wait_ready("prometheus", "/-/ready")
        self.save()
        return image

    def down(self) -> None:
        """Remove every container and the network."""
        self.stack.remove()


def prometheus_config() -> str:
    """Scrape the Pushgateway (honoring the pushed labels) and both billing consumers."""
    consumers = "".join(
        f"""
  - job_name: {job}
    static_configs:
      - targets: ["{target}:9090"]
        labels: {{environment: {ENVIRONMENT}}}"""
        for job, target in ((FORWARDER_JOB, "forward-openmeter"), (PROJECTOR_JOB, "project-tiers"))
    )
    return f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["{PUSHGATEWAY_HOST}:9091"]{consumers}
"""


# --- the staging test: drive traffic, stop a NATS server mid-run, check every outcome


def deliver(
    url: str, body: bytes, headers: Callable[[], dict[str, str]], ok: int
) -> httpx.Response:
    """POST until answered ``ok`` (or a final 4xx), retrying 5xx and refusals like Stripe."""
    deadline = time.monotonic() + 90
    while True:
        try:
            response = httpx.post(url, content=body, headers=headers(), timeout=30)
            if response.status_code < 500:
                return response
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not store a delivery within 90 s")
        time.sleep(0.5)


def send_event(staging: Staging, service: str, event: dict[str, Any]) -> str:
    """Deliver one signed Stripe event to ``service``; its status (published/duplicate)."""
    body = json.dumps(event).encode()
    answer = deliver(staging.url(service) + "/", body, lambda: signed_headers(body), 200)
    assert answer.status_code == 200, (service, answer.status_code, answer.text)
    return str(answer.json()["status"])


def send_usage(staging: Staging, records: list[dict[str, Any]]) -> None:
    """Deliver usage records to billing-usage (retries keep the ids)."""
    token = staging.secret("stripe-bridge-billing", "usage-api-token")
    body = json.dumps(records).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    answer = deliver(staging.url(USAGE_SERVICE) + "/", body, lambda: headers, 202)
    assert answer.status_code == 202, answer.text


def usage_records(prefix: str, count: int) -> list[dict[str, Any]]:
    """``count`` distinct usage records."""
    return [
        {"meter": "tokens", "customer_id": f"cus_{i % 3}", "value": i, "id": f"{prefix}-{i:04d}"}
        for i in range(count)
    ]


def events_round(tag: str) -> list[tuple[str, dict[str, Any]]]:
    """(service, event): every served type to its own Service and to the catch-all."""
    out = []
    for event_type in registry.EVENT_TYPES:
        event = fixture_event(FIXTURE_OF[event_type.name], fresh_id=True)
        event["id"] = f"evt_{tag}_{event['id'][4:]}"
        out.append((event_type.service_name, event))
        other = fixture_event(FIXTURE_OF[event_type.name], fresh_id=True)
        out.append(("stripe-event", other))
    return out


def openmeter_counts(staging: Staging) -> Counter[str]:
    """Usage id -> deliveries accepted by the OpenMeter stand-in."""
    with urllib.request.urlopen(staging.url("openmeter-control") + "/counts", timeout=5) as r:
        rows = json.load(r)
    assert all(source == DEFAULT_SOURCE for _, source, _ in rows), rows
    return Counter({i: n for i, _, n in rows})


@contextmanager
def in_background(work: Callable[[], None]) -> Iterator[None]:
    """Run ``work`` in a thread for the duration of the block; re-raise what it raised."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    thread.join(120)
    assert not thread.is_alive(), "background deliveries did not finish"
    if failure:
        raise failure[0]


def check(staging: Staging, report: Callable[[str], None] = print) -> None:
    """The staging test proper; AssertionError or TimeoutError naming what went wrong."""
    scalar_up = staging.url("prometheus") + "/api/v1/query"

    def scraped(expr: str) -> float:
        result = httpx.get(scalar_up, params={"query": expr}, timeout=5).json()["data"]["result"]
        return float(result[0]["value"][1]) if result else -1.0

    # rate() needs a sample before the traffic: wait for the first scrapes (the functions
    # push a zero snapshot with their first request, the next push at most every 15 s).
    targets = f'sum(up{{job=~"pushgateway|{FORWARDER_JOB}|{PROJECTOR_JOB}"}})'
    wait_until(lambda: scraped(targets) == 3, 60, "first scrape of every target")
    urllib.request.urlopen(
        urllib.request.Request(staging.url("openmeter-control") + "/fail?count=1&status=503", b""),
        timeout=5,
    ).close()

    before, during = events_round("a"), events_round("b")
    run = secrets.token_hex(3)
    usage_before, usage_during = usage_records(f"u-{run}-a", 30), usage_records(f"u-{run}-b", 30)
    start = time.monotonic()
    for service, event in before:
        assert send_event(staging, service, event) == "published"
    send_usage(staging, usage_before[:15])
    send_usage(staging, usage_before[15:])
    # A redelivery and a forged signature: the duplicate and rejection panels see traffic.
    assert send_event(staging, *before[0]) == "duplicate"
    forged = json.dumps(before[1][1]).encode()
    bad = httpx.post(
        staging.url(before[1][0]) + "/",
        content=forged,
        headers=signed_headers(forged, "whsec_wrong_" + "b" * 24),
        timeout=10,
    )
    assert bad.status_code == 400, bad.text

    report("staging: stopping nats-1 mid-run")
    stopped = Container(f"{staging.stack.prefix}-nats-1")
    stopped.stop(seconds=10)
    with in_background(lambda: send_usage(staging, usage_during)):
        for service, event in during:
            assert send_event(staging, service, event) in ("published", "duplicate")
        report("staging: starting nats-1 again")
        stopped.start()
    report(
        f"staging: {len(before) + len(during)} events delivered in {time.monotonic() - start:.1f} s"
    )

    sent = {event["id"] for _, event in before + during}
    stored = Counter(
        m.headers["Nats-Msg-Id"] for m in asyncio.run(stream_messages(staging.nats_url()))
    )
    assert set(stored) == sent, f"missing {sent - set(stored)}, unexpected {set(stored) - sent}"
    assert max(stored.values()) == 1, [i for i, n in stored.items() if n > 1]
    usage_ids = {r["id"] for r in usage_before + usage_during}
    try:
        wait_until(lambda: set(openmeter_counts(staging)) >= usage_ids, 180, "usage at OpenMeter")
    except TimeoutError:
        missing = sorted(usage_ids - set(openmeter_counts(staging)))
        log = Container(f"{staging.stack.prefix}-forward-openmeter").logs().splitlines()
        tail = "\n".join(line for line in log if " DEBUG " not in line)[-3000:]
        raise AssertionError(
            f"{len(missing)} usage records never reached OpenMeter: {missing[:5]}; "
            f"forwarder:\n{tail}"
        ) from None
    counts = openmeter_counts(staging)
    assert set(counts) == usage_ids and max(counts.values()) == 1, counts
    report(f"staging: {len(stored)} events once in STRIPE, {len(counts)} usage records once")

    prometheus = Published(staging.url("prometheus"))
    staged = {**VARIABLES, "$environment": ENVIRONMENT}
    # Staging runs neither the entitlements function nor the backup CronJob, and records
    # usage of one meter: those rows are proven with processes in
    # tests/observability/test_billing_dashboard.py.
    not_staged = {panel.title for row in (usage_row(), backup_row()) for panel in row.panels}
    for dashboard, panels in (("stripe-bridge.json", 25), ("billing.json", 15)):
        assert_every_panel_has_data(prometheus, dashboard, panels, 120, staged, not_staged)
    report("staging: every panel of stripe-bridge.json and billing.json (staged rows) has data")


def main(argv: list[str] | None = None) -> int:
    """``scripts/staging up|test|down``."""
    parser = argparse.ArgumentParser(prog="scripts/staging", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("up", "test", "down"))
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".stripe-bridge" / "staging")
    args = parser.parse_args(argv)
    if args.action == "up":
        if (args.dir / STATE_FILE).exists():
            Staging.load(args.dir).down()
        staging = Staging.new(args.dir)
        try:
            staging.up([*WEBHOOK_SERVICES, USAGE_SERVICE])
        except BaseException:
            staging.down()
            raise
        for name, port in sorted(staging.ports.items()):
            print(f"{name:40} 127.0.0.1:{port}")
    elif args.action == "test":
        check(Staging.load(args.dir))
    else:
        Staging.load(args.dir).down()
        (args.dir / STATE_FILE).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
