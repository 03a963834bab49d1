"""The HTTP edge of the error hierarchy, shared by every litestar service (docs/conventions.md, Errors).

One handler maps ``AppError`` (found by MRO) to its status with the body
``{"success": false, "error": <detail>, "details": [{"field", "message"}...]}``; litestar's own
4xx (bad JSON, unknown route, wrong method, its parameter validation) get the same body; anything
else is a bug: 500 with a generic body, logged once with its traceback.

Bodies are decoded with :func:`decode_body` (our strict converter: an unknown field or a wrong
type is a 400 naming it), not with litestar's attrs support, which ignores unknown fields.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from common import records
from common.errors import AppError, InvalidInput, log_error
from common.wiring import health_body

__all__ = ["decode_body", "exception_handlers", "health_response", "json_response", "make_app"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def error_body(error: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"success": False, "error": error, "details": details or []}


def _details(exc: AppError) -> list[dict[str, Any]]:
    fields = exc.fields
    if "errors" in fields and isinstance(fields["errors"], list):
        return [{"field": fields.get("field", ""), "message": str(m)} for m in fields["errors"]]
    if "field" in fields:
        return [{"field": str(fields["field"]), "message": exc.detail}]
    return []


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response[Any]:
    return Response(
        content=content, status_code=status_code, headers=dict(headers or {}), media_type="application/json"
    )


def health_response(checks: Mapping[str, bool], fields: Mapping[str, Any]) -> Response[Any]:
    """:func:`common.wiring.health_body` as a litestar response."""
    status, body = health_body(checks, fields)
    return json_response(body, status)


def _app_error(request: Request[Any, Any, Any], exc: AppError) -> Response[Any]:
    log_error(logger, exc, f"{request.method} {request.url.path}")
    return json_response(error_body(exc.detail, _details(exc)), exc.status_code)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    details: list[dict[str, Any]] = []
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        for item in exc.extra:
            if isinstance(item, dict):
                details.append({"field": str(item.get("key", "")), "message": str(item.get("message", ""))})
    if exc.status_code >= 500:
        log_error(logger, exc, f"{request.method} {request.url.path}")
    else:
        logger.info("%s %s: %s %s", request.method, request.url.path, exc.status_code, exc.detail)
    return json_response(
        error_body(str(exc.detail), details), exc.status_code, headers=getattr(exc, "headers", None)
    )


def _bug(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log_error(logger, exc, f"{request.method} {request.url.path}")
    return json_response(error_body("internal error"), 500)


def exception_handlers() -> ExceptionHandlersMap:
    """Pass to ``Litestar(exception_handlers=...)``."""
    return {AppError: _app_error, HTTPException: _http_error, Exception: _bug}


def make_app(route_handlers: list[Any], **kwargs: Any) -> Litestar:
    """A Litestar app with our error edge, and without litestar's own logging config.

    litestar configures the root logger on startup by default (its own format), which would
    override common.logging's format, levels and structured fields for the whole process.
    """
    kwargs.setdefault("exception_handlers", exception_handlers())
    return Litestar(route_handlers, logging_config=None, **kwargs)


def decode_body(cls: type[T], raw: bytes) -> T:
    """Strictly decode a JSON request body into ``cls`` (an attrs class); 400 on any problem."""
    if not raw.strip():
        raise InvalidInput("request body is empty: send a JSON object", field="body")
    try:
        json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from exc
    return records.decode_payload(cls, raw, key="body")
