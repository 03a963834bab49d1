"""svc_mixer: see README.md and docs/architecture.md, Services."""
