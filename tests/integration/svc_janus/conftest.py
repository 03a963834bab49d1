"""Fixtures for svc_janus tests: one real Janus for the session (private ones where a test
kills, stops or reconfigures it), and the env that points svc_janus at the test servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers_janus import JanusServer


@pytest.fixture(scope="session")
def janus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JanusServer]:
    server = JanusServer(tmp_path_factory.mktemp("janus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
