"""Prometheus metrics of svc_rooms (served at /metrics with the process defaults)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "HOUSEKEEPING_DELETIONS",
    "HOUSEKEEPING_RUNS",
    "MIGRATIONS",
    "MIGRATION_BLOCKED",
    "ROOMS_CREATED",
    "ROOMS_STOPPED",
    "ROOM_CREATE_FAILURES",
    "ROOM_CREATE_SECONDS",
]

ROOMS_CREATED = Counter("rtc_rooms_created_total", "Rooms created and started live")
ROOM_CREATE_FAILURES = Counter(
    "rtc_rooms_create_failures_total", "Room creations refused for lack of modules", ["reason"]
)
ROOM_CREATE_SECONDS = Histogram(
    "rtc_rooms_create_seconds",
    "POST /api/rooms handling time",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ROOMS_STOPPED = Counter("rtc_rooms_stopped_total", "Rooms moved to removing (API or max age)")
MIGRATIONS = Counter("rtc_rooms_migrations_total", "Rooms moved to another module", ["kind", "reason"])
MIGRATION_BLOCKED = Counter(
    "rtc_rooms_migration_blocked_total", "Migrations that found no module to move to (retried)", ["kind"]
)
HOUSEKEEPING_RUNS = Counter("rtc_rooms_housekeeping_runs_total", "Housekeeping passes")
HOUSEKEEPING_DELETIONS = Counter(
    "rtc_rooms_housekeeping_actions_total", "Rooms deleted or stopped by housekeeping", ["rule"]
)
