"""Records: hypothesis round trips, golden wire shapes and strict decoding naming key and field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidInput
from common.keys import Kind
from common.records import (
    DEAD_LETTER_PAYLOAD_MAX_CHARS,
    USER_STATUS_REPORTS_MAX,
    DeadLetter,
    Heartbeat,
    JanusRecord,
    JanusRestarted,
    JanusStatus,
    LiveMeta,
    LiveStatus,
    Mark,
    MarkLabel,
    MemberStatus,
    MigrationKind,
    MigrationReason,
    MixerRecord,
    MixerStatus,
    ModuleStatus,
    RecordDecodeError,
    RoomMeta,
    RoomMigrated,
    StateEvent,
    StateOp,
    UserStatusReport,
    UserStatusReports,
    decode_event,
    decode_payload,
    decode_record,
    encode_record,
    format_time,
    parse_time,
    record_kinds,
    record_type,
    unstructure,
    wire_name,
)

# -- strategies ----------------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9_-]{3,32}", fullmatch=True)
texts = st.text(min_size=1, max_size=30)
times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.sampled_from([UTC])
)
# Any offset: the record normalises to UTC and equality is by instant.
aware_times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.timezones()
)
non_neg = st.integers(min_value=0, max_value=2**53)

room_metas = st.builds(
    RoomMeta,
    pin=st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9]{6}", fullmatch=True)),
    max_anchors=st.integers(1, 5),
    hls_path=texts,
    created_at=aware_times,
)
onair_livemetas = st.builds(
    LiveMeta,
    status=st.just(LiveStatus.ONAIR),
    janus_id=ids,
    mixer_id=ids,
    nonce=st.text(max_size=20),
    generation=non_neg,
    created_at=times,
    discard_at=st.none() | times,
)
removing_livemetas = st.builds(
    LiveMeta,
    status=st.just(LiveStatus.REMOVING),
    janus_id=st.just("") | ids,
    mixer_id=st.just("") | ids,
    nonce=st.text(max_size=20),
    generation=non_neg,
    created_at=times,
    discard_at=times,
)
janus_records = st.builds(
    JanusRecord,
    janus_id=ids,
    janus_room_id=st.none() | st.integers(1, 2**63 - 1),
    status=st.sampled_from(JanusStatus),
    forwarder_stream_id=st.none() | st.integers(0, 2**32 - 1),
    generation=non_neg,
    updated_at=times,
)
mixer_records = st.builds(
    MixerRecord,
    id=ids,
    host=texts,
    port=st.integers(1, 65535),
    status=st.sampled_from(MixerStatus),
    generation=non_neg,
    updated_at=times,
)
heartbeats = st.builds(
    Heartbeat,
    status=st.sampled_from(ModuleStatus),
    host=texts,
    capacity=non_neg,
    streams=non_neg,
    started_at=times,
)
marks = st.builds(Mark, label=st.sampled_from(MarkLabel))
etcd_records = st.one_of(
    room_metas, onair_livemetas, removing_livemetas, janus_records, mixer_records, heartbeats, marks
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
state_events = st.one_of(
    st.builds(
        StateEvent,
        key=texts,
        op=st.just(StateOp.PUT),
        revision=st.integers(1, 2**62),
        mod_revision=st.integers(1, 2**62),
        value=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    ),
    st.builds(
        StateEvent,
        key=texts,
        op=st.just(StateOp.DELETE),
        revision=st.integers(1, 2**62),
        mod_revision=st.integers(1, 2**62),
        value=st.none(),
    ),
)
migrations = st.builds(
    RoomMigrated,
    room_id=ids,
    kind=st.sampled_from(MigrationKind),
    from_=st.just("") | ids,
    to=ids,
    generation=non_neg,
    reason=st.sampled_from(MigrationReason),
    at=times,
)
restarts = st.builds(
    JanusRestarted, room_id=ids, janus_id=ids, janus_room_id=st.integers(1, 2**63 - 1), at=times
)
dead_letters = st.builds(
    DeadLetter,
    service=ids,
    subject=texts,
    sequence=non_neg,
    error=st.text(max_size=50),
    payload=st.text(max_size=200),
)
user_ids = st.uuids(version=4).map(str)
status_reports = st.builds(
    UserStatusReport,
    room_id=ids,
    user_id=user_ids,
    status=st.sampled_from(MemberStatus),
    gen=st.integers(1, 2**53),
    talking=st.none() | st.booleans(),
    muted=st.none() | st.booleans(),
)
status_batches = st.builds(UserStatusReports, reports=st.lists(status_reports, min_size=1, max_size=5))

_KIND_OF = {
    RoomMeta: Kind.META,
    LiveMeta: Kind.LIVEMETA,
    JanusRecord: Kind.JANUS,
    MixerRecord: Kind.MIXER,
    Heartbeat: Kind.HEARTBEAT,
    Mark: Kind.MARK,
}


# -- round trips ---------------------------------------------------------------------------


@given(etcd_records)
def test_etcd_record_round_trip(record: Any) -> None:
    kind = _KIND_OF[type(record)]
    raw = encode_record(record)
    assert decode_record(kind, raw, key="/k") == record
    assert decode_record(kind, raw.decode()) == record
    assert decode_record(kind, json.loads(raw)) == record
    # compact, UTF-8 and camelCase only
    assert raw == json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode()
    assert all("_" not in name for name in json.loads(raw))


@given(state_events)
def test_state_event_round_trip(event: StateEvent) -> None:
    raw = encode_record(event)
    assert decode_event(raw, subject="rtc.state.rooms.r1x.meta") == event
    assert set(json.loads(raw)) == {"key", "op", "revision", "modRevision", "value"}


@given(st.one_of(migrations, restarts, dead_letters, status_reports, status_batches))
def test_event_payload_round_trip(payload: Any) -> None:
    assert decode_payload(type(payload), encode_record(payload)) == payload


@given(etcd_records)
def test_state_event_carries_a_decodable_record(record: Any) -> None:
    event = StateEvent.for_put("/k/x/y", record, revision=9, mod_revision=7)
    again = decode_event(encode_record(event))
    assert decode_record(_KIND_OF[type(record)], again.value or {}, key=again.key) == record


# -- golden wire shapes (the reference system's names) -------------------------------------

T0 = datetime(2025, 12, 5, 12, 3, 12, 387123, tzinfo=UTC)


@pytest.mark.parametrize(
    ("record", "wire"),
    [
        (
            RoomMeta(pin="abc123", max_anchors=3, hls_path="r1x/stream.m3u8", created_at=T0),
            '{"pin":"abc123","maxAnchors":3,"hlsPath":"r1x/stream.m3u8","createdAt":"2025-12-05T12:03:12.387123Z"}',
        ),
        (
            LiveMeta(
                status=LiveStatus.ONAIR, janus_id="janus1", mixer_id="mixer-1", nonce="ab", created_at=T0
            ),
            '{"status":"onair","janusId":"janus1","mixerId":"mixer-1","nonce":"ab","generation":0,'
            '"createdAt":"2025-12-05T12:03:12.387123Z"}',
        ),
        (
            LiveMeta(
                status=LiveStatus.REMOVING,
                janus_id="",
                mixer_id="",
                nonce="",
                generation=2,
                created_at=T0,
                discard_at=T0.replace(microsecond=0),
            ),
            '{"status":"removing","janusId":"","mixerId":"","nonce":"","generation":2,'
            '"createdAt":"2025-12-05T12:03:12.387123Z","discardAt":"2025-12-05T12:03:12Z"}',
        ),
        (
            JanusRecord(janus_id="janus1", status=JanusStatus.ROOM_CREATED, updated_at=T0),
            '{"janusId":"janus1","status":"room_created","generation":0,"updatedAt":"2025-12-05T12:03:12.387123Z"}',
        ),
        (
            JanusRecord(
                janus_id="janus1",
                janus_room_id=4242,
                status=JanusStatus.FORWARDING,
                forwarder_stream_id=77,
                generation=3,
                updated_at=T0,
            ),
            '{"janusId":"janus1","status":"forwarding","generation":3,"updatedAt":"2025-12-05T12:03:12.387123Z",'
            '"janusRoomId":4242,"forwarderStreamId":77}',
        ),
        (
            MixerRecord(id="mixer-1", host="10.0.0.2", port=20000, status=MixerStatus.READY, updated_at=T0),
            '{"id":"mixer-1","host":"10.0.0.2","port":20000,"status":"ready","generation":0,'
            '"updatedAt":"2025-12-05T12:03:12.387123Z"}',
        ),
        (
            Heartbeat(status=ModuleStatus.HEALTHY, host="h", capacity=10, streams=2, started_at=T0),
            '{"status":"healthy","host":"h","capacity":10,"streams":2,"startedAt":"2025-12-05T12:03:12.387123Z"}',
        ),
        (Mark(label=MarkLabel.CORDON), '{"label":"cordon"}'),
        (
            RoomMigrated(
                room_id="r1x",
                kind=MigrationKind.MIXER,
                from_="m1x",
                to="m2x",
                generation=3,
                reason=MigrationReason.LEASE_EXPIRED,
                at=T0,
            ),
            '{"roomId":"r1x","kind":"mixer","from":"m1x","to":"m2x","generation":3,"reason":"lease_expired",'
            '"at":"2025-12-05T12:03:12.387123Z"}',
        ),
    ],
)
def test_golden_wire(record: Any, wire: str) -> None:
    assert encode_record(record) == wire.encode()


def test_go_time_with_nanoseconds_and_offsets_is_accepted() -> None:
    raw = '{"pin":"","maxAnchors":1,"hlsPath":"x","createdAt":"2025-12-05T12:03:12.387123456Z"}'
    assert decode_record("meta", raw).created_at == T0
    raw = '{"pin":"","maxAnchors":1,"hlsPath":"x","createdAt":"2025-12-05T14:03:12.387123+02:00"}'
    meta = decode_record("meta", raw)
    assert meta.created_at == T0
    assert meta.created_at.tzinfo is UTC


def test_times_are_normalised_to_utc_and_naive_rejected() -> None:
    plus2 = timezone(timedelta(hours=2))
    meta = RoomMeta(pin="", max_anchors=1, hls_path="x", created_at=T0.astimezone(plus2))
    assert meta.created_at.tzinfo is UTC
    with pytest.raises(InvalidInput) as err:
        RoomMeta(pin="", max_anchors=1, hls_path="x", created_at=datetime(2025, 1, 1))
    assert err.value.fields["field"] == "createdAt"


def test_time_helpers() -> None:
    assert format_time(T0) == "2025-12-05T12:03:12.387123Z"
    assert format_time(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"
    assert parse_time("0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=UTC)
    for bad in ["2025-12-05", "2025-12-05T12:03:12", "2025-12-05 12:03:12Z", "2025-02-30T00:00:00Z", "x"]:
        with pytest.raises(ValueError):
            parse_time(bad)


def test_wire_name() -> None:
    assert wire_name("max_anchors") == "maxAnchors"
    assert wire_name("from_") == "from"
    assert wire_name("id") == "id"


def test_record_type_and_kinds() -> None:
    assert record_type("livemeta") is LiveMeta
    assert record_type(Kind.MARK) is Mark
    assert set(record_kinds()) == set(Kind)
    with pytest.raises(InvalidInput):
        record_type("nope")
    with pytest.raises(TypeError):
        unstructure({"not": "a record"})


# -- strict decoding -----------------------------------------------------------------------

KEY = "/rooms/r1x/meta"
GOOD_META: dict[str, Any] = {
    "pin": "abc123",
    "maxAnchors": 3,
    "hlsPath": "r1x/s.m3u8",
    "createdAt": "2025-12-05T12:03:12Z",
}


def _meta_with(**changes: Any) -> dict[str, Any]:
    out = dict(GOOD_META)
    for k, v in changes.items():
        if v is _DROP:
            del out[k]
        else:
            out[k] = v
    return out


_DROP = object()


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (json.dumps(_meta_with(extra=1)), "$.extra", "unknown field"),
        (json.dumps(_meta_with(maxAnchors="3")), "$.maxAnchors", "expected integer, got string"),
        (json.dumps(_meta_with(maxAnchors=True)), "$.maxAnchors", "expected integer, got boolean"),
        (json.dumps(_meta_with(maxAnchors=3.0)), "$.maxAnchors", "expected integer"),
        (json.dumps(_meta_with(maxAnchors=None)), "$.maxAnchors", "expected integer, got null"),
        (json.dumps(_meta_with(pin=123456)), "$.pin", "expected string, got integer"),
        (json.dumps(_meta_with(maxAnchors=_DROP)), "$.maxAnchors", "required field missing"),
        (json.dumps(_meta_with(maxAnchors=9)), "$.maxAnchors", "1..5"),
        (json.dumps(_meta_with(pin="abc")), "$.pin", "6 letters"),
        (json.dumps(_meta_with(hlsPath="")), "$.hlsPath", "empty"),
        (json.dumps(_meta_with(createdAt="yesterday")), "$.createdAt", "RFC3339"),
        (json.dumps(_meta_with(createdAt=1700000000)), "$.createdAt", "got integer"),
        ("not json", "$", "not valid JSON"),
        ('{"pin": "a", "pin": "b"}', "$", "duplicate key"),
        ('{"maxAnchors": NaN}', "$", "not valid JSON"),
        ("[1, 2]", "$", "expected object, got array"),
        ("null", "$", "expected object, got null"),
        (None, "$", "expected object, got null"),  # a delete event's value passed through
        (b"\xff{}", "$", "not valid JSON"),
    ],
)
def test_strict_meta_decoding_names_key_and_field(raw: str | bytes | None, field: str, words: str) -> None:
    with pytest.raises(RecordDecodeError) as err:
        decode_record("meta", raw, key=KEY)
    exc = err.value
    assert isinstance(exc, InvalidInput)
    assert exc.fields["key"] == KEY
    assert exc.fields["kind"] == "meta"
    assert exc.fields["field"] == field
    assert KEY in str(exc)
    assert field in exc.detail
    assert words in exc.detail


def _livemeta(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "status": "onair",
        "janusId": "janus1",
        "mixerId": "mixer-1",
        "nonce": "ab",
        "generation": 0,
        "createdAt": "2025-12-05T12:03:12Z",
    }
    base.update(changes)
    return base


_T = "2025-12-05T12:03:12Z"


def _janus(**changes: Any) -> dict[str, Any]:
    return {"janusId": "j1x", "status": "forwarding", "updatedAt": _T, **changes}


def _mixer(**changes: Any) -> dict[str, Any]:
    return {"id": "m1x", "host": "h", "port": 7000, "status": "ready", "updatedAt": _T, **changes}


def _heartbeat(**changes: Any) -> dict[str, Any]:
    out = {"status": "healthy", "host": "h", "capacity": 1, "streams": 0, "startedAt": _T, **changes}
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(
    ("kind", "value", "field"),
    [
        ("livemeta", _livemeta(status="live"), "$.status"),
        ("livemeta", _livemeta(status=1), "$.status"),
        ("livemeta", _livemeta(janusId="janus.1"), "$.janusId"),
        ("livemeta", _livemeta(janusId=""), "$.janusId"),  # onair needs both modules
        ("livemeta", _livemeta(mixerId="m*"), "$.mixerId"),
        ("livemeta", _livemeta(status="removing", janusId="", mixerId=""), "$.discardAt"),
        ("livemeta", _livemeta(generation=-1), "$.generation"),
        ("livemeta", _livemeta(discardAt=False), "$.discardAt"),
        ("janus", _janus(janusRoomId="5"), "$.janusRoomId"),
        ("janus", _janus(janusRoomId=0), "$.janusRoomId"),
        ("janus", _janus(status="running"), "$.status"),
        ("janus", _janus(generation=1.5), "$.generation"),
        ("janus", _janus(forwarderStreamId="7"), "$.forwarderStreamId"),
        ("janus", _janus(forwarderStreamId=2**32), "$.forwarderStreamId"),
        ("janus", _janus(forwarderStreamId=-1), "$.forwarderStreamId"),
        ("mixer", _mixer(port=70000), "$.port"),
        ("mixer", _mixer(port=0), "$.port"),
        ("mixer", _mixer(id="m/1"), "$.id"),
        ("mixer", _mixer(host=""), "$.host"),
        ("heartbeat", _heartbeat(streams=None), "$.streams"),
        ("heartbeat", _heartbeat(capacity=-1), "$.capacity"),
        ("heartbeat", _heartbeat(status="draining"), "$.status"),
        ("mark", {"label": "READY"}, "$.label"),
        ("mark", {"label": "ready", "ttl": 5}, "$.ttl"),
        ("mark", {}, "$.label"),
    ],
)
def test_strict_decoding_of_every_kind(kind: str, value: dict[str, Any], field: str) -> None:
    key = f"/x/id1/{kind}"
    for raw in (json.dumps(value), json.dumps(value).encode(), value):
        with pytest.raises(RecordDecodeError) as err:
            decode_record(kind, raw, key=key)
        assert err.value.fields["field"] == field, err.value
        assert err.value.fields["key"] == key


def test_all_errors_are_reported_not_just_the_first() -> None:
    with pytest.raises(RecordDecodeError) as err:
        decode_record("meta", _meta_with(pin=1, maxAnchors="2", bogus=0), key=KEY)
    paths = [line.rsplit(" @ ", 1)[1] for line in err.value.errors]
    assert sorted(paths) == ["$.bogus", "$.maxAnchors", "$.pin"]


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"key": "k", "op": "put", "revision": 1, "modRevision": 1, "value": None}, "$.value"),
        ({"key": "k", "op": "delete", "revision": 1, "modRevision": 1, "value": {}}, "$.value"),
        ({"key": "k", "op": "put", "revision": 1, "modRevision": 1, "value": [1]}, "$.value"),
        ({"key": "k", "op": "put", "revision": 0, "modRevision": 1, "value": {}}, "$.revision"),
        ({"key": "k", "op": "put", "revision": 1, "mod_revision": 1, "value": {}}, "$.modRevision"),
        ({"key": "k", "op": "upsert", "revision": 1, "modRevision": 1, "value": {}}, "$.op"),
        ({"key": "", "op": "put", "revision": 1, "modRevision": 1, "value": {}}, "$.key"),
    ],
)
def test_strict_state_event_decoding(value: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordDecodeError) as err:
        decode_event(json.dumps(value), subject="rtc.state.rooms.r1x.meta")
    assert field in [line.rsplit(" @ ", 1)[1] for line in err.value.errors]
    assert err.value.fields["key"] == "rtc.state.rooms.r1x.meta"


def test_constructors_validate_invariants() -> None:
    with pytest.raises(InvalidInput) as err:
        RoomMeta(pin="", max_anchors=0, hls_path="x", created_at=T0)
    assert err.value.fields["field"] == "maxAnchors"
    with pytest.raises(InvalidInput):
        LiveMeta(status=LiveStatus.ONAIR, janus_id="", mixer_id="m1x", nonce="", created_at=T0)
    with pytest.raises(InvalidInput):
        RoomMigrated(
            room_id="r.1", kind=MigrationKind.JANUS, from_="", to="j1x", generation=0,
            reason=MigrationReason.DRAINING, at=T0,
        )  # fmt: skip
    rec = JanusRecord(janus_id="j1x", status=JanusStatus.FORWARDING, updated_at=T0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        rec.status = JanusStatus.NOT_FORWARDING  # type: ignore[misc]
    assert attrs.evolve(rec, status=JanusStatus.NOT_FORWARDING).status is JanusStatus.NOT_FORWARDING


def test_janus_record_written_before_the_forwarder_stream_id_still_decodes() -> None:
    old = f'{{"janusId":"janus1","janusRoomId":4242,"status":"forwarding","generation":1,"updatedAt":"{_T}"}}'
    rec = decode_record("janus", old, key="/rooms/r1x/janus")
    assert isinstance(rec, JanusRecord)
    assert rec.forwarder_stream_id is None and rec.janus_room_id == 4242


def test_dead_letter_build_truncates_and_survives_bad_utf8() -> None:
    data = b"\xff" + b"x" * (DEAD_LETTER_PAYLOAD_MAX_CHARS + 10)
    dl = DeadLetter.build(
        service="svc_rooms", subject="rtc.state.rooms.r1x.meta", sequence=4, error="boom", data=data
    )
    assert len(dl.payload) == DEAD_LETTER_PAYLOAD_MAX_CHARS
    assert dl.payload.startswith("\ufffdx")
    assert decode_payload(DeadLetter, encode_record(dl)) == dl
    with pytest.raises(InvalidInput):
        DeadLetter(
            service="svc_rooms",
            subject="s",
            sequence=0,
            error="",
            payload="y" * (DEAD_LETTER_PAYLOAD_MAX_CHARS + 1),
        )


def test_decoded_enums_are_enum_members() -> None:
    lm = decode_record("livemeta", _livemeta())
    assert lm.status is LiveStatus.ONAIR
    ev = decode_event('{"key":"k","op":"delete","revision":3,"modRevision":3,"value":null}')
    assert ev.op is StateOp.DELETE


_U = "0b7e3a4c-5d6f-4a1b-8c2d-3e4f5a6b7c8d"
_REPORT = {"roomId": "room-1", "userId": _U, "status": "idle", "gen": 1}


@pytest.mark.parametrize(
    ("reports", "paths"),
    [
        ([], ["$.reports"]),
        ([_REPORT] * (USER_STATUS_REPORTS_MAX + 1), ["$.reports"]),
        ({}, ["$.reports"]),
        ("", ["$.reports"]),
        (None, ["$.reports"]),
        ([_REPORT, "x", None], ["$.reports[1]", "$.reports[2]"]),
        (
            [_REPORT, {**_REPORT, "gen": "2"}, {**_REPORT, "bogus": 1}],
            ["$.reports[1].gen", "$.reports[2].bogus"],
        ),
        ([{**_REPORT, "userId": "u1x"}], ["$.reports[0].userId"]),
    ],
)
def test_strict_status_batch_decoding_names_each_item(reports: Any, paths: list[str]) -> None:
    with pytest.raises(RecordDecodeError) as err:
        decode_payload(UserStatusReports, json.dumps({"reports": reports}), key="rtc.users.status")
    assert [line.rsplit(" @ ", 1)[1] for line in err.value.errors] == paths


def test_a_full_status_batch_decodes() -> None:
    batch = decode_payload(UserStatusReports, {"reports": [_REPORT] * USER_STATUS_REPORTS_MAX})
    assert len(batch.reports) == USER_STATUS_REPORTS_MAX
    assert batch.reports[0] == UserStatusReport(room_id="room-1", user_id=_U, status=MemberStatus.IDLE, gen=1)
