"""Billing consumers of the event stream: usage metering to OpenMeter, tiers, checkout."""
