"""names.py: Kubernetes names capped so every name Knative derives from them still fits."""

from __future__ import annotations

from stripe_bridge.names import MAX_SERVICE_NAME, capped


def test_a_name_that_fits_is_kept() -> None:
    assert capped("stripe-invoice-paid") == "stripe-invoice-paid"
    assert capped("x" * MAX_SERVICE_NAME) == "x" * MAX_SERVICE_NAME


def test_a_long_name_is_cut_to_the_limit_with_a_hash() -> None:
    long = "stripe-entitlements-active-entitlement-summary-updated"
    short = capped(long)
    assert len(short) == MAX_SERVICE_NAME
    head, _, digest = short.rpartition("-")
    assert long.startswith(head) and len(digest) == 8
    assert capped(long) == short  # deterministic: the same name every render


def test_names_sharing_a_long_prefix_stay_distinct() -> None:
    prefix = "a" * 60
    assert capped(prefix + "-one") != capped(prefix + "-two")


def test_the_head_never_ends_in_a_dash() -> None:
    # The head is stripped of trailing dashes: no "--" before the hash.
    assert capped("b" * 31 + "-" * 20) == "b" * 31 + "-" + capped("b" * 31 + "-" * 20)[-8:]
