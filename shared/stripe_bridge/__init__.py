"""stripe-bridge: verified Stripe webhooks in, one durable CloudEvent per event out on JetStream."""

__version__ = "0.1.0"
