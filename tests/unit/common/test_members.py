"""common/members.py: parsing a room's user hash and the connected / holds-a-place rules."""

from __future__ import annotations

import pytest

from common.members import StoredStatus, parse_room_hash, parse_status
from common.records import MemberRole, MemberStatus

A = "0b7e3a4c-5d6f-4a1b-8c2d-3e4f5a6b7c8d"
B = "5f1c2d3e-4a5b-4c6d-9e7f-8a9b0c1d2e3f"
NOW = 1_700_000_000_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1700,idle,3", StoredStatus(ts_ms=1700, status=MemberStatus.IDLE, gen=3)),
        ("1,left,0", StoredStatus(ts_ms=1, status=MemberStatus.LEFT, gen=0)),
        (None, None),
        ("", None),
        ("1700,idle", None),
        ("1700,away,1", None),
        ("x,idle,1", None),
        ("1700,idle,-1", None),
        ("1700,onair,1,9", None),
    ],
)
def test_parse_status(value: str | None, expected: StoredStatus | None) -> None:
    assert parse_status(value) == expected


def test_parse_room_hash_groups_fields_by_user_and_skips_foreign_ones() -> None:
    users = parse_room_hash(
        "room-1",
        {
            f"m:{B}".encode(): b"anchor",
            f"t:{B}".encode(): str(NOW).encode(),
            f"m:{A}": "host",
            f"t:{A}": str(NOW - 10),
            f"n:{A}": "Ann",
            f"mu:{A}": "1",
            f"tk:{A}": "1",
            f"s:{A}": f"{NOW - 1000},onair,2",
            "m:not-a-uuid": "anchor",
            f"s:{'c' * 8}": "garbage",
            "stray": "x",
            f"m:{'1' * 8}-1111-4111-8111-111111111111": "king",  # unknown role: not a user
        },
    )
    assert [u.user_id for u in users.users] == [A, B]  # oldest first
    a, b = users.users
    assert (a.role, a.display_name, a.muted, a.talking) == (MemberRole.HOST, "Ann", True, True)
    assert a.status == StoredStatus(ts_ms=NOW - 1000, status=MemberStatus.ONAIR, gen=2)
    assert b.status is None and b.role is MemberRole.ANCHOR
    assert users.connected(NOW) == 1
    members = users.members(NOW)
    assert members[0].connected and members[0].talking and members[0].status is MemberStatus.ONAIR
    assert not members[1].connected and members[1].status is None


def test_connected_and_holding_a_place_end_at_30_s() -> None:
    users = parse_room_hash(
        "room-1",
        {f"m:{A}": "anchor", f"s:{A}": f"{NOW},idle,1", f"m:{B}": "anchor", f"t:{B}": str(NOW)},
    )
    a, b = users.users if users.users[0].user_id == A else reversed(users.users)
    assert a.is_connected(NOW + 29_999) and not a.is_connected(NOW + 30_000)
    assert b.holds_place(NOW + 29_999) and not b.holds_place(NOW + 30_000)
    assert not b.is_connected(NOW)  # created, never connected
    stale = a.member(NOW + 30_000)
    assert stale.status is MemberStatus.LEFT and not stale.connected  # what the expiry writes
    left = parse_room_hash("r-1", {f"m:{A}": "anchor", f"s:{A}": f"{NOW},left,4", f"t:{A}": str(NOW)}).users[
        0
    ]
    assert not left.holds_place(NOW)  # left counts no more, even when just created
