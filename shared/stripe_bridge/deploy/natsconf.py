"""The one ``nats.conf``: rendered from ``templates/nats.conf.tmpl`` for Kubernetes and tests.

``kubernetes_params`` describes the StatefulSet in ``nats/base``; the loopback cluster in
``stripe_bridge_testing.natscluster`` renders the same template with its own ports and folders, so
what the tests prove about accounts, permissions and clustering holds for the ConfigMap.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

import yaml
from stripe_bridge_entitlements import permissions as entitlements_client

from ..inbox import inbox_prefix

#: Applications embedding the in-process entitlements client log in as this user:
#: read-mostly (stripe_bridge_entitlements.permissions).
ENTITLEMENTS_CLIENT_USER = "entitlements-client"

#: Environment variables nats.conf reads the users' passwords from.
PASSWORD_ENV = {
    "system": "NATS_SYSTEM_PASSWORD",
    "publisher": "NATS_PUBLISHER_PASSWORD",
    "usage": "NATS_USAGE_PASSWORD",
    "consumer": "NATS_CONSUMER_PASSWORD",
    "billing": "NATS_BILLING_PASSWORD",
    "backup": "NATS_BACKUP_PASSWORD",
    ENTITLEMENTS_CLIENT_USER: "NATS_ENTITLEMENTS_CLIENT_PASSWORD",
    "admin": "NATS_ADMIN_PASSWORD",
}
#: Subjects the publisher user (the webhook functions) may publish to: Stripe events.
PUBLISH_SUBJECTS = ("stripe.>",)

#: The pods' environment variable holding max_file_store (each overlay sets it).
MAX_FILE_STORE_ENV = "NATS_MAX_FILE_STORE"


@dataclass(frozen=True)
class Sizing:
    """One environment's NATS pods and storage chain, largest first (docs/deploy.md, Sizing).

    The volume; ``max_file_store`` below it (filesystem overhead, and a full disk would
    disable JetStream); each stream's ``max_bytes`` below that (with discard=new a full
    stream refuses writes, so the bridge answers 503 and Stripe retries, instead of
    JetStream failing) but above the storage alert (alert_model.STORAGE_ALERT_RATIO of
    max_file_store), so that one alert warns before any stream, or the store, is full.
    """

    volume: str
    max_file_store: str
    stripe_max_bytes: str
    usage_max_bytes: str
    #: The nats container's CPU and memory (requests = limits: Guaranteed) and Go's soft
    #: memory limit at ~85% of the memory (the chart README's advice, ~80-90%).
    cpu: str
    memory: str
    gomemlimit: str


SIZING = {
    "staging": Sizing(
        volume="5Gi",
        max_file_store="4500M",
        stripe_max_bytes="4000M",
        usage_max_bytes="4000M",
        cpu="500m",
        memory="512Mi",
        gomemlimit="435MiB",
    ),
    # 30 days at 10 Stripe events/s with 10 usage records each (docs/deploy.md, Sizing).
    "production": Sizing(
        volume="300Gi",
        max_file_store="285G",
        stripe_max_bytes="250G",
        usage_max_bytes="250G",
        cpu="2",
        memory="8Gi",
        gomemlimit="6960MiB",
    ),
}

_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}


def size_bytes(text: str) -> int:
    """Bytes in a nats.conf size (``4500M``, ``45G``: powers of 1000, as nats-server reads
    them) or a Kubernetes quantity (``5Gi``: powers of 1024)."""
    number = text.rstrip("KMGTi")
    unit = text[len(number) :]
    binary = unit.endswith("i")
    power = _POWERS.get(unit.removesuffix("i"))
    if power is None or not number.isdigit() or unit == "i":
        raise ValueError(f"not a size: {text!r}")
    base: int = 1024 if binary else 1000
    scale: int = base**power
    return int(number) * scale


CLIENT_PORT = 4222
CLUSTER_PORT = 6222
MONITOR_PORT = 8222
#: Names in nats/base: StatefulSet, headless Service, ConfigMap.
STATEFULSET = "nats"
HEADLESS_SERVICE = "nats-headless"
CONFIGMAP = "nats-config"


def new_password() -> str:
    """A random password nats.conf can read from the environment.

    nats-server parses an environment variable's value as a config value: one that starts
    with '-', or looks like a number, a date or a size (``1-R...``, ``1.5x``, ``1K``), stops
    the server. A letter followed by hex digits is always read as a plain string.
    """
    return "p" + secrets.token_hex(24)


class _Template(string.Template):
    # '$' belongs to nats.conf (environment variables) and '{' to its blocks.
    delimiter = "@"


@dataclass(frozen=True)
class NatsConfParams:
    """What differs between one rendering of nats.conf and another."""

    server_name: str
    host: str
    client_port: int
    cluster_port: int
    monitor_port: int
    routes: tuple[str, ...]
    store_dir: str
    pid_file: str
    cluster_name: str = "stripe-bridge"
    #: JetStream file store limit, e.g. "1G", or ``$NATS_MAX_FILE_STORE`` (the pods' env,
    #: set per overlay to match its volume; see ``SIZING``).
    max_file_store: str = "1G"
    max_memory_store: str = "64M"
    publish_subjects: tuple[str, ...] = PUBLISH_SUBJECTS
    #: Lame duck: how long a server waits before it starts closing clients (over 30s).
    lame_duck_grace_period: str = "10s"


def template_text() -> str:
    """The template as shipped in the package."""
    return resources.files("stripe_bridge.deploy").joinpath("templates/nats.conf.tmpl").read_text()


def render_nats_conf(params: NatsConfParams) -> str:
    """nats.conf for ``params``."""
    return _Template(template_text()).substitute(
        server_name=params.server_name,
        host=params.host,
        client_port=params.client_port,
        cluster_port=params.cluster_port,
        monitor_port=params.monitor_port,
        pid_file=params.pid_file,
        store_dir=params.store_dir,
        max_file_store=params.max_file_store,
        max_memory_store=params.max_memory_store,
        cluster_name=params.cluster_name,
        routes="\n".join(f"    {route}" for route in params.routes),
        publish_subjects=", ".join(f'"{subject}"' for subject in params.publish_subjects),
        lame_duck_grace_period=params.lame_duck_grace_period,
        entitlements_client_publish=_subjects(
            # Usage of any meter (one token: not usage.lifecycle.<type>, the lifecycle
            # projector's), as the client's own permissions module lists them.
            entitlements_client.publish_allow(["*"])
        ),
        entitlements_client_subscribe=_subjects(
            entitlements_client.subscribe_allow(inbox_prefix(ENTITLEMENTS_CLIENT_USER))
        ),
        # Each user may subscribe only to its own reply subjects (see inbox.inbox_prefix);
        # placeholders are identifiers: entitlements-client's is @inbox_entitlements_client.
        **{f"inbox_{user.replace('-', '_')}": inbox_prefix(user) for user in PASSWORD_ENV},
    )


def _subjects(subjects: list[str]) -> str:
    """A nats.conf list of quoted subjects, one per line, indented as the template's."""
    return ",\n              ".join(f'"{subject}"' for subject in subjects)


