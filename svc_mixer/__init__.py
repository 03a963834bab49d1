"""svc_mixer: see README.md and ../shared/design/architecture.md s5."""
