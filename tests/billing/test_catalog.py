"""catalog.py: the billing functions as plain data, each naming a factory that exists."""

from __future__ import annotations

import ast
import importlib
import re

from stripe_bridge.billing.catalog import BILLING_FUNCTIONS, Need
from stripe_bridge_testing.repo import REPO_ROOT


def test_each_function_names_a_factory_of_its_module() -> None:
    for function in BILLING_FUNCTIONS:
        module = importlib.import_module(f"stripe_bridge.billing.{function.module}")
        assert callable(getattr(module, function.factory)), function


def test_names_folders_and_services() -> None:
    names = [function.name for function in BILLING_FUNCTIONS]
    assert len(set(names)) == len(names)
    for function in BILLING_FUNCTIONS:
        assert function.name.startswith("billing_")
        assert (REPO_ROOT / "functions" / function.name / "main.py").is_file()
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", function.service_name), function


def test_a_function_without_caller_authentication_is_cluster_local() -> None:
    # Only the usage function checks a bearer token; Stripe's own functions are reached
    # through the app's backend (see Need.STRIPE), the others are marked cluster-local.
    for function in BILLING_FUNCTIONS:
        if Need.USAGE_TOKEN not in function.needs:
            assert function.needs & {Need.STRIPE, Need.CLUSTER_LOCAL}, function


def test_it_imports_nothing_the_deploy_wing_should_not_load() -> None:
    tree = ast.parse(
        (REPO_ROOT / "shared" / "stripe_bridge" / "billing" / "catalog.py").read_text()
    )
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imported <= {"__future__", "dataclasses", "enum"}
