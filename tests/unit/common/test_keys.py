"""etcd keys and NATS subjects: building, parsing and the reference's parsing edge cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidInput
from common.keys import (
    DLQ_STREAM,
    DLQ_SUBJECTS,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    KINDS,
    STATE_STREAM,
    STATE_SUBJECTS,
    Collection,
    Keyspace,
    Kind,
    StateKey,
    dlq_subject,
    event_subject,
    msg_id,
    parse_state_subject,
    state_filter,
    state_subject,
)

KS = Keyspace()


def test_default_prefixes_and_stream_constants() -> None:
    assert (KS.prefix("rooms"), KS.prefix("januses"), KS.prefix("mixers")) == (
        "/rooms/",
        "/januses/",
        "/mixers/",
    )
    assert (STATE_STREAM, STATE_SUBJECTS) == ("RTC_STATE", "rtc.state.>")
    assert (EVENTS_STREAM, EVENTS_SUBJECTS) == ("RTC_EVENTS", "rtc.events.>")
    assert (DLQ_STREAM, DLQ_SUBJECTS) == ("RTC_DLQ", "rtc.dlq.>")


def test_keys_are_built_under_their_prefix() -> None:
    assert KS.key("rooms", "r1x", "livemeta") == "/rooms/r1x/livemeta"
    assert KS.room_key("room-1", Kind.META) == "/rooms/room-1/meta"
    # The reference built "mixersmixer-1/mark" (BUG); the mark lives under the module prefix.
    assert KS.module_key("mixers", "mixer-1", "mark") == "/mixers/mixer-1/mark"
    assert KS.module_key(Collection.JANUSES, "janus1", Kind.HEARTBEAT) == "/januses/janus1/heartbeat"


@pytest.mark.parametrize(
    ("collection", "id_", "kind", "field"),
    [
        ("rooms", "a.b", "meta", "roomId"),
        ("rooms", "r1x", "heartbeat", "kind"),
        ("mixers", "m1x", "livemeta", "kind"),
        ("mixers", "m x", "mark", "moduleId"),
        ("users", "u1x", "meta", "collection"),
        ("rooms", "r1x", "nope", "kind"),
    ],
)
def test_key_rejects_bad_parts(collection: str, id_: str, kind: str, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        KS.key(collection, id_, kind)
    assert err.value.fields["field"] == field


def test_module_key_rejects_rooms() -> None:
    with pytest.raises(InvalidInput):
        KS.module_key("rooms", "r1x", "meta")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("/rooms/r1x/meta", StateKey(Collection.ROOMS, "r1x", Kind.META)),
        (b"/rooms/r1x/livemeta", StateKey(Collection.ROOMS, "r1x", Kind.LIVEMETA)),
        ("/januses/janus-1/heartbeat", StateKey(Collection.JANUSES, "janus-1", Kind.HEARTBEAT)),
        ("/mixers/mixer_1/mark", StateKey(Collection.MIXERS, "mixer_1", Kind.MARK)),
        # reference edge cases: the Go watcher accepted some of these, we do not
        ("/rooms//meta", None),  # empty id
        ("/rooms/r1x/", None),  # trailing slash, empty kind
        ("/rooms/r1x/meta/", None),
        ("/rooms/a/b/c", None),  # extra segments
        ("/rooms/r1x/meta/extra", None),
        ("/rooms/", None),  # prefix alone
        ("/rooms", None),
        ("/rooms/r\u00e9x/meta", None),  # unicode id
        ("/rooms/\u623f\u95f4\u4e00/meta", None),
        ("/rooms/r1x/heartbeat", None),  # kind not in the collection
        ("/mixers/m1x/meta", None),
        ("/rooms/a.b/meta", None),
        ("/rooms/ab/meta", None),  # too short
        ("/other/r1x/meta", None),
        ("rooms/r1x/meta", None),
        ("", None),
        (b"\xff\xfe", None),  # not UTF-8
        ("mixersmixer-1/mark", None),  # the reference's buggy mark key
    ],
)
def test_parse_table(key: str | bytes, expected: StateKey | None) -> None:
    assert KS.parse(key) == expected


def test_parse_with_custom_prefixes() -> None:
    ks = Keyspace.under("/t-abc/")
    assert ks.rooms == "/t-abc/rooms/"
    assert ks.parse("/t-abc/mixers/m1x/heartbeat") == StateKey(Collection.MIXERS, "m1x", Kind.HEARTBEAT)
    assert ks.parse("/rooms/r1x/meta") is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rooms": "rooms/"},
        {"rooms": "/rooms"},
        {"rooms": "/"},
        {"rooms": ""},
        {"rooms": "/my rooms/"},
        {"rooms": "/x/", "januses": "/x/"},  # same prefix twice
        {"rooms": "/x/", "januses": "/x/y/"},  # nested
    ],
)
def test_keyspace_rejects_bad_prefixes(kwargs: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        Keyspace(**kwargs)


_state_keys = st.sampled_from(list(Collection)).flatmap(
    lambda c: st.builds(
        StateKey,
        st.just(c),
        st.from_regex(r"[A-Za-z0-9_-]{3,32}", fullmatch=True),
        st.sampled_from(sorted(KINDS[c])),
    )
)


@given(_state_keys)
def test_key_and_subject_round_trip(sk: StateKey) -> None:
    key = KS.state_key_of(sk)
    assert KS.parse(key) == sk
    assert KS.parse(key.encode()) == sk
    subject = state_subject(sk)
    assert subject == f"rtc.state.{sk.collection}.{sk.id}.{sk.kind}"
    assert parse_state_subject(subject) == sk


def test_state_key_validates() -> None:
    with pytest.raises(InvalidInput):
        StateKey(Collection.ROOMS, "a.b", Kind.META)
    with pytest.raises(InvalidInput):
        StateKey(Collection.MIXERS, "m1x", Kind.META)
    with pytest.raises(InvalidInput):
        StateKey("users", "u1x", Kind.META)
    assert StateKey("rooms", "r1x", "meta") == StateKey(Collection.ROOMS, "r1x", Kind.META)


@pytest.mark.parametrize(
    "subject",
    [
        "rtc.state.rooms.r1x",
        "rtc.state.rooms.r1x.meta.x",
        "rtc.state.rooms.*.meta",
        "rtc.state.rooms.>",
        "rtc.state.users.u1x.meta",
        "rtc.state.rooms.r1x.heartbeat",
        "rtc.events.rooms.r1x.meta",
        "xtc.state.rooms.r1x.meta",
        "rtc.state.rooms..meta",
        "",
    ],
)
def test_parse_state_subject_rejects(subject: str) -> None:
    assert parse_state_subject(subject) is None


def test_state_filters() -> None:
    assert state_filter("rooms", "livemeta") == "rtc.state.rooms.*.livemeta"
    assert state_filter(Collection.MIXERS) == "rtc.state.mixers.>"
    assert state_filter("januses", Kind.HEARTBEAT) == "rtc.state.januses.*.heartbeat"
    with pytest.raises(InvalidInput):
        state_filter("mixers", "livemeta")


def test_event_and_dlq_subjects() -> None:
    assert event_subject("rooms", "r1x", "migrated") == "rtc.events.rooms.r1x.migrated"
    assert event_subject("rooms", "r1x", "janus_restarted") == "rtc.events.rooms.r1x.janus_restarted"
    assert dlq_subject("svc_rooms") == "rtc.dlq.svc_rooms"
    for bad in [("ro.oms", "r1x", "x"), ("rooms", "r*x", "x"), ("rooms", "r1x", "a b"), ("rooms", "r1x", "")]:
        with pytest.raises(InvalidInput):
            event_subject(*bad)
    with pytest.raises(InvalidInput):
        dlq_subject("svc.rooms")


def test_msg_id() -> None:
    assert msg_id("/rooms/r1x/meta", 42) == "/rooms/r1x/meta@42"
    for bad in (0, -1, True, "3"):
        with pytest.raises(InvalidInput):
            msg_id("/rooms/r1x/meta", bad)  # type: ignore[arg-type]
