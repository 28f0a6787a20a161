"""Subcommands of the ``stripe-bridge`` console script, one module each."""
