"""The operations wing: backup and restore, replay, redrive, stream provisioning, dev servers.

What operators and scheduled jobs run, never a webhook request. Billing and the CLI use it;
it imports neither (tests/test_import_graph.py), only the request path's lower modules.
"""
