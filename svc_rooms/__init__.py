"""svc_rooms: see README.md and docs/architecture.md, Services."""
