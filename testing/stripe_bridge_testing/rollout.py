"""Roll a loopback NATS cluster the way Kubernetes rolls the StatefulSet, probing as a kubelet.

The probes are read from the built ``nats/`` manifests (path, port, initialDelaySeconds,
periodSeconds, timeoutSeconds, success and failure thresholds, with the kubelet's
defaults where a field is unset). ``roll`` then does what the StatefulSet controller does
for a RollingUpdate, highest ordinal first: wait until every pod is Ready (the PDB allows
one disruption at a time), run the preStop hook (lame duck) and stop the pod, start it
again, run the startup probe until it passes and then the readiness probe, and go on to
the next pod. While a node is down the caller's writer keeps writing, so the restarted node
has a backlog (``lag_bytes``) to catch up; each roll records whether the startup probe and
readiness passed only once the node's replica held every message written while it was
down. Used by tests/nats_cluster/test_rolling_restart.py, tests/knative/test_probes_live.py
and bench/bench_rollout.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.error import HTTPError, URLError

from stripe_bridge.ops.natsserver import nats_server_binary

from .natscluster import LocalNatsCluster

#: Kubelet defaults for unset probe fields (k8s.io/api core/v1 Probe).
_PROBE_DEFAULTS = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 3,
}


class ProbeFailed(Exception):
    """A probe reached its failureThreshold: the kubelet would restart the container."""


@dataclass(frozen=True)
class Probe:
    """One HTTP probe of the manifest, with the kubelet's defaults filled in."""

    path: str
    port: str
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def from_manifest(cls, spec: dict[str, Any]) -> Probe:
        """The probe a container spec's ``startupProbe``/``readinessProbe``/... describes."""
        values = {**_PROBE_DEFAULTS, **spec}
        return cls(
            path=spec["httpGet"]["path"],
            port=str(spec["httpGet"]["port"]),
            initial_delay=float(values["initialDelaySeconds"]),
            period=float(values["periodSeconds"]),
            timeout=float(values["timeoutSeconds"]),
            success_threshold=int(values["successThreshold"]),
            failure_threshold=int(values["failureThreshold"]),
        )


def nats_probes(statefulset: dict[str, Any]) -> dict[str, Probe]:
    """``startup``, ``readiness`` and ``liveness`` of the ``nats`` container."""
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "nats"]
    return {
        kind: Probe.from_manifest(container[f"{kind}Probe"])
        for kind in ("startup", "readiness", "liveness")
    }


