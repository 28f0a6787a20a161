"""Issue #15's metrics defects, against a real Pushgateway.

Staging and production share one Pushgateway: each environment's ``pushgateway-gc`` must
delete only its own groups; a restarted container (same pod name, PID 1 again) must push to
a new group; the billing functions push like the webhook functions; and the scrape job in
docs/observability.md must scrape the Pushgateway the functions push to.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

import pytest
from stripe_bridge.billing.catalog import BILLING_FUNCTIONS
from stripe_bridge.billing.endpoints import make_usage_function
from stripe_bridge.cli import main
from stripe_bridge.config import Settings
from stripe_bridge.deploy import k8s, knative, profiles, workloads
from stripe_bridge.push import list_groups
from stripe_bridge_testing.processes import PushgatewayServer
from stripe_bridge_testing.repo import REPO_ROOT

from .test_push import make_pusher


async def test_gc_of_one_environment_leaves_the_others_groups(
    pushgateway: PushgatewayServer, capsys: pytest.CaptureFixture[str]
) -> None:
    for environment in ("staging", "production"):
        _, pusher = make_pusher(pushgateway.url, f"pod-{environment}", 60, environment)
        await pusher.final_push()
    gc = ["pushgateway-gc", "--url", pushgateway.url, "--older-than", "0s"]
    assert main([*gc, "--environment", "staging"]) == 0
    assert "environment=staging" in capsys.readouterr().out
    left = [g.labels.get("environment") for g in list_groups(pushgateway.url)]
    assert left == ["production"]


def test_the_cronjob_passes_its_environment() -> None:
    for env, profile in profiles.PROFILES.items():
        cronjob = workloads.pushgateway_gc_cronjob(profile)
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        assert args[args.index("--environment") + 1] == env


def test_instance_differs_per_process_start_with_the_same_pod_and_pid() -> None:
    settings = Settings()
    first, second = settings.instance(), settings.instance()
    prefix = f"{os.environ.get('HOSTNAME', 'local')}-{os.getpid()}-"
    assert first.startswith(prefix) and second.startswith(prefix)
    assert first != second
    assert Settings(instance_id="fixed").instance() == "fixed"


async def test_billing_functions_push_their_metrics(pushgateway: PushgatewayServer) -> None:
    settings = Settings(pushgateway_url=pushgateway.url, environment="staging")
    endpoint = make_usage_function(settings)
    await endpoint.runtime.close()
    (group,) = [g.labels for g in list_groups(pushgateway.url)]
    assert group["function"] == "billing_usage" and group["environment"] == "staging"
    for profile in profiles.PROFILES.values():
        for fn in BILLING_FUNCTIONS:
            service = knative.billing_service(profile, fn)
            template = service["spec"]["template"]
            env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
            assert env["PUSHGATEWAY_URL"] == profile.pushgateway_url
            assert env["ENVIRONMENT"] == profile.name
            assert not any(
                k.startswith("prometheus.io/") for k in template["metadata"]["annotations"]
            )


def test_docs_scrape_the_pushgateway_the_functions_push_to() -> None:
    text = (REPO_ROOT / "docs" / "observability.md").read_text()
    (job,) = re.findall(r"job_name: pushgateway\n.*?targets: \[\"([^\"]+)\"\]", text, re.S)
    pushed_to = {urlparse(p.pushgateway_url).netloc for p in profiles.PROFILES.values()}
    assert pushed_to == {job}


def test_knative_readme_names_the_usage_functions_nats_user() -> None:
    text = (REPO_ROOT / "knative" / "README.md").read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| `billing_usage`")]
    assert f"`NATS_USER={k8s.NATS_USAGE_USER}`" in row
    assert f"`{k8s.NATS_USAGE_PASSWORD_KEY}`" in row