def kubernetes_params(replicas: int = 3) -> NatsConfParams:
    """The parameters of the StatefulSet in nats/base (server name from the pod's env)."""
    routes = tuple(
        f"nats://{STATEFULSET}-{i}.{HEADLESS_SERVICE}:{CLUSTER_PORT}" for i in range(replicas)
    )
    return NatsConfParams(
        server_name="$SERVER_NAME",
        host="0.0.0.0",
        client_port=CLIENT_PORT,
        cluster_port=CLUSTER_PORT,
        monitor_port=MONITOR_PORT,
        routes=routes,
        store_dir="/data",
        pid_file="/var/run/nats/nats.pid",
        max_file_store=f"${MAX_FILE_STORE_ENV}",
    )


def config_checksum(text: str) -> str:
    """sha256 of a rendered nats.conf: the pod annotation that rolls pods on a change."""
    return hashlib.sha256(text.encode()).hexdigest()


_GENERATED = (
    "# GENERATED by `stripe-bridge nats generate` from templates/nats.conf.tmpl; do not edit.\n"
)


def configmap_yaml(replicas: int = 3) -> str:
    """nats/base/nats-config.yaml: the ConfigMap holding the Kubernetes rendering."""
    text = render_nats_conf(kubernetes_params(replicas))
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "labels": {"app.kubernetes.io/name": "nats"}},
        "data": {"nats.conf": text},
    }
    return _GENERATED + yaml.dump(configmap, Dumper=_LiteralDumper, sort_keys=False, width=1000)


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line strings as ``|`` blocks, so the ConfigMap reads like nats.conf."""


def _literal(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _literal)


def checksum_patch_yaml(replicas: int = 3) -> str:
    """nats/base/config-checksum.yaml: a patch annotating the pod template with the checksum.

    Kubernetes does not restart pods when a ConfigMap changes; a changed annotation on the
    pod template does, one pod at a time.
    """
    checksum = config_checksum(render_nats_conf(kubernetes_params(replicas)))
    patch = [
        {
            "op": "add",
            "path": "/spec/template/metadata/annotations/checksum~1config",
            "value": checksum,
        }
    ]
    return _GENERATED + yaml.safe_dump(patch, sort_keys=False)


def sizing_patch_yaml(sizing: Sizing) -> str:
    """nats/overlays/<env>/sizing.yaml: the StatefulSet patch setting ``sizing``.

    nats/base/statefulset.yaml lists GOMEMLIMIT and NATS_MAX_FILE_STORE first (env/0, env/1).
    """
    container = "/spec/template/spec/containers/0"
    quantities = {"cpu": sizing.cpu, "memory": sizing.memory}
    patch = [
        {
            "op": "replace",
            "path": "/spec/volumeClaimTemplates/0/spec/resources/requests/storage",
            "value": sizing.volume,
        },
        {"op": "replace", "path": f"{container}/env/0/value", "value": sizing.gomemlimit},
        {"op": "replace", "path": f"{container}/env/1/value", "value": sizing.max_file_store},
        {
            "op": "replace",
            "path": f"{container}/resources",
            "value": {"requests": quantities, "limits": dict(quantities)},
        },
    ]
    note = _GENERATED.replace("templates/nats.conf.tmpl", "natsconf.SIZING")
    return note + yaml.safe_dump(patch, sort_keys=False)


#: The overlay file each environment's kustomization.yaml patches the StatefulSet with.
SIZING_PATCH = "sizing.yaml"


def generated_files(replicas: int = 3, sizings: Mapping[str, Sizing] = SIZING) -> dict[str, str]:
    """Relative path under nats/ -> content, for every generated manifest.

    ``sizings``: each overlay's (``stripe-bridge nats generate`` passes the profiles').
    """
    files = {
        "base/nats-config.yaml": configmap_yaml(replicas),
        "base/config-checksum.yaml": checksum_patch_yaml(replicas),
    }
    for env, sizing in sizings.items():
        files[f"overlays/{env}/{SIZING_PATCH}"] = sizing_patch_yaml(sizing)
    return files
