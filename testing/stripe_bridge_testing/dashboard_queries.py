"""Every panel of a generated dashboard, asked of a Prometheus: does it return data?

Used by the observability tests (a local Prometheus) and the staging run (a container).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import Any, Protocol

import httpx

from .repo import REPO_ROOT
from .waiting import wait_until

#: What Grafana would substitute with "All" selected and a short time range.
VARIABLES = {
    "$__rate_interval": "5m",
    "$environment": "production",
    "$event_type": ".*",
    "$function": ".*",
    "$stream": ".*",
}


class PrometheusApi(Protocol):
    """A Prometheus reachable at ``url`` (a local PrometheusServer, a container in staging)."""

    @property
    def url(self) -> str:
        """Base URL without a trailing slash."""


def query(prometheus: PrometheusApi, expr: str) -> dict[str, Any]:
    """The instant-query API's answer to ``expr``, as JSON."""
    response = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": expr}, timeout=5)
    body: dict[str, Any] = response.json()
    return body


def substitute(expr: str, variables: Mapping[str, str] = VARIABLES) -> str:
    """``expr`` with every dashboard variable replaced (none may be left)."""
    for variable, value in variables.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def panel_queries(name: str, variables: Mapping[str, str] = VARIABLES) -> dict[str, str]:
    """Every target of a generated dashboard: ``title/refId`` -> PromQL with variables set."""
    model = json.loads((REPO_ROOT / "dashboards" / name).read_text())
    return {
        f"{panel['title']}/{target['refId']}": substitute(target["expr"], variables)
        for panel in model["panels"]
        for target in panel.get("targets", [])
    }


def has_finite_value(result: dict[str, Any]) -> bool:
    """Whether a query answer holds at least one finite sample."""
    samples = result.get("data", {}).get("result", [])
    return any(math.isfinite(float(s["value"][1])) for s in samples)


def scalar(prometheus: PrometheusApi, expr: str) -> float | None:
    """The first sample's value of ``expr`` (None without samples)."""
    samples = query(prometheus, expr)["data"]["result"]
    return float(samples[0]["value"][1]) if samples else None


def assert_every_panel_has_data(
    prometheus: PrometheusApi,
    dashboard: str,
    at_least: int,
    timeout: float,
    variables: Mapping[str, str] = VARIABLES,
    skip: Collection[str] = (),
) -> None:
    """Every panel query of ``dashboard`` parses and returns a finite value within ``timeout``.

    Panels titled in ``skip`` are left out (a run that does not deploy what they show).
    """
    pending = {
        key: expr
        for key, expr in panel_queries(dashboard, variables).items()
        if key.rsplit("/", 1)[0] not in skip
    }
    assert len(pending) >= at_least
    answers: dict[str, dict[str, Any]] = {}

    def all_panels_have_data() -> bool:
        for key in list(pending):
            answers[key] = query(prometheus, pending[key])
            assert answers[key]["status"] == "success", (key, answers[key])
            if has_finite_value(answers[key]):
                del pending[key]
        return not pending

    try:
        wait_until(all_panels_have_data, timeout, f"data for every panel of {dashboard}")
    except TimeoutError:
        raise AssertionError(
            f"panels without data: { {k: answers.get(k) for k in pending} }"
        ) from None
