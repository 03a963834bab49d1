"""svc_janus: see README.md and docs/architecture.md, Services."""
