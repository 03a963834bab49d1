"""The mixer's HTTP surface: ``GET /health`` and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import Litestar, Response, get

from common.http import health_response, make_app
from common.wiring import metrics_payload

__all__ = ["create_app"]


def create_app(
    health: Callable[[], Awaitable[Mapping[str, bool]]],
    status: Callable[[], Mapping[str, Any]],
    before_metrics: Callable[[], None],
) -> Litestar:
    """``health()`` gives the named checks (200 when all are true, else 503), ``status()`` the
    rest of the body; ``before_metrics()`` refreshes sampled gauges (CPU)."""

    @get("/health")
    async def health_check() -> Response[Any]:
        return health_response(await health(), status())

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        before_metrics()
        body, content_type = metrics_payload()
        return Response(content=body, media_type=content_type)

    return make_app([health_check, metrics])
