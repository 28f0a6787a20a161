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
from stripe_bridge import knative, registry

from ..helpers import REPO_ROOT

KNATIVE_DIR = REPO_ROOT / "knative"
SCHEMA_FILE = Path(__file__).parent / "knative-serving-v1-service.schema.yaml"
K8S_VERSION = "1.37.0"
#: Kubernetes' label value syntax (63 characters at most).
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENVS = list(knative.PROFILES)


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
    rendered = knative.render()
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
    profile = knative.PROFILES["staging"]
    creds = knative.Profile(**{**profile.__dict__, "nats_auth": "creds"})
    manifest = knative.service(creds, knative.function_specs()[0])
    service_validator.validate(manifest)
    spec = manifest["spec"]["template"]["spec"]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["NATS_CREDS"]["value"] == f"{knative.NATS_CREDS_DIR}/{knative.NATS_CREDS_KEY}"
    assert "NATS_PASSWORD" not in env
    assert spec["containers"][0]["volumeMounts"][0]["readOnly"] is True
    assert spec["volumes"][0]["secret"]["secretName"] == knative.NATS_CREDS_SECRET


@pytest.mark.parametrize("env", ENVS)
def test_services_carry_scaling_probes_secrets_and_labels(env: str) -> None:
    profile = knative.PROFILES[env]
    for fn, manifest in zip(knative.function_specs(), all_services(env), strict=True):
        template = manifest["spec"]["template"]
        notes = template["metadata"]["annotations"]
        assert notes["autoscaling.knative.dev/min-scale"] == "0"
        assert notes["autoscaling.knative.dev/max-scale"] == str(profile.max_scale)
        assert (
            int(notes["autoscaling.knative.dev/target"]) <= template["spec"]["containerConcurrency"]
        )
        assert notes[knative.ANNOTATION_EVENT_TYPE] == fn.event_type
        assert template["spec"]["timeoutSeconds"] < 30, "must answer before Stripe gives up"
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
        webhook = env_vars["STRIPE_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]
        assert webhook == {"name": knative.WEBHOOK_SECRET, "key": fn.function_name}
        assert env_vars["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == knative.REDIS_SECRET
        password = env_vars["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert password == {"name": knative.NATS_AUTH_SECRET, "key": knative.NATS_PASSWORD_KEY}
        for labels in (manifest["metadata"]["labels"], template["metadata"]["labels"]):
            assert labels["app.kubernetes.io/name"] == "stripe-bridge"
            assert labels["app.kubernetes.io/component"] == "webhook-function"
            assert labels[knative.LABEL_FUNCTION] == fn.function_name
            assert labels[knative.LABEL_NATS_CLIENT] == "true"
            assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values()), labels
        assert len(fn.service_name) <= 63


def test_environments_differ_where_they_should() -> None:
    staging, production = knative.PROFILES["staging"], knative.PROFILES["production"]
    assert staging.namespace != production.namespace
    assert staging.max_scale < production.max_scale
    assert staging.min_scale == production.min_scale == 0


def test_function_env_matches_settings_the_bridge_reads() -> None:
    """Every variable a Service sets is one the bridge's Settings (or serve) understands."""
    from stripe_bridge.config import Settings

    known = {name.upper() for name in Settings.model_fields} | {
        "FUNCTION_SOURCE",
        "FUNCTION_TARGET",
    }
    for manifest in all_services("production"):
        names = {e["name"] for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert names <= known, names - known


@pytest.mark.parametrize(
    "path", ["staging/rbac.yaml", "production/rbac.yaml", "secrets.template.yaml"]
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
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert role["metadata"]["namespace"] == knative.PROFILES["staging"].namespace


def test_secret_template_has_one_placeholder_key_per_function() -> None:
    (webhook, _redis) = documents(KNATIVE_DIR / "secrets.template.yaml")
    keys = webhook["stringData"]
    assert sorted(keys) == sorted(fn.function_name for fn in knative.function_specs())
    assert all(value.startswith("whsec_REPLACE") for value in keys.values())
