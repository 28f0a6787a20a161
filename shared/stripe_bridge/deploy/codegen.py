"""Files derived from the registry: function modules and the docs' event-type table."""

from __future__ import annotations

import re
from pathlib import Path

from .. import registry
from ..billing.catalog import BILLING_FUNCTIONS, BillingFunction
from ..billing.meters import meter_files
from ..billing.openmeter import ForwarderMetrics
from ..billing.projector import ProjectorMetrics
from ..config import Settings
from ..exitcodes import exit_code_table
from ..metrics import metric_attributes, metrics_table
from ..translations import FIELD_SOURCES
from .dashboards import dashboard_files
from .schemas import schema_files
from .sizing import sizing_table

GENERATED_NOTE = "Generated from stripe_bridge.registry by `stripe-bridge generate`; do not edit."


def function_module(function_name: str) -> str:
    """The source of ``functions/<function_name>/main.py``."""
    if function_name == registry.CATCH_ALL:
        what = "every Stripe event type (single-endpoint setups)"
    else:
        what = f"Stripe `{registry.by_function(function_name).name}` events"
    return f'''"""Knative function for {what}.

{GENERATED_NOTE}
Serve it only as the image does, which drains NATS and pushes the final metrics on
SIGTERM (functions-framework would skip both):
    FUNCTION_SOURCE=<this file> stripe-bridge-serve
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stripe_bridge.webhook import make_function

if TYPE_CHECKING:  # the image serves `function` without Starlette
    from starlette.requests import Request
    from starlette.responses import Response

function = make_function("{function_name}")


async def handle(request: Request) -> Response:
    """The functions-framework target; `stripe-bridge-serve` runs `function` itself."""
    return await function.handle_starlette(request)
'''


def billing_function_module(function: BillingFunction) -> str:
    """The source of ``functions/<name>/main.py`` for a billing function."""
    return f'''"""Knative function: {function.summary} (see docs/billing.md).

Generated from stripe_bridge.billing.catalog by `stripe-bridge generate`; do not edit.
Serve it only as the image does, which drains NATS and pushes the final metrics on
SIGTERM (functions-framework would skip both): stripe-bridge-serve --source <this file>
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stripe_bridge.billing.{function.module} import {function.factory}
from stripe_bridge.http import start

if TYPE_CHECKING:  # the image serves `function` without Starlette
    from starlette.requests import Request
    from starlette.responses import Response

function = start("{function.name}", {function.factory})


async def handle(request: Request) -> Response:
    """The functions-framework target; `stripe-bridge-serve` runs `function` itself."""
    return await function.handle_starlette(request)
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

{event_type_table()}
## Fields by API era

Stripe renders every event in the API version of the endpoint or account, so one
deployment receives payloads of several eras. Each translation reads the shape its
`api_version` announces and falls back to the others; only the fields a model cannot do
without (ids, `status`, `currency`, `amount_due`) are required. Proven on Stripe's own
example objects of each era (`openapi/fixtures3.json` in stripe/openapi, in
`tests/fixtures/eras/`). `invoice.payment_succeeded` (what older integrations listen to) and
`invoice.paid` arrive for the same paid invoice; the lifecycle projector sends one
`payment.success` for both (docs/billing.md).

{field_source_table()}"""


def field_source_table() -> str:
    """The Markdown table of where each translated field comes from, era by era."""
    rows = [
        "| translated field | 2017-08-15 | 2018 (amounts) | 2020 (prices) "
        "| 2025-03-31.basil and newer |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in FIELD_SOURCES:
        rows.append(f"| {f.field} | {f.v2017} | {f.v2018} | {f.v2020} | {f.basil} |")
    return "\n".join(rows) + "\n"


def settings_table() -> str:
    """The Markdown table of environment variables, from the Settings model."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None or field.default is None:
            default = "unset"
        else:
            default = f"`{getattr(field.default, 'value', field.default)}`"
        rows.append(f"| `{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows) + "\n"


def replace_section(text: str, name: str, content: str) -> str:
    """``text`` with the block between ``<!-- generated:NAME -->`` markers set to ``content``."""
    begin, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"markers for section {name!r} not found")
    return pattern.sub(lambda _m: f"{begin}\n{content}{end}", text)


def observability_doc(text: str) -> str:
    """docs/observability.md with the metric tables of the bridge and the billing consumers."""
    text = replace_section(text, "metrics", metrics_table())
    text = replace_section(
        text, "openmeter-metrics", metrics_table(metric_attributes(ForwarderMetrics()))
    )
    text = replace_section(
        text, "tiers-metrics", metrics_table(metric_attributes(ProjectorMetrics()))
    )
    return limits_and_backup_metrics(text)


def limits_and_backup_metrics(text: str) -> str:
    """The metric tables of project-lifecycle, count-usage and the backup CronJob."""
    from ..billing.lifecycle_projector import LifecycleMetrics
    from ..billing.usage_counter import CounterMetrics
    from ..ops.backup_job import BackupMetrics

    sections = {
        "lifecycle-metrics": metric_attributes(LifecycleMetrics()),
        "usage-counter-metrics": metric_attributes(CounterMetrics()),
        "backup-metrics": metric_attributes(BackupMetrics()),
    }
    for name, metrics in sections.items():
        text = replace_section(text, name, metrics_table(metrics))
    return text


def generated_files(root: Path) -> dict[Path, str]:
    """Every file ``generate`` writes, by path under the repository ``root``."""
    files = {
        root / "functions" / name / "main.py": function_module(name)
        for name in registry.function_names()
    }
    files[root / "docs" / "event-types.md"] = event_types_doc()
    configuration = root / "docs" / "configuration.md"
    files[configuration] = replace_section(configuration.read_text(), "env", settings_table())
    cli = root / "docs" / "cli.md"
    files[cli] = replace_section(cli.read_text(), "exit-codes", exit_code_table())
    observability = root / "docs" / "observability.md"
    files[observability] = observability_doc(observability.read_text())
    deploy = root / "docs" / "deploy.md"
    files[deploy] = replace_section(deploy.read_text(), "sizing", sizing_table())
    files.update(dashboard_files(root))
    files.update(schema_files(root))
    files.update(meter_files(root))
    for function in BILLING_FUNCTIONS:
        files[root / "functions" / function.name / "main.py"] = billing_function_module(function)
    return files
