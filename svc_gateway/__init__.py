"""svc_gateway: see README.md and ../shared/design/architecture.md s5."""
