"""svc_users: see README.md and docs/architecture.md, Services."""
