"""Knative function for Stripe `customer.subscription.trial_will_end` events.

Generated from stripe_bridge.registry by `stripe-bridge generate`; do not edit.
Serve it as the image does (drains NATS and pushes metrics on SIGTERM):
    FUNCTION_SOURCE=<this file> stripe-bridge serve
`functions-framework --asgi --target handle --source <this file>` also serves it for a
quick local try, without the drain and the final metrics push.
"""

from stripe_bridge.webhook import make_function

function = make_function("customer_subscription_trial_will_end")
handle = function.target
