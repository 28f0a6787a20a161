"""Knative function for Stripe `entitlements.active_entitlement_summary.updated` events.

Generated from stripe_bridge.registry by `stripe-bridge generate`; do not edit.
Serve it alone with: functions-framework --asgi --target handle --source <this file>
"""

from stripe_bridge.function import make_function

handle = make_function("entitlements_active_entitlement_summary_updated")
