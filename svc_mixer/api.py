"""The mixer's HTTP surface: ``GET /health`` and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from litestar import Litestar, Response, get

from common.http import json_response, make_app
from common.wiring import metrics_payload

__all__ = ["create_app"]


def create_app(status: Callable[[], Mapping[str, Any]], before_metrics: Callable[[], None]) -> Litestar:
    """``status()`` gives the health body; ``before_metrics()`` refreshes sampled gauges (CPU)."""

    @get("/health", sync_to_thread=False)
    def health() -> Response[Any]:
        return json_response({"status": "ok", **status()})

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        before_metrics()
        body, content_type = metrics_payload()
        return Response(content=body, media_type=content_type)

    return make_app([health, metrics])
