"""Every manifest file under ``knative/``, per environment profile.

``stripe-bridge knative render`` writes them; a test keeps the committed files equal to a
fresh render.
"""

from __future__ import annotations

from .access import rbac, secrets_template
from .backup_manifests import backup_volume
from .k8s import to_yaml
from .knative import services
from .profiles import PROFILES
from .workloads import consumers

_TEMPLATE_WARNING = (
    "# PLACEHOLDERS ONLY: never apply this file (it would overwrite real secrets). Create\n"
    "# the Secrets with real values as docs/deploy.md shows; this is their shape.\n"
)


def render(envs: list[str] | None = None) -> dict[str, str]:
    """Every manifest file by path relative to ``knative/``, for ``envs`` (default: all)."""
    files = {"secrets.template.yaml": _TEMPLATE_WARNING + to_yaml(*secrets_template())}
    for env in envs or list(PROFILES):
        profile = PROFILES[env]
        for manifest in services(profile):
            files[f"{env}/{manifest['metadata']['name']}.yaml"] = to_yaml(manifest)
        files[f"{env}/consumers.yaml"] = to_yaml(*consumers(profile))
        files[f"{env}/rbac.yaml"] = to_yaml(*rbac(profile))
        files[f"{env}/backup-volume.yaml"] = to_yaml(backup_volume(profile))
    return files
