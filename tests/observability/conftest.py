"""Fixtures of the observability tests: a real Pushgateway and helpers to read it back."""

from __future__ import annotations

import httpx


def pushed_value(url: str, metric: str, **labels: str) -> float | None:
    """The value of ``metric`` with ``labels`` as the Pushgateway exposes it, or None."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        name_labels, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in name_labels for k, v in labels.items()):
            return float(value)
    return None
