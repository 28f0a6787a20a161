"""Entitlement checks and exact reservations on stripe-bridge's NATS KV (docs/entitlements.md)."""
