"""Knative function: record usage into USAGE (see docs/billing.md).

Generated from stripe_bridge.billing.catalog by `stripe-bridge generate`; do not edit.
Serve it alone with: stripe-bridge serve --source <this file>
"""

from stripe_bridge.billing.endpoints import make_usage_function
from stripe_bridge.http import start

function = start("billing_usage", make_usage_function)
handle = function.target
