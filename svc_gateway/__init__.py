"""svc_gateway: see README.md and docs/architecture.md, Services."""
