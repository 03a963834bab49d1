"""svc_users: see README.md and ../shared/design/architecture.md s5."""
