"""HeartbeatKeeper parts that need no etcd: argument checks (its backoff: test_backoff.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from common.errors import InvalidInput
from common.etcd import EtcdStore
from common.heartbeat import HeartbeatKeeper


def test_keeper_rejects_non_positive_ttl() -> None:
    store = cast(EtcdStore, object())
    with pytest.raises(InvalidInput):
        HeartbeatKeeper(store, "/mixers/m1/heartbeat", lambda: b"", ttl_s=0)


def test_keeper_refreshes_at_a_third_of_ttl() -> None:
    store: Any = object()
    keeper = HeartbeatKeeper(store, "/mixers/m1/heartbeat", lambda: b"", ttl_s=9.0)
    assert keeper.refresh_interval_s == pytest.approx(3.0)
    assert keeper.lease_id is None
    assert not keeper.is_alive
