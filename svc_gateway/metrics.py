"""The gateway's Prometheus metrics (``/metrics`` on the WebSocket port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["CONNECTIONS", "ERRORS", "JANUS_LATENCY", "JOINS", "NOTIFICATIONS_DROPPED"]

CONNECTIONS = Gauge("gateway_connections", "Open, authenticated WebSocket connections of this process")
JOINS = Counter("gateway_joins_total", "Successful joins", ["resume"])
ERRORS = Counter("gateway_rpc_errors_total", "JSON-RPC error replies and closes by code", ["code"])
JANUS_LATENCY = Histogram(
    "gateway_janus_request_seconds",
    "Latency of the Janus operations a method waits for",
    ["op"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
NOTIFICATIONS_DROPPED = Counter(
    "gateway_slow_clients_total", "Connections closed because they did not read their messages"
)
