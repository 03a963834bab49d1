"""svc_rooms: see README.md and ../shared/design/architecture.md s5."""
