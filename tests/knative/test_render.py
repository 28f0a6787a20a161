"""The knative/ manifests: equal to a fresh render, derived from the registry, and valid.

Knative Services are validated against Knative Serving's v1 Service CRD schema (kept in
this folder, see its header); the other kinds against Kubernetes' own schemas through
kubernetes-validate. No cluster runs here: these are the checks an API server would make
on the documents' shape, not on their effect.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from stripe_bridge import registry
from stripe_bridge.billing.catalog import BILLING_FUNCTIONS, Need
from stripe_bridge.billing.checkout import StripeSettings
from stripe_bridge.billing.endpoints import UsageSettings
from stripe_bridge.billing.entitlements import EntitlementSettings
from stripe_bridge.billing.openmeter import ForwarderSettings
from stripe_bridge.commands import knative as render_command
from stripe_bridge.config import Settings
from stripe_bridge.deploy import k8s, knative, profiles, workloads
from stripe_bridge_testing.repo import REPO_ROOT

KNATIVE_DIR = REPO_ROOT / "knative"
SCHEMA_FILE = Path(__file__).parent / "knative-serving-v1-service.schema.yaml"
K8S_VERSION = "1.37.0"
#: Kubernetes' label value syntax (63 characters at most).
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENVS = list(profiles.PROFILES)


def strict(schema: Any) -> Any:
    """``schema`` rejecting unknown fields wherever the CRD does not preserve them."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def service_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(strict(yaml.safe_load(SCHEMA_FILE.read_text())))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_services(env: str) -> list[dict[str, Any]]:
    return [
        documents(KNATIVE_DIR / env / f"{fn.service_name}.yaml")[0]
        for fn in knative.function_specs()
    ]


def test_committed_files_equal_a_fresh_render() -> None:
    rendered = render_command.rendered()
    on_disk = {
        str(path.relative_to(KNATIVE_DIR)): path.read_text() for path in KNATIVE_DIR.rglob("*.yaml")
    }
    stale = sorted(name for name in rendered if on_disk.get(name) != rendered[name])
    extra = sorted(set(on_disk) - set(rendered))
    assert not stale, f"run `stripe-bridge knative render`; out of date: {stale}"
    assert not extra, f"files no render produces: {extra}"


def test_one_service_per_registered_type_plus_catch_all() -> None:
    names = [fn.service_name for fn in knative.function_specs()]
    assert names == [t.service_name for t in registry.EVENT_TYPES] + ["stripe-event"]
    for env in ENVS:
        on_disk = {p.stem for p in (KNATIVE_DIR / env).glob("stripe-*.yaml")}
        assert on_disk == set(names)


@pytest.mark.parametrize("env", ENVS)
def test_services_validate_against_the_knative_schema(
    env: str, service_validator: jsonschema.Draft7Validator
) -> None:
    for manifest in all_services(env):
        errors = [f"{list(e.path)}: {e.message}" for e in service_validator.iter_errors(manifest)]
        assert not errors, (manifest["metadata"]["name"], errors)


def test_the_schema_rejects_what_knative_would(
    service_validator: jsonschema.Draft7Validator,
) -> None:
    good = all_services("staging")[0]
    typo = copy.deepcopy(good)
    typo["spec"]["template"]["spec"]["containerConcurency"] = 10
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["template"]["spec"]["timeoutSeconds"] = "25"
    no_containers = copy.deepcopy(good)
    del no_containers["spec"]["template"]["spec"]["containers"]
    bad_quantity = copy.deepcopy(good)
    bad_quantity["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = (
        "1 core"
    )
    for broken in (typo, wrong_type, no_containers, bad_quantity):
        assert not service_validator.is_valid(broken)


