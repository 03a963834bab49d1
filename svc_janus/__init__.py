"""svc_janus: see README.md and ../shared/design/architecture.md s5."""
