"""``stripe-bridge nats``: render, generate, build and apply the NATS cluster manifests."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from ..deploy.kustomize import KustomizeError, build, render
from ..deploy.natsconf import generated_files, kubernetes_params, render_nats_conf
from ..deploy.profiles import PROFILES
from ..errors import CommandError
from ..exitcodes import ExitCode
from .common import write_or_check

OVERLAYS = ("staging", "production")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``nats`` with its ``render-config``, ``generate``, ``build`` and ``apply``."""
    parser = subparsers.add_parser("nats", help="the NATS JetStream cluster's manifests")
    actions = parser.add_subparsers(dest="nats_command", required=True, metavar="ACTION")

    config = actions.add_parser("render-config", help="print nats.conf as the ConfigMap has it")
    config.add_argument("--replicas", type=int, default=3, help="servers in the cluster")
    config.set_defaults(func=run_render_config)

    generate = actions.add_parser(
        "generate", help="write the generated files in nats/ (base, overlays)"
    )
    generate.add_argument("--root", type=Path, default=Path("."), help="repository root")
    generate.add_argument("--check", action="store_true", help="exit 1 if any is out of date")
    generate.set_defaults(func=run_generate)

    for name, func, text in (
        ("build", run_build, "print the manifests of an overlay (no cluster needed)"),
        ("apply", run_apply, "kubectl apply -k an overlay"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--root", type=Path, default=Path("."), help="repository root")
        action.add_argument("--overlay", choices=(*OVERLAYS, "base"), default="production")
        if name == "apply":
            action.add_argument(
                "--dry-run", action="store_true", help="print the command and manifests only"
            )
        action.set_defaults(func=func)


def run_render_config(args: argparse.Namespace) -> int:
    """Print the Kubernetes rendering of nats.conf."""
    sys.stdout.write(render_nats_conf(kubernetes_params(args.replicas)))
    return ExitCode.OK


def run_generate(args: argparse.Namespace) -> int:
    """Write (or with --check, compare) the generated files in nats/base and the overlays."""
    nats_dir = args.root / "nats"
    sizings = {env: PROFILES[env].nats for env in OVERLAYS}
    generated = generated_files(sizings=sizings)
    files = {nats_dir / name: content for name, content in generated.items()}
    return write_or_check(files, args.check, hint="run `stripe-bridge nats generate`")


def _overlay_dir(args: argparse.Namespace) -> Path:
    nats_dir: Path = args.root / "nats"
    return nats_dir / "base" if args.overlay == "base" else nats_dir / "overlays" / args.overlay


def run_build(args: argparse.Namespace) -> int:
    """Print the rendered manifests of the overlay."""
    try:
        sys.stdout.write(render(build(_overlay_dir(args))))
    except (KustomizeError, OSError) as exc:
        raise CommandError(f"stripe-bridge nats build: {exc}") from exc
    return ExitCode.OK


def run_apply(args: argparse.Namespace) -> int:
    """``kubectl apply -k <overlay>``; with --dry-run print what would be applied instead."""
    directory = _overlay_dir(args)
    # The apply contract (docs/deploy.md): server-side, kubectl's own field manager, and
    # --force-conflicts: nats/ describes these objects whole, so another manager holding one
    # of their fields is a hand edit or `kubectl apply` (client-side) history, which kubectl
    # moves to its manager after the apply (kubectl pkg/cmd/apply migrateToSSAIfNecessary).
    command = ["kubectl", "apply", "--server-side", "--force-conflicts", "-k", str(directory)]
    if args.dry_run:
        print("# " + " ".join(command))
        return run_build(args)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise CommandError(
            "stripe-bridge nats apply: kubectl not found on PATH; install kubectl "
            "(v1.27+, it includes kustomize) or apply the output of `stripe-bridge nats build`",
            ExitCode.NO_PROGRAM,
        )
    result = subprocess.run([kubectl, *command[1:]], check=False)
    if result.returncode != 0:
        raise CommandError(f"stripe-bridge nats apply: kubectl exited {result.returncode}")
    return ExitCode.OK
