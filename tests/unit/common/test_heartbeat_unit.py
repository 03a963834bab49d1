"""HeartbeatKeeper parts that need no etcd: the backoff schedule and argument checks."""

from __future__ import annotations

from typing import Any, cast

import pytest

from common.errors import InvalidInput
from common.etcd import EtcdStore
from common.heartbeat import Backoff, HeartbeatKeeper


def test_backoff_grows_by_1_5_and_caps_at_10_s() -> None:
    b = Backoff(rand=lambda lo, hi: 1.0)
    delays = [b.next() for _ in range(14)]
    assert delays[:4] == pytest.approx([0.1, 0.15, 0.225, 0.3375])
    assert max(delays) == 10.0
    assert delays[-1] == 10.0
    b.reset()
    assert b.next() == pytest.approx(0.1)


def test_backoff_jitter_is_plus_minus_half() -> None:
    seen: list[tuple[float, float]] = []

    def rand(lo: float, hi: float) -> float:
        seen.append((lo, hi))
        return lo

    b = Backoff(rand=rand)
    assert b.next() == pytest.approx(0.05)
    assert seen == [(0.5, 1.5)]


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
