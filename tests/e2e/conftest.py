"""Fixtures of the end-to-end tests: the WebRTC client namespace (tests/e2e/netns.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.netns import VethNamespace, can_admin_network


@pytest.fixture
def veth_netns() -> Iterator[VethNamespace]:
    """A client namespace joined to the root namespace by a veth pair; removed after the test
    whatever happened. Skipped (with the reason) where the process may not create them."""
    allowed, why = can_admin_network()
    if not allowed:
        pytest.skip(f"WebRTC test: {why}")
    ns = VethNamespace.create()
    try:
        yield ns
    finally:
        ns.delete()
