"""Files derived from the registry: function modules and the docs' event-type table."""

from __future__ import annotations

from pathlib import Path

from . import registry

GENERATED_NOTE = "Generated from stripe_bridge.registry by `stripe-bridge generate`; do not edit."


def function_module(function_name: str) -> str:
    """The source of ``functions/<function_name>/main.py``."""
    if function_name == registry.CATCH_ALL:
        what = "every Stripe event type (single-endpoint setups)"
    else:
        what = f"Stripe `{registry.by_function(function_name).name}` events"
    return f'''"""Knative function for {what}.

{GENERATED_NOTE}
Serve it alone with: functions-framework --asgi --target handle --source <this file>
"""

from stripe_bridge.function import make_function

handle = make_function("{function_name}")
'''


def event_type_table() -> str:
    """The Markdown table of supported event types for docs/event-types.md."""
    rows = [
        "| Stripe event type | function | Knative service | translation schema | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in registry.EVENT_TYPES:
        rows.append(
            f"| `{t.name}` | `functions/{t.function_name}` | `{t.service_name}` "
            f"| `{t.model.SCHEMA}` | {t.summary} |"
        )
    rows.append(
        f"| any other type | `functions/{registry.CATCH_ALL}` | `stripe-event` "
        "| none (raw payload) | Published untranslated, nothing dropped. |"
    )
    return "\n".join(rows) + "\n"


def event_types_doc() -> str:
    """The whole docs/event-types.md."""
    return f"""# Supported event types

<!-- {GENERATED_NOTE} -->

Each type has its own function and Knative service; the catch-all function accepts every
type (translated ones are translated there too). Subjects are
`<NATS_SUBJECT_PREFIX>.<live|test>.<event type>`, e.g. `stripe.live.invoice.paid`.

{event_type_table()}"""


def generated_files(root: Path) -> dict[Path, str]:
    """Every file ``generate`` writes, by path under the repository ``root``."""
    files = {
        root / "functions" / name / "main.py": function_module(name)
        for name in registry.function_names()
    }
    files[root / "docs" / "event-types.md"] = event_types_doc()
    return files
