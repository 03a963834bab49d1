"""The reconcile cache's revision rules on fake events: newer wins, deletes leave tombstones, and
a snapshot's floor keeps a replayed older put from bringing back a key deleted before it."""

from __future__ import annotations

from common.keys import StateKey
from common.reconcile import StateCache, Target

ROOM = StateKey("rooms", "room1", "livemeta")
OTHER_KIND = StateKey("rooms", "room1", "meta")


def test_a_newer_put_replaces_and_an_older_one_is_ignored() -> None:
    cache = StateCache()
    assert cache.apply_put(ROOM, "v5", 5)
    assert not cache.apply_put(ROOM, "v3", 3)
    assert not cache.apply_put(ROOM, "v5 again", 5)
    assert cache.apply_put(ROOM, "v7", 7)
    assert cache.get("rooms", "room1", "livemeta") == "v7"


def test_a_tombstone_stops_an_older_put_between_snapshots() -> None:
    cache = StateCache()
    cache.apply_put(ROOM, "v5", 5)
    assert cache.apply_delete(ROOM, 8)
    assert not cache.apply_put(ROOM, "v5", 5)
    assert cache.get("rooms", "room1", "livemeta") is None
    # a put newer than the delete is a real re-creation
    assert cache.apply_put(ROOM, "v9", 9)


def test_the_floor_stops_a_replayed_put_after_the_tombstone_is_gone() -> None:
    cache = StateCache()
    cache.apply_put(ROOM, "v5", 5)
    cache.apply_delete(ROOM, 8)
    # A resync at revision 10 no longer needs the tombstone: the floor takes over.
    cache.set_floor("rooms", 10)
    assert cache._tombstones == {}
    assert cache.floor("rooms") == 10
    assert not cache.apply_put(ROOM, "v5", 5)  # the replay the issue describes
    assert not cache.apply_put(ROOM, "v10", 10)
    assert cache.get("rooms", "room1", "livemeta") is None
    assert cache.targets() == []  # an ignored put leaves no empty target behind
    assert cache.apply_put(ROOM, "v11", 11)


def test_the_floor_does_not_stop_updates_of_keys_the_cache_holds() -> None:
    cache = StateCache()
    cache.apply_put(ROOM, "v5", 5)
    cache.set_floor("rooms", 10)
    # Events may trail the snapshot: an update of a known key at or below the floor is still
    # compared with the key's own revision only.
    assert cache.apply_put(ROOM, "v7", 7)
    assert cache.get("rooms", "room1", "livemeta") == "v7"
    # a kind this target does not hold yet is unknown: the floor applies to it
    assert not cache.apply_put(OTHER_KIND, "m6", 6)
    assert cache.view(Target("rooms", "room1")) == {"livemeta": "v7"}


def test_floors_are_per_collection_and_only_rise() -> None:
    cache = StateCache()
    cache.set_floor("rooms", 10)
    cache.set_floor("rooms", 4)
    assert cache.floor("rooms") == 10
    mixer = StateKey("mixers", "mixer1", "heartbeat")
    assert cache.floor("mixers") == 0
    assert cache.apply_put(mixer, "hb", 6)


def test_tombstones_above_the_floor_survive_it() -> None:
    cache = StateCache()
    cache.apply_put(ROOM, "v5", 5)
    cache.apply_delete(ROOM, 12)  # applied while a snapshot at 10 was being read
    cache.set_floor("rooms", 10)
    assert not cache.apply_put(ROOM, "v11", 11)
    other = StateKey("januses", "janus1", "heartbeat")
    cache.apply_delete(other, 3)
    cache.set_floor("rooms", 20)
    assert other in cache._tombstones  # another collection's floor does not cover it


def test_a_delete_below_the_floor_of_an_unknown_key_leaves_no_tombstone() -> None:
    cache = StateCache()
    cache.set_floor("rooms", 10)
    assert not cache.apply_delete(ROOM, 9)
    assert cache._tombstones == {}
    assert not cache.apply_delete(ROOM, 11)
    assert cache._tombstones == {ROOM: 11}
