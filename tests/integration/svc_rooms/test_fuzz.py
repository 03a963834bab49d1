"""Fuzz the REST API from its own OpenAPI schema (schemathesis): no 5xx, no hang.

The service runs in this test's event loop (serve_http); schemathesis drives it with blocking
HTTP calls, so the fuzzing runs in a worker thread. Both valid (positive) and invalid
(negative) inputs are generated, a bounded number per operation, with the API token so the
guarded endpoints are exercised past their guard.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, Phase

from svc_rooms.app import Rooms
from tests.integration.svc_rooms.fakes import AUTH, StartModule

EXAMPLES_PER_OPERATION = 25
FUZZ_TIMEOUT_S = 60.0


def _fuzz(schema_doc: dict[str, Any], base_url: str) -> list[str]:
    schema = schemathesis.openapi.from_dict(schema_doc)
    problems: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=base_url, headers=dict(AUTH), timeout=10)
                if response.status_code >= 500:
                    problems.append(
                        f"{case.method} {case.formatted_path} {case.body!r} -> {response.status_code}"
                    )

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                # An operation without parameters or body has no invalid variant to generate.
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    assert calls > 100, calls
    return problems


async def test_openapi_fuzz_finds_no_server_errors(rooms: Rooms, modules: StartModule) -> None:
    await modules("januses", "janus-1", capacity=1000)
    await modules("mixers", "mixer-1", capacity=1000)
    async with httpx.AsyncClient(base_url=rooms.url) as client:
        doc = (await client.get("/schema/openapi.json")).json()
    async with asyncio.timeout(FUZZ_TIMEOUT_S):
        problems = await asyncio.to_thread(_fuzz, doc, rooms.url)
    assert problems == []
