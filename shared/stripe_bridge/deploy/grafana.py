"""The Grafana dashboard model (rows of panels of PromQL targets) and its JSON rendering.

``dashboards`` and ``billing_rows`` describe the dashboards as data in these types;
``dashboard_json`` lays them out as Grafana's JSON model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


def rate(selector: str) -> str:
    return f"rate({selector}[$__rate_interval])"


@dataclass(frozen=True)
class Panel:
    """One Grafana panel: a title, its queries (legend, PromQL) and a unit."""

    title: str
    targets: Sequence[tuple[str, str]]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 12


@dataclass(frozen=True)
class Row:
    """A titled row of panels."""

    title: str
    panels: Sequence[Panel]


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: uid, title, variables and rows."""

    uid: str
    title: str
    description: str
    rows: Sequence[Row]
    variables: Sequence[dict[str, Any]] = field(default_factory=list)

    def panels(self) -> Iterator[Panel]:
        """Every panel, in order."""
        for row in self.rows:
            yield from row.panels


def dashboard_json(dashboard: Dashboard) -> str:
    """The Grafana dashboard JSON model (import it, or provision it from a ConfigMap)."""
    panels: list[dict[str, Any]] = []
    y = 0
    panel_id = 1
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    for row in dashboard.rows:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        for panel in row.panels:
            height = 4 if panel.kind == "stat" else 8
            if x + panel.width > 24:
                x, y = 0, y + height
            panels.append(
                {
                    "id": panel_id,
                    "type": panel.kind,
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": datasource,
                    "gridPos": {"h": height, "w": panel.width, "x": x, "y": y},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "targets": [
                        {
                            "refId": chr(ord("A") + i),
                            "datasource": datasource,
                            "expr": expr,
                            "legendFormat": legend,
                        }
                        for i, (legend, expr) in enumerate(panel.targets)
                    ],
                }
            )
            panel_id += 1
            x += panel.width
        y += 8
    model = {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["stripe-bridge"],
        "timezone": "utc",
        "schemaVersion": 39,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                },
                *dashboard.variables,
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }
    return json.dumps(model, indent=2, sort_keys=True) + "\n"