def test_creds_auth_variant_validates(service_validator: jsonschema.Draft7Validator) -> None:
    profile = profiles.PROFILES["staging"]
    creds = profiles.Profile(**{**profile.__dict__, "nats_auth": "creds"})
    manifest = knative.service(creds, knative.function_specs()[0])
    service_validator.validate(manifest)
    spec = manifest["spec"]["template"]["spec"]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["NATS_CREDS"]["value"] == f"{k8s.NATS_CREDS_DIR}/{k8s.NATS_CREDS_KEY}"
    assert "NATS_PASSWORD" not in env
    assert spec["containers"][0]["volumeMounts"][0]["readOnly"] is True
    assert spec["volumes"][0]["secret"]["secretName"] == k8s.NATS_CREDS_SECRET


@pytest.mark.parametrize("env", ENVS)
def test_services_carry_scaling_probes_secrets_and_labels(env: str) -> None:
    profile = profiles.PROFILES[env]
    for fn, manifest in zip(knative.function_specs(), all_services(env), strict=True):
        template = manifest["spec"]["template"]
        notes = template["metadata"]["annotations"]
        assert notes["autoscaling.knative.dev/min-scale"] == "0"
        assert notes["autoscaling.knative.dev/max-scale"] == str(profile.max_scale)
        assert (
            int(notes["autoscaling.knative.dev/target"]) <= template["spec"]["containerConcurrency"]
        )
        assert notes[k8s.ANNOTATION_EVENT_TYPE] == fn.event_type
        spec = template["spec"]
        assert spec["responseStartTimeoutSeconds"] < 30, "must answer before Stripe gives up"
        (container,) = template["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["securityContext"]["runAsNonRoot"] is True
        env_vars = {e["name"]: e for e in container["env"]}
        assert "PORT" not in env_vars, "Knative sets PORT itself"
        assert env_vars["FUNCTION_SOURCE"]["value"] == f"/app/functions/{fn.function_name}/main.py"
        assert env_vars["FUNCTION_TARGET"]["value"] == "handle"
        assert env_vars["FUNCTION_NAME"]["value"] == fn.function_name
        assert env_vars["IDEMPOTENCY_BACKEND"]["value"] == "redis"
        # The profiles share a Pushgateway: the environment label keeps them apart.
        assert env_vars["ENVIRONMENT"]["value"] == env
        webhook = env_vars["STRIPE_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]
        assert webhook == {"name": k8s.WEBHOOK_SECRET, "key": fn.function_name}
        assert env_vars["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == k8s.REDIS_SECRET
        password = env_vars["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert password == {"name": k8s.NATS_AUTH_SECRET, "key": k8s.NATS_PASSWORD_KEY}
        for labels in (manifest["metadata"]["labels"], template["metadata"]["labels"]):
            assert labels["app.kubernetes.io/name"] == "stripe-bridge"
            assert labels["app.kubernetes.io/component"] == "webhook-function"
            assert labels[k8s.LABEL_FUNCTION] == fn.function_name
            assert labels[k8s.LABEL_NATS_CLIENT] == "true"
            assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values()), labels
        assert len(fn.service_name) <= 63


def test_environments_differ_where_they_should() -> None:
    staging, production = profiles.PROFILES["staging"], profiles.PROFILES["production"]
    assert staging.namespace != production.namespace
    assert staging.max_scale < production.max_scale
    assert staging.min_scale == production.min_scale == 0


SERVE_ENV = {"FUNCTION_SOURCE", "FUNCTION_TARGET"}


def test_function_env_matches_settings_the_bridge_reads() -> None:
    """Every variable a Service sets is one the bridge's Settings (or serve) understands."""
    known = Settings.variables() | SERVE_ENV
    for manifest in all_services("production"):
        names = {e["name"] for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert names <= known, names - known


def billing_services(env: str) -> list[dict[str, Any]]:
    return [documents(KNATIVE_DIR / env / f"{fn.service_name}.yaml")[0] for fn in BILLING_FUNCTIONS]


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest["spec"]
    if manifest["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    result: dict[str, Any] = spec["template"]["spec"]
    return result


def container_env(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = pod_spec(manifest)["containers"]
    return {e["name"]: e for e in container["env"]}


def secret_ref(var: dict[str, Any]) -> tuple[str, str]:
    ref = var["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


@pytest.mark.parametrize("env", ENVS)
def test_one_service_per_billing_function_with_what_it_needs(
    env: str, service_validator: jsonschema.Draft7Validator
) -> None:
    known = (
        Settings.variables() | UsageSettings.variables() | StripeSettings.variables() | SERVE_ENV
    )
    known |= EntitlementSettings.variables()
    for fn, manifest in zip(BILLING_FUNCTIONS, billing_services(env), strict=True):
        service_validator.validate(manifest)
        assert manifest["metadata"]["name"] == fn.service_name
        template = manifest["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "billing-function"
        assert labels[k8s.LABEL_FUNCTION] == fn.name
        # Pushed like the webhook functions' (issue #15): no scrape annotations to rely on.
        assert not any(k.startswith("prometheus.io/") for k in template["metadata"]["annotations"])
        assert container_env(manifest)["ENVIRONMENT"]["value"] == env
        assert "PUSHGATEWAY_URL" in container_env(manifest)
        (container,) = template["spec"]["containers"]
        # Ready while alive: usage answers its own 503 + Retry-After without NATS
        # (test_probes_live.py), where an unready pod would hold callers in the activator.
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        variables = container_env(manifest)
        assert set(variables) <= known, set(variables) - known
        assert variables["FUNCTION_SOURCE"]["value"] == f"/app/functions/{fn.name}/main.py"
        # Exactly the credentials it needs, and the NetworkPolicy label only with NATS.
        nats = Need.NATS in fn.needs or Need.KV in fn.needs
        assert ("NATS_PASSWORD" in variables) is nats
        assert (labels.get(k8s.LABEL_NATS_CLIENT) == "true") is nats
        assert ("STRIPE_API_KEY" in variables) is (Need.STRIPE in fn.needs)
        assert ("USAGE_API_TOKEN" in variables) is (Need.USAGE_TOKEN in fn.needs)
        # Checkout/Portal hand out sessions for any customer id, entitlements reserves any
        # customer's usage: no public URL for them.
        visibility = manifest["metadata"]["labels"].get(k8s.LABEL_VISIBILITY)
        internal = Need.STRIPE in fn.needs or Need.CLUSTER_LOCAL in fn.needs
        assert (visibility == "cluster-local") is internal
        assert "STRIPE_WEBHOOK_SECRET" not in variables
        if Need.NATS in fn.needs:
            # Its own user (usage.> only), not the webhook functions' publisher (stripe.>).
            assert variables["NATS_USER"]["value"] == "usage"
            assert secret_ref(variables["NATS_PASSWORD"]) == ("nats-auth", "usage-password")
        if Need.KV in fn.needs:
            # The billing KV buckets are the billing user's.
            assert variables["NATS_USER"]["value"] == k8s.NATS_BILLING_USER
            assert secret_ref(variables["NATS_PASSWORD"]) == ("nats-auth", "billing-password")
        if Need.USAGE_TOKEN in fn.needs:
            assert secret_ref(variables["USAGE_API_TOKEN"]) == (
                k8s.BILLING_SECRET,
                k8s.USAGE_TOKEN_KEY,
            )
        if Need.STRIPE in fn.needs:
            assert secret_ref(variables["STRIPE_API_KEY"]) == (
                k8s.BILLING_SECRET,
                k8s.STRIPE_KEY_KEY,
            )
            # Required by StripeSettings: the function would exit 2 without it.
            assert variables["CHECKOUT_SUCCESS_URL"]["value"].startswith("https://")


def test_stripe_api_base_only_when_the_profile_sets_one() -> None:
    (checkout,) = [fn for fn in BILLING_FUNCTIONS if fn.name == "billing_checkout"]
    profile = profiles.PROFILES["staging"]
    assert "STRIPE_API_BASE" not in container_env(knative.billing_service(profile, checkout))
    mock = profiles.Profile(**{**profile.__dict__, "stripe_api_base": "http://stripe-mock:12111"})
    variables = container_env(knative.billing_service(mock, checkout))
    assert variables["STRIPE_API_BASE"]["value"] == "http://stripe-mock:12111"


def test_billing_services_follow_billing_functions() -> None:
    """Adding a function to BILLING_FUNCTIONS is all it takes to get a Service."""
    for env in ENVS:
        names = [s["metadata"]["name"] for s in knative.services(profiles.PROFILES[env])]
        assert names[-len(BILLING_FUNCTIONS) :] == [fn.service_name for fn in BILLING_FUNCTIONS]
        assert {f"{n}.yaml" for n in names} <= {p.name for p in (KNATIVE_DIR / env).iterdir()}


def consumer_docs(env: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents(KNATIVE_DIR / env / "consumers.yaml")}


@pytest.mark.parametrize("env", ENVS)
def test_consumers_validate_against_kubernetes_schemas(env: str) -> None:
    docs = consumer_docs(env)
    assert [(d["kind"], n) for n, d in docs.items()] == [
        ("Deployment", "forward-openmeter"),
        ("Deployment", "project-tiers"),
        ("Deployment", "project-lifecycle"),
        ("Deployment", "count-usage"),
        ("CronJob", "pushgateway-gc"),
        ("CronJob", "nats-backup"),
    ]
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == profiles.PROFILES[env].namespace


def test_kubernetes_validate_rejects_a_broken_deployment() -> None:
    deployment = consumer_docs("staging")["forward-openmeter"]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("env", ENVS)
def test_consumer_deployments_run_the_commands_as_nats_billing_user(env: str) -> None:
    from stripe_bridge.cli import build_parser

    profile = profiles.PROFILES[env]
    docs = consumer_docs(env)
    parser = build_parser()
    for name in ("forward-openmeter", "project-tiers", "project-lifecycle", "count-usage"):
        deployment = docs[name]
        spec = deployment["spec"]
        template = spec["template"]
        assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        labels = template["metadata"]["labels"]
        assert labels[k8s.LABEL_NATS_CLIENT] == "true", "nats/'s NetworkPolicy needs it"
        notes = template["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/port"] == str(workloads.METRICS_PORT)
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        (container,) = pod["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["command"] == ["stripe-bridge"]
        # The arguments parse with the real CLI, and the probed port is the metrics port.
        args = parser.parse_args(container["args"])
        assert args.command == name
        assert args.metrics_port == workloads.METRICS_PORT
        assert args.replicas == profile.stream_replicas
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
        assert container["ports"] == [{"name": "metrics", "containerPort": workloads.METRICS_PORT}]
        variables = container_env(deployment)
        assert variables["NATS_USER"]["value"] == k8s.NATS_BILLING_USER
        assert secret_ref(variables["NATS_PASSWORD"]) == ("nats-auth", "billing-password")
        assert set(variables) <= Settings.variables() | ForwarderSettings.variables()
    forwarder = container_env(docs["forward-openmeter"])
    assert secret_ref(forwarder["OPENMETER_URL"]) == (k8s.OPENMETER_SECRET, "url")
    assert secret_ref(forwarder["OPENMETER_API_KEY"]) == (k8s.OPENMETER_SECRET, "api-key")
    assert docs["forward-openmeter"]["spec"]["replicas"] == profile.forwarder_replicas
    assert docs["project-tiers"]["spec"]["replicas"] == 1
    assert container_env(docs["project-tiers"])["NATS_STREAM"]["value"] == "STRIPE"


@pytest.mark.parametrize("env", ENVS)
def test_backup_cronjob_exports_everything_daily_to_its_volume(env: str) -> None:
    from stripe_bridge.cli import build_parser
    from stripe_bridge.deploy import backup_manifests as backup

    cronjob = consumer_docs(env)["nats-backup"]
    assert cronjob["spec"]["schedule"] == backup.SCHEDULE
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = pod_spec(cronjob)
    (container,) = pod["containers"]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.all, str(args.dir), args.keep) == ("export", True, "/backups", 14)
    assert container["volumeMounts"] == [{"name": "backups", "mountPath": "/backups"}]
    (volume,) = pod["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == backup.CLAIM
    (claim,) = documents(KNATIVE_DIR / env / "backup-volume.yaml")
    assert claim["metadata"]["name"] == backup.CLAIM
    variables = container_env(cronjob)
    # The read-only user nats.conf grants exactly what `export --all` needs (test_auth).
    assert variables["NATS_USER"]["value"] == k8s.NATS_BACKUP_USER == "backup"
    password = variables["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": k8s.NATS_AUTH_SECRET, "key": "backup-password"}
    assert variables["ENVIRONMENT"]["value"] == env
    assert variables["PUSHGATEWAY_URL"]["value"] == profiles.PROFILES[env].pushgateway_url
    for name in ("BACKUP_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = variables[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == backup.S3_SECRET and ref["optional"] is True
    assert pod["securityContext"]["fsGroup"] == 10001


def test_production_runs_two_forwarders_and_r3_billing_streams() -> None:
    production = profiles.PROFILES["production"]
    assert production.forwarder_replicas == 2
    assert production.stream_replicas == 3


@pytest.mark.parametrize("env", ENVS)
def test_pushgateway_gc_cronjob(env: str) -> None:
    from stripe_bridge.cli import build_parser

    cronjob = consumer_docs(env)["pushgateway-gc"]
    assert cronjob["spec"]["schedule"] == "*/15 * * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = pod_spec(cronjob)
    (container,) = pod["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "pushgateway-gc"
    assert args.older_than == 3600
    assert not args.dry_run
    (url,) = container["env"]
    assert url == {"name": "PUSHGATEWAY_URL", "value": profiles.PROFILES[env].pushgateway_url}
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize(
    "path",
    [
        "staging/rbac.yaml",
        "production/rbac.yaml",
        "secrets.template.yaml",
        "staging/backup-volume.yaml",
        "production/backup-volume.yaml",
    ],
)
def test_other_kinds_validate_against_kubernetes_schemas(path: str) -> None:
    docs = documents(KNATIVE_DIR / path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_validate_can_fail() -> None:
    (role, _binding) = documents(KNATIVE_DIR / "staging" / "rbac.yaml")
    role["rules"][0]["verb"] = ["get"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(role, K8S_VERSION, strict=True)


def test_rbac_allows_what_apply_does() -> None:
    (role, binding) = documents(KNATIVE_DIR / "staging" / "rbac.yaml")
    (services_rule,) = [r for r in role["rules"] if knative.SERVING_GROUP in r["apiGroups"]]
    assert services_rule["resources"] == ["services"]
    assert {"get", "list", "watch", "create", "patch", "update"} <= set(services_rule["verbs"])
    # apply also reads and server-side-applies the consumers' Deployments and CronJob.
    for group, plural in (("apps", "deployments"), ("batch", "cronjobs")):
        (rule,) = [r for r in role["rules"] if group in r["apiGroups"]]
        assert rule["resources"] == [plural]
        assert {"get", "create", "patch"} <= set(rule["verbs"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert role["metadata"]["namespace"] == profiles.PROFILES["staging"].namespace


def test_secret_template_has_every_key_the_manifests_read() -> None:
    template = {
        doc["metadata"]["name"]: set(doc["stringData"])
        for doc in documents(KNATIVE_DIR / "secrets.template.yaml")
    }
    for env in ENVS:
        manifests = all_services(env) + billing_services(env) + list(consumer_docs(env).values())
        for manifest in manifests:
            for var in container_env(manifest).values():
                if "valueFrom" in var:
                    name, key = secret_ref(var)
                    if name != k8s.NATS_AUTH_SECRET:  # nats/'s, nats/secret.example.yaml
                        assert key in template[name], (manifest["metadata"]["name"], name, key)


def test_secret_template_has_one_placeholder_key_per_function() -> None:
    (webhook, _redis, *_billing) = documents(KNATIVE_DIR / "secrets.template.yaml")
    keys = webhook["stringData"]
    assert sorted(keys) == sorted(fn.function_name for fn in knative.function_specs())
    assert all(value.startswith("whsec_REPLACE") for value in keys.values())
