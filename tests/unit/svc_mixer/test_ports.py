"""The RTP port pool (in memory: persistence is in tests/integration/svc_mixer)."""

from __future__ import annotations

import pytest

from common.errors import Unavailable
from svc_mixer.ports import PortPool


def test_even_ports_in_range_lowest_first() -> None:
    pool = PortPool(10001, 10010)
    ports = [pool.reserve(f"room-{i}") for i in range(4)]
    assert ports == [10002, 10004, 10006, 10008]
    assert all(p % 2 == 0 and p >= 10001 and p + 1 < 10010 for p in ports)


def test_reserve_is_idempotent_per_room() -> None:
    pool = PortPool(10000, 10010)
    assert pool.reserve("abc") == pool.reserve("abc") == 10000
    assert pool.reserved() == {"abc": 10000}


def test_exhaustion_is_a_clear_unavailable_and_release_frees() -> None:
    pool = PortPool(10000, 10004)  # 10000/10001 and 10002/10003
    assert pool.capacity == 2
    pool.reserve("aaa")
    pool.reserve("bbb")
    with pytest.raises(Unavailable, match="RTP port pool exhausted") as err:
        pool.reserve("ccc")
    assert err.value.fields["room_id"] == "ccc"
    assert pool.release("aaa") == 10000
    assert pool.release("aaa") is None
    assert pool.reserve("ccc") == 10000


def test_odd_end_leaves_no_half_pair() -> None:
    pool = PortPool(10000, 10003)
    assert pool.capacity == 1
    assert pool.reserve("aaa") == 10000
    with pytest.raises(Unavailable):
        pool.reserve("bbb")


def test_avoided_port_is_skipped() -> None:
    pool = PortPool(10000, 10010)
    pool.avoid(10000)
    assert pool.reserve("abc") == 10002
