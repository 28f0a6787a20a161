"""Knative function: record usage into USAGE (see docs/billing.md).

Generated from stripe_bridge.billing.endpoints by `stripe-bridge generate`; do not edit.
Serve it alone with: stripe-bridge serve --source <this file>
"""

from stripe_bridge.billing.endpoints import build, make_usage_function

handle = build(make_usage_function, "billing_usage")
