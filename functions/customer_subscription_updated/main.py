"""Knative function for Stripe `customer.subscription.updated` events.

Generated from stripe_bridge.registry by `stripe-bridge generate`; do not edit.
Serve it alone with: functions-framework --asgi --target handle --source <this file>
"""

from stripe_bridge.function import make_function

handle = make_function("customer_subscription_updated")