def http_probe(host: str, port: int, path: str, timeout: float) -> bool:
    """One kubelet HTTP probe: success is a status from 200 to 399 within ``timeout``."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as response:
            status: int = response.status
            return 200 <= status < 400
    except HTTPError as exc:
        return 200 <= exc.code < 400
    except (URLError, OSError):
        return False


@dataclass
class NodeRoll:
    """What happened to one node during the roll (times in seconds since its restart)."""

    node: int
    #: time.monotonic() when its preStop ran and when it was started again.
    stopped_at: float = 0.0
    started_at: float = 0.0
    #: Bytes the stream grew by while the node was down: what it had to catch up.
    lag_bytes: int = 0
    down_seconds: float = 0.0
    startup_passed: float = 0.0
    ready: float = 0.0
    #: Did the node's replica hold every message written while it was down, when ...
    current_at_startup: bool = False
    current_at_ready: bool = False
    #: The node's replica's last sequence and the target, at startup.
    seq_at_startup: int = 0
    target_seq: int = 0

    @property
    def total_seconds(self) -> float:
        """From stopping the node to it counting as Ready."""
        return self.down_seconds + self.ready


@dataclass
class Writes:
    """What the writers saw: writes acknowledged, first attempts refused, writes lost."""

    acked: int = 0
    #: First attempts that failed and were retried (as Stripe retries a 503) until acked.
    retried: int = 0
    #: Writes never acknowledged within the retry budget: lost. The goal is 0.
    failed: int = 0
    #: The slowest write, first attempt to PubAck, retries included.
    slowest: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    #: time.monotonic() of each refused attempt, to line them up with the roll's steps.
    refused_at: list[float] = field(default_factory=list)

    def stalled(self, threshold: float) -> bool:
        """Whether any write took longer than ``threshold`` seconds."""
        return self.slowest > threshold


class Roller:
    """Rolls ``cluster`` node by node with the probes ``probes``, for one ``stream``."""

    def __init__(self, cluster: LocalNatsCluster, probes: dict[str, Probe], stream: str) -> None:
        self.cluster = cluster
        self.probes = probes
        self.stream = stream

    def _probe(self, index: int, probe: Probe) -> bool:
        node = self.cluster.nodes[index]
        # The manifest names the port "monitor": the node's monitoring port here.
        assert probe.port == "monitor", probe.port
        return http_probe(node.host, node.monitor_port, probe.path, probe.timeout)

    def _last_seq(self, index: int) -> int:
        try:
            state = self.cluster.local_stream_state(index, self.stream)
        except (URLError, OSError, ValueError):
            return -1
        return int(state["last_seq"]) if state else -1

    def stream_bytes(self, index: int) -> int:
        """The stream's bytes in node ``index``'s replica."""
        state = self.cluster.local_stream_state(index, self.stream)
        return int(state["bytes"]) if state else 0

    async def run_probe(self, index: int, probe: Probe, since: float, first_at: float) -> float:
        """Probe as the kubelet does until ``successThreshold`` successes in a row.

        The first probe runs at ``first_at`` (monotonic); returns seconds from ``since``.
        """
        await asyncio.sleep(max(0.0, first_at - time.monotonic()))
        successes = failures = 0
        while True:
            tick = time.monotonic()
            if await asyncio.to_thread(self._probe, index, probe):
                successes, failures = successes + 1, 0
                if successes >= probe.success_threshold:
                    return time.monotonic() - since
            else:
                successes, failures = 0, failures + 1
                if failures >= probe.failure_threshold:
                    raise ProbeFailed(f"node {index}: {probe.path} failed {failures} times")
            await asyncio.sleep(max(0.0, tick + probe.period - time.monotonic()))

    async def wait_all_ready(self, timeout: float) -> None:
        """What the PDB (maxUnavailable 1) and the controller wait for: every pod Ready."""
        deadline = time.monotonic() + timeout
        readiness = self.probes["readiness"]
        while True:
            results = [
                await asyncio.to_thread(self._probe, i, readiness)
                for i in range(len(self.cluster.nodes))
            ]
            if all(results):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every node Ready after {timeout}s: {results}")
            await asyncio.sleep(0.2)

    async def roll_node(self, index: int, lag_bytes: int, lag_timeout: float) -> NodeRoll:
        """preStop + stop node ``index``, let the others take ``lag_bytes``, restart, probe."""
        result = NodeRoll(index)
        stopped = result.stopped_at = time.monotonic()
        other = next(i for i in range(len(self.cluster.nodes)) if i != index)
        before = await asyncio.to_thread(self.stream_bytes, other)
        # preStop (nats/base/statefulset.yaml): lame-duck mode, then the kubelet's SIGTERM.
        await asyncio.to_thread(self._lame_duck, index)
        await asyncio.to_thread(self.cluster.stop_node, index)
        deadline = time.monotonic() + lag_timeout
        while await asyncio.to_thread(self.stream_bytes, other) - before < lag_bytes:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        result.lag_bytes = await asyncio.to_thread(self.stream_bytes, other) - before
        result.target_seq = await asyncio.to_thread(self._last_seq, other)
        result.down_seconds = time.monotonic() - stopped
        started = result.started_at = time.monotonic()
        await asyncio.to_thread(self.cluster.start_node, index)
        startup = self.probes["startup"]
        result.startup_passed = await self.run_probe(
            index, startup, started, started + startup.initial_delay
        )
        result.seq_at_startup = await asyncio.to_thread(self._last_seq, index)
        result.current_at_startup = result.seq_at_startup >= result.target_seq
        # The readiness worker's results count only once the startup probe passed.
        readiness = self.probes["readiness"]
        result.ready = await self.run_probe(
            index, readiness, started, max(time.monotonic(), started + readiness.initial_delay)
        )
        result.current_at_ready = await asyncio.to_thread(self._last_seq, index) >= (
            result.target_seq
        )
        return result

    def _lame_duck(self, index: int) -> None:
        pid_file = self.cluster.pid_file(index)
        if pid_file.exists():
            subprocess.run(
                [nats_server_binary(), "--signal", f"ldm={pid_file}"],
                check=False,
                capture_output=True,
                timeout=10,
            )

    async def roll(self, lag_bytes: int, lag_timeout: float = 120.0) -> list[NodeRoll]:
        """Every node, highest ordinal first (as the StatefulSet controller updates)."""
        results = []
        for index in reversed(range(len(self.cluster.nodes))):
            await self.wait_all_ready(timeout=60.0)
            results.append(await self.roll_node(index, lag_bytes, lag_timeout))
        await self.wait_all_ready(timeout=60.0)
        return results


async def write_continuously(
    js: Any,
    subject: str,
    payload: bytes,
    stop: asyncio.Event,
    writes: Writes,
    timeout: float,
    per_second: float,
    retry_budget: float = 30.0,
) -> None:
    """Publish ``payload`` at most ``per_second`` times a second until ``stop`` is set.

    Each write awaits its PubAck; a refused or timed-out attempt is retried with the same
    ``Nats-Msg-Id`` (as Stripe retries a 503, deduplicated the same way) for up to
    ``retry_budget`` s. A steady rate below the cluster's capacity, as Stripe's traffic is:
    an unthrottled writer on a shared machine starves a catching-up replica.
    """
    interval = 1.0 / per_second
    n = 0
    while not stop.is_set():
        n += 1
        started = time.monotonic()
        msg_id = f"{subject}-{n}"
        while True:
            try:
                await js.publish(subject, payload, timeout=timeout, headers={"Nats-Msg-Id": msg_id})
                writes.acked += 1
                break
            except Exception as exc:  # every refusal is part of what we measure
                writes.refused_at.append(time.monotonic())
                name = type(exc).__name__
                writes.errors[name] = writes.errors.get(name, 0) + 1
                if time.monotonic() - started > retry_budget:
                    writes.failed += 1
                    break
                writes.retried += 1
                await asyncio.sleep(0.25)
        writes.slowest = max(writes.slowest, time.monotonic() - started)
        await asyncio.sleep(max(0.0, started + interval - time.monotonic()))
