"""registry.py: the one list of served Stripe event types and the names derived from it."""

from __future__ import annotations

import re

import pytest
from stripe_bridge import registry
from stripe_bridge.names import MAX_SERVICE_NAME
from stripe_bridge_testing.repo import REPO_ROOT


def test_each_type_once_with_its_function_and_service() -> None:
    names = [spec.name for spec in registry.EVENT_TYPES]
    assert len(set(names)) == len(names)
    for spec in registry.EVENT_TYPES:
        assert spec.function_name == spec.name.replace(".", "_")
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", spec.service_name), spec
        assert len(spec.service_name) <= MAX_SERVICE_NAME
        assert spec.summary.endswith(".")


def test_lookups_by_type_and_by_function() -> None:
    paid = registry.lookup("invoice.paid")
    assert paid is not None and paid.function_name == "invoice_paid"
    assert registry.by_function("invoice_paid") is paid
    assert registry.lookup("charge.succeeded") is None  # published untranslated
    with pytest.raises(KeyError):
        registry.by_function(registry.CATCH_ALL)


def test_function_names_are_the_folders_under_functions() -> None:
    names = registry.function_names()
    assert names[-1] == registry.CATCH_ALL
    assert len(set(names)) == len(names)
    folders = {path.parent.name for path in (REPO_ROOT / "functions").glob("*/main.py")}
    assert set(names) == {name for name in folders if not name.startswith("billing_")}
