"""Knative function: Customer Portal session (see docs/billing.md).

Generated from stripe_bridge.billing.functions by `stripe-bridge generate`; do not edit.
Serve it with `stripe-bridge serve --source <this file>` (as the image does): it drains
NATS and pushes the final metrics on SIGTERM, which functions-framework would skip.
"""

from stripe_bridge.billing.functions import build, make_portal_function

handle = build(make_portal_function, "billing_portal")
