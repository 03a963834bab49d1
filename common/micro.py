"""Register a service with the NATS services protocol (``$SRV.PING``, ``$SRV.INFO``, ``$SRV.STATS``).

Operators then see every running service with ``nats micro ls`` / ``nats micro info svc_rooms``
and can ask ``nats req svc_rooms.status ''`` without the project shipping a CLI. Endpoint
handlers return JSON-able objects; an ``AppError`` becomes a micro error reply whose code is
its HTTP status (docs/conventions.md, Errors), anything else is logged as a bug and answered with code 500.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from nats.micro import add_service
from nats.micro.request import Request, ServiceError

from common.bus import Bus
from common.errors import AppError, log_error

__all__ = ["serve_micro"]

logger = logging.getLogger(__name__)

EndpointHandler = Callable[[bytes], Any | Awaitable[Any]]


def _wrap(name: str, handler: EndpointHandler) -> Callable[[Request], Awaitable[None]]:
    async def endpoint(req: Request) -> None:
        try:
            result = handler(req.data)
            if inspect.isawaitable(result):
                result = await result
            await req.respond(json.dumps(result, default=str).encode())
        except AppError as exc:
            log_error(logger, exc, f"micro endpoint {name}")
            # Raised, not answered here, so the service's error statistics count it.
            raise ServiceError(code=str(exc.status_code), description=exc.detail) from exc
        except Exception as exc:
            log_error(logger, exc, f"micro endpoint {name}")
            raise ServiceError(code="500", description="unknown error") from exc

    return endpoint


@contextlib.asynccontextmanager
async def serve_micro(
    bus: Bus,
    *,
    name: str,
    version: str,
    description: str,
    status: Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]],
    endpoints: Mapping[str, EndpointHandler] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> AsyncIterator[None]:
    """Register ``name`` with a ``status`` endpoint (subject ``<name>.status``) plus ``endpoints``
    for the duration of the block; leaving it unsubscribes them.

    ``status`` is called on every request, so it must be cheap.
    """
    service = await add_service(
        bus.nc, name=name, version=version, description=description, metadata=dict(metadata or {})
    )
    try:
        group = service.add_group(name=name)
        await group.add_endpoint(name="status", handler=_wrap("status", lambda _data: status()))
        for ep_name, handler in (endpoints or {}).items():
            await group.add_endpoint(name=ep_name, handler=_wrap(ep_name, handler))
        logger.info("micro service %s %s registered as %s", name, version, service.id)
        yield
    finally:
        await service.stop()
