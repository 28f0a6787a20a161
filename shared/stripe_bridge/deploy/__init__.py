"""Deploy-time code: Knative and NATS manifests, dashboards, alerts, generated files.

Nothing here runs when a webhook arrives; the runtime never imports this package.
"""
