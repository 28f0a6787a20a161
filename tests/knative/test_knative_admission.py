"""Every rendered Knative Service passes Knative Serving's own admission rules.

The rules are ported from knative/serving's Go sources in ``knative_rules`` (file, function
and commit in each docstring). Each rule is also fed a bad Service, so that a rule which
stopped checking anything would fail here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from stripe_bridge import names, registry
from stripe_bridge.deploy import knative, profiles
from stripe_bridge_testing import knative_rules as rules
from stripe_bridge_testing.repo import REPO_ROOT

RENDERED = sorted((REPO_ROOT / "knative").glob("*/*.yaml"))


def rendered_services() -> list[Path]:
    return [
        path
        for path in RENDERED
        if any(d and d.get("kind") == "Service" for d in yaml.safe_load_all(path.read_text()))
        and "serving.knative.dev" in path.read_text()
    ]


def load(path: Path) -> dict[str, Any]:
    (service,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return service  # type: ignore[no-any-return]


def test_every_service_of_both_environments_is_checked() -> None:
    per_env = len(knative.services(profiles.PROFILES["staging"]))
    assert per_env == 14  # 10 webhook functions (9 types + catch-all), 4 billing functions
    assert len(rendered_services()) == per_env * len(profiles.PROFILES)


@pytest.mark.parametrize("path", rendered_services(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_knative_admits_the_rendered_service(path: Path) -> None:
    assert rules.admit(load(path)) == []


@pytest.fixture
def good() -> dict[str, Any]:
    return knative.service(profiles.PROFILES["production"], knative.function_specs()[0])


def container(service: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = service["spec"]["template"]["spec"]["containers"][0]
    return found


def pod(service: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = service["spec"]["template"]["spec"]
    return found


def pod_annotations(service: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = service["spec"]["template"]["metadata"]["annotations"]
    return found


def _probe_timeout_without_period(s: dict[str, Any]) -> None:
    container(s)["readinessProbe"]["timeoutSeconds"] = 2  # the pre-#15 render


BAD: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "aggressive probe with timeoutSeconds": (
        _probe_timeout_without_period,
        "timeoutSeconds is disallowed when periodSeconds is zero",
    ),
    "aggressive probe with failureThreshold": (
        lambda s: container(s)["readinessProbe"].update(failureThreshold=3),
        "failureThreshold is disallowed",
    ),
    "periodic probe with timeoutSeconds 0": (
        lambda s: container(s)["readinessProbe"].update(periodSeconds=5, timeoutSeconds=0),
        "readinessProbe.timeoutSeconds: out of bounds",
    ),
    "probe port not the serving port": (
        lambda s: container(s)["livenessProbe"]["httpGet"].update(port="metrics"),
        "Probe port must match container port",
    ),
    "two probe handlers": (
        lambda s: container(s)["readinessProbe"].update(tcpSocket={}),
        "expected exactly one, got both",
    ),
    "no probe handler": (
        lambda s: container(s).update(livenessProbe={"periodSeconds": 5}),
        "expected exactly one, got neither",
    ),
    "reserved env PORT": (
        lambda s: container(s)["env"].append({"name": "PORT", "value": "8080"}),
        "'PORT' is a reserved env variable",
    ),
    "reserved env K_REVISION": (
        lambda s: container(s)["env"].append({"name": "K_REVISION", "value": "x"}),
        "'K_REVISION' is a reserved",
    ),
    "fieldRef behind a feature flag": (
        lambda s: container(s)["env"].append(
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ),
        "valueFrom.fieldRef: must not set",
    ),
    "reserved port 9091": (
        lambda s: container(s)["ports"][0].update(containerPort=9091),
        "9091 is a reserved port",
    ),
    "port name": (
        lambda s: container(s)["ports"][0].update(name="http"),
        "Port name http is not allowed",
    ),
    "two ports": (
        lambda s: container(s)["ports"].append({"containerPort": 9000}),
        "more than one container port",
    ),
    "hostPort": (
        lambda s: container(s)["ports"][0].update(hostPort=80),
        "ports.hostPort: must not set",
    ),
    "reserved container name": (
        lambda s: container(s).update(name="queue-proxy"),
        "reserved container name",
    ),
    "lifecycle": (
        lambda s: container(s).update(lifecycle={"preStop": {"exec": {"command": ["x"]}}}),
        ".lifecycle: must not set",
    ),
    "capabilities.add": (
        lambda s: container(s)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        "caps.add: must not set",
    ),
    "privileged": (
        lambda s: container(s)["securityContext"].update(privileged=True),
        "privileged: must not set",
    ),
    "pod securityContext behind a feature flag": (
        lambda s: pod(s).update(securityContext={"runAsUser": 1000}),
        "spec.securityContext: must not set",
    ),
    "affinity behind a feature flag": (
        lambda s: pod(s).update(affinity={}),
        "spec.affinity: must not set",
    ),
    "terminationGracePeriodSeconds": (
        lambda s: pod(s).update(terminationGracePeriodSeconds=60),
        "spec.terminationGracePeriodSeconds: must not set",
    ),
    "automountServiceAccountToken true": (
        lambda s: pod(s).update(automountServiceAccountToken=True),
        "automountServiceAccountToken: must not set",
    ),
    "unmounted volume": (
        lambda s: pod(s).update(volumes=[{"name": "v", "secret": {"secretName": "x"}}]),
        "not mounted",
    ),
    "writable secret mount": (
        lambda s: (
            pod(s).update(volumes=[{"name": "v", "secret": {"secretName": "x"}}]),
            container(s).update(volumeMounts=[{"name": "v", "mountPath": "/secret"}]),
        ),
        "should be readOnly",
    ),
    "reserved mount path": (
        lambda s: (
            pod(s).update(volumes=[{"name": "v", "emptyDir": {}}]),
            container(s).update(volumeMounts=[{"name": "v", "mountPath": "/dev/"}]),
        ),
        "'/dev' is a reserved path",
    ),
    "hostPath volume": (
        lambda s: (
            pod(s).update(volumes=[{"name": "v", "hostPath": {"path": "/"}}]),
            container(s).update(volumeMounts=[{"name": "v", "mountPath": "/h", "readOnly": True}]),
        ),
        "volumes[0].hostPath: must not set",
    ),
    "timeoutSeconds over 600": (
        lambda s: pod(s).update(timeoutSeconds=601),
        "timeoutSeconds: 601 out of bounds",
    ),
    "containerConcurrency over 1000": (
        lambda s: pod(s).update(containerConcurrency=1001),
        "containerConcurrency: 1001 out of bounds",
    ),
    "name over 63": (
        lambda s: s["metadata"].update(name="a" * 64),
        "must be no more than 63 characters",
    ),
    "name not DNS-1035": (
        lambda s: s["metadata"].update(name="1-invoice"),
        "not a DNS-1035 label",
    ),
    "autoscaling annotation on the Service": (
        lambda s: s["metadata"]["annotations"].update({rules.AUTOSCALING + "max-scale": "3"}),
        "autoscaling annotations not allowed here",
    ),
    "max-scale below min-scale": (
        lambda s: pod_annotations(s).update({rules.AUTOSCALING + "min-scale": "30"}),
        "max-scale=20 is less than min-scale=30",
    ),
    "negative min-scale": (
        lambda s: pod_annotations(s).update({rules.AUTOSCALING + "min-scale": "-1"}),
        "min-scale: -1 out of bounds",
    ),
    "target below 0.01": (
        lambda s: pod_annotations(s).update({rules.AUTOSCALING + "target": "0"}),
        "should be at least 0.01",
    ),
    "scale-down-delay over an hour": (
        lambda s: pod_annotations(s).update({rules.AUTOSCALING + "scale-down-delay": "2h"}),
        "scale-down-delay: invalid value",
    ),
    "scale-down-delay below a second": (
        lambda s: pod_annotations(s).update({rules.AUTOSCALING + "scale-down-delay": "1500ms"}),
        "at most second precision",
    ),
    "metric cpu with KPA": (
        lambda s: pod_annotations(s).update({rules.AUTOSCALING + "metric": "cpu"}),
        "metric: invalid value 'cpu'",
    ),
    "unknown class": (
        lambda s: pod_annotations(s).update({rules.AUTOSCALING + "class": "x.knative.dev"}),
        "class: invalid value",
    ),
    "window under 6s": (
        lambda s: pod_annotations(s).update({rules.AUTOSCALING + "window": "5s"}),
        "window: invalid value",
    ),
    "initial-scale 0": (
        lambda s: pod_annotations(s).update({rules.AUTOSCALING + "initial-scale": "0"}),
        "initial-scale: invalid value",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_each_rule_refuses_a_bad_service(case: str, good: dict[str, Any]) -> None:
    assert rules.admit(good) == []
    bad = copy.deepcopy(good)
    change, message = BAD[case]
    change(bad)
    errors = rules.admit(bad)
    assert any(message in error for error in errors), errors


def test_defaults_give_a_probe_without_handler_a_tcp_probe_and_no_period(
    good: dict[str, Any],
) -> None:
    del container(good)["readinessProbe"]
    probe = container(rules.set_defaults(good))["readinessProbe"]
    assert probe == {"tcpSocket": {}, "successThreshold": 1}
    container(good)["readinessProbe"] = {"httpGet": {"path": "/"}, "periodSeconds": 5}
    probe = container(rules.set_defaults(good))["readinessProbe"]
    assert probe["failureThreshold"] == 3 and probe["timeoutSeconds"] == 1


def test_go_durations_parse_as_go_does() -> None:
    assert rules.go_duration("10m") == 600 and rules.go_duration("1h30m") == 5400
    assert rules.go_duration("0s") == 0 and rules.go_duration("0") == 0
    assert rules.go_duration("10") is None and rules.go_duration("1d") is None


# ---------------------------------------------------------------- names (issue #15)


def test_service_names_leave_room_for_the_namespace_in_one_host_label() -> None:
    longest_namespace = max(len(p.namespace) for p in profiles.PROFILES.values())
    assert names.MAX_SERVICE_NAME + 1 + longest_namespace <= 63
    for profile in profiles.PROFILES.values():
        for service in knative.services(profile):
            name = service["metadata"]["name"]
            assert len(name) <= names.MAX_SERVICE_NAME, name
            for template in ("{name}.{namespace}", "{name}-{namespace}"):
                for label in rules.domain_labels(name, profile.namespace, template):
                    assert len(label) <= 63, (template, label)


def test_long_names_are_capped_deterministically_and_stay_distinct() -> None:
    long_type = registry.lookup("entitlements.active_entitlement_summary.updated")
    assert long_type is not None
    name = long_type.service_name
    assert name == names.capped("stripe-entitlements-active-entitlement-summary-updated")
    assert len(name) == names.MAX_SERVICE_NAME and name.startswith("stripe-entitlements-")
    assert rules.dns1035_label(name) == []
    assert names.capped("x" * 60) != names.capped("x" * 59 + "y")
    assert names.capped("stripe-invoice-paid") == "stripe-invoice-paid"
    # The pre-#15 name (54 characters) overflows the {name}-{namespace} host label.
    old = "stripe-entitlements-active-entitlement-summary-updated"
    assert (
        max(map(len, rules.domain_labels(old, "stripe-bridge-staging", "{name}-{namespace}"))) > 63
    )


# ------------------------------------------------------- termination budget (issue #15)


@pytest.mark.parametrize("path", rendered_services(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_termination_grace_covers_the_queue_proxy_drain_and_the_app_shutdown(path: Path) -> None:
    service = load(path)
    grace = rules.pod_termination_grace(service)
    # The app gets SIGTERM only once queue-proxy drained; what is left must hold its shutdown.
    after_sigterm = grace - rules.QUEUE_PROXY_DRAIN_SECONDS
    assert after_sigterm >= knative.APP_SHUTDOWN_SECONDS > rules.KUBELET_PRESTOP_EXTENSION_SECONDS
    assert knative.QUEUE_PROXY_DRAIN_SECONDS == rules.QUEUE_PROXY_DRAIN_SECONDS
    # Stripe's ~30 s stays the bound on an answer: the response must start within 25 s.
    spec = pod(service)
    assert spec["responseStartTimeoutSeconds"] == knative.REQUEST_TIMEOUT_SECONDS < 30
    assert spec["responseStartTimeoutSeconds"] <= spec["timeoutSeconds"]
    # The sum holds for the default graceful window, which these two settings widen
    # (http.graceful_shutdown_seconds): a Service setting either needs its own budget.
    env = {e["name"] for e in container(service).get("env", [])}
    assert not env & {"PUBLISH_TIMEOUT", "STOPPING_BODY_GRACE_SECONDS"}


def test_the_old_budget_did_not_add_up() -> None:
    service = knative.service(profiles.PROFILES["staging"], knative.function_specs()[0])
    pod(service)["timeoutSeconds"] = 25  # before #15
    grace = rules.pod_termination_grace(service)
    # The grace ran out inside queue-proxy's drain: the app had only the kubelet's 2 s.
    assert grace < rules.QUEUE_PROXY_DRAIN_SECONDS
    assert rules.KUBELET_PRESTOP_EXTENSION_SECONDS < knative.APP_SHUTDOWN_SECONDS
