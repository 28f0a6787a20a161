"""The checkout the harness runs: its scripts/, manifests and functions.

The harness is a uv workspace member installed in editable mode (never built into a
wheel), so this file sits in ``<checkout>/testing/stripe_bridge_testing/``.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
