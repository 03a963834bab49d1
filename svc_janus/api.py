"""HTTP endpoints of svc_janus: ``GET /health`` and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from litestar import Litestar, Response, get

from common.http import json_response, make_app
from common.wiring import metrics_payload

__all__ = ["create_app"]


def create_app(status: Callable[[], Mapping[str, Any]]) -> Litestar:
    """``/health`` answers 200 while Janus is reachable with a live session, else 503."""

    @get("/health", sync_to_thread=False)
    def health() -> Response[Any]:
        body = dict(status())
        return json_response(body, 200 if body.get("status") == "ok" else 503)

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        payload, content_type = metrics_payload()
        return Response(content=payload, media_type=content_type)

    return make_app([health, metrics], openapi_config=None)
