"""``stripe-bridge knative render|apply``: the Knative deployment of the functions."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..deploy import knative, kubeapply, manifests, profiles, promoperator, workloads
from ..errors import CommandError
from ..exitcodes import ExitCode
from .common import write_or_check


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``knative`` with its ``render`` and ``apply`` subcommands."""
    parser = subparsers.add_parser("knative", help="render and apply the Knative deployment")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    render = actions.add_parser(
        "render",
        help="write knative/ manifests from the registry (and the Prometheus Operator objects)",
    )
    render.add_argument(
        "--env", choices=list(profiles.PROFILES), help="one environment (default: all)"
    )
    render.add_argument("--out", type=Path, default=Path("knative"), help="output folder")
    render.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    render.set_defaults(func=run_render)

    apply = actions.add_parser(
        "apply",
        help="create or update the Services, Deployments and CronJob (server-side apply), "
        "report URLs and Ready",
    )
    apply.add_argument("--env", choices=list(profiles.PROFILES), default="staging")
    apply.add_argument("--namespace", help="target namespace (default: the environment's)")
    apply.add_argument("--image", help="container image (default: the environment's)")
    apply.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    apply.add_argument("--context", help="kubeconfig context (default: the current one)")
    apply.add_argument(
        "--dry-run", action="store_true", help="server-side dry run: validate, change nothing"
    )
    apply.add_argument(
        "--wait", type=float, default=180.0, help="seconds to wait for Ready (0: do not wait)"
    )
    apply.add_argument(
        "--poll-interval", type=float, default=2.0, help="seconds between status checks"
    )
    apply.add_argument(
        "--no-consumers",
        action="store_true",
        help="only the Knative Services, not consumers.yaml's Deployments and CronJob",
    )
    apply.set_defaults(func=run_apply)


def rendered(envs: list[str] | None = None) -> dict[str, str]:
    """Every file ``render`` writes, by path relative to ``knative/``."""
    return {**manifests.render(envs), **promoperator.render(envs)}


def run_render(args: argparse.Namespace) -> int:
    """Write every manifest (or with --check, compare)."""
    envs = [args.env] if args.env else None
    files = {args.out / relative: content for relative, content in rendered(envs).items()}
    return write_or_check(files, args.check)


def run_apply(args: argparse.Namespace) -> int:
    """Apply every Service, wait for Ready, print URLs and the webhook registration steps."""
    profile = profiles.PROFILES[args.env]
    namespace = args.namespace or profile.namespace
    try:
        client = kubeapply.api_client(args.kubeconfig, args.context)
        deployer = kubeapply.Deployer(client, namespace, args.env, args.dry_run)
        deployer.check_knative()
        states = [deployer.apply(m) for m in knative.services(profile, args.image)]
        if not args.no_consumers:
            objects = workloads.consumers(profile, args.image)
            states += [deployer.apply_workload(m) for m in objects]
        for state in states:
            print(f"{state.label}: {state.action}")
        if args.dry_run:
            return ExitCode.OK
        if args.wait > 0:
            deployer.wait_ready(states, args.wait, args.poll_interval)
    except kubeapply.DeployError as exc:
        raise CommandError(f"stripe-bridge knative apply: {exc}", exc.exit_code) from exc
    for state in states:
        detail = f" ({state.reason})" if state.reason and state.ready != "True" else ""
        print(f"{state.label}: Ready={state.ready} {state.url or '-'}{detail}")
    print()
    print(kubeapply.registration_steps(knative.function_specs(), states, namespace), end="")
    not_ready = [state.label for state in states if state.ready != "True"]
    if not_ready and args.wait > 0:
        raise CommandError(f"stripe-bridge knative apply: not Ready: {', '.join(not_ready)}")
    return ExitCode.OK
