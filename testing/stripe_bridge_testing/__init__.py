"""Test harness of stripe-bridge: local servers, the NATS cluster builder, HTTP stand-ins.

Its own distribution (``testing/pyproject.toml``), installed by the ``test`` dependency
group and never into the function image.
"""
