"""HTTP endpoints of svc_janus: ``GET /health`` and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import Litestar, Response, get

from common.http import health_response, make_app
from common.wiring import metrics_payload

__all__ = ["create_app"]


def create_app(
    health: Callable[[], Awaitable[Mapping[str, bool]]], status: Callable[[], Mapping[str, Any]]
) -> Litestar:
    """``/health``: 200 when every named check of ``health()`` is true, else 503 naming the
    failing ones; ``status()`` gives the rest of the body."""

    @get("/health")
    async def health_check() -> Response[Any]:
        return health_response(await health(), status())

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        payload, content_type = metrics_payload()
        return Response(content=payload, media_type=content_type)

    return make_app([health_check, metrics], openapi_config=None)
