"""Contracts: registry shape, schema-vs-record agreement, payload validation, AsyncAPI build."""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from common.contracts import (
    OPERATOR,
    STATE_RELAY,
    Contract,
    contract_for,
    contracts,
    record_schema,
    strict_validator,
    validate_payload,
)
from common.contracts.asyncapi import build_document, render
from common.errors import InvalidInput
from common.keys import KINDS, Collection, StateKey, state_subject
from common.records import (
    DeadLetter,
    Heartbeat,
    JanusRecord,
    JanusRestarted,
    LiveMeta,
    Mark,
    MixerRecord,
    RecordDecodeError,
    RoomMeta,
    RoomMigrated,
    StateEvent,
    UserStatusReports,
    decode_payload,
    decode_record,
    encode_record,
    format_time,
    unstructure,
    wire_name,
)
from tests.unit.common import test_records as rs

SERVICES = {"svc_rooms", "svc_janus", "svc_mixer", "svc_gateway", "svc_users"}

STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    RoomMeta: rs.room_metas,
    LiveMeta: st.one_of(rs.onair_livemetas, rs.removing_livemetas),
    JanusRecord: rs.janus_records,
    MixerRecord: rs.mixer_records,
    Heartbeat: rs.heartbeats,
    Mark: rs.marks,
    StateEvent: rs.state_events,
    RoomMigrated: rs.migrations,
    JanusRestarted: rs.restarts,
    DeadLetter: rs.dead_letters,
    UserStatusReports: rs.status_batches,
}

# Values near every boundary the records have, plus arbitrary JSON.
_EDGE_VALUES: st.SearchStrategy[Any] = st.sampled_from(
    [
        None, True, False, 0, 1, -1, 5, 6, 65535, 65536, 2**63 - 1, 2**63, 1.0, 1.5, "", "abc", "ab",
        "a.b", "abc\n", "a" * 33, "abc123", "abc12!", "2025-12-05T12:03:12Z", "2025-12-05T12:03:12",
        "2025-02-30T00:00:00Z", "onair", "removing", "ready", "cordon", "healthy", "forwarding",
        "put", "delete", "janus", "lease_expired", {}, [], {"a": 1},
    ]
)  # fmt: skip
_ANY_VALUE = st.one_of(_EDGE_VALUES, rs.json_values, rs.ids, rs.times.map(format_time))


# -- registry ------------------------------------------------------------------------------


def test_one_state_contract_per_collection_and_kind() -> None:
    state = [c for c in contracts() if c.address.startswith("rtc.state.")]
    pairs = {(c.address.split(".")[2], c.address.split(".")[4]) for c in state}
    expected = {(col.value, k.value) for col in Collection for k in KINDS[col]}
    assert pairs == expected
    assert len(state) == len(expected) == 8


def test_event_and_dlq_contracts_exist() -> None:
    addresses = {c.address for c in contracts()}
    assert {
        "rtc.events.rooms.{roomId}.migrated",
        "rtc.events.rooms.{roomId}.janus_restarted",
        "rtc.dlq.{service}",
    } <= addresses


def test_names_and_addresses_are_unique_and_parameters_declared() -> None:
    items = contracts()
    assert len({c.name for c in items}) == len(items)
    assert len({c.address for c in items}) == len(items)
    for c in items:
        placeholders = re.findall(r"\{(\w+)\}", c.address)
        assert placeholders == [p.name for p in c.parameters], c.name
        assert c.stream in {"RTC_STATE", "RTC_EVENTS", "RTC_DLQ"} or (c.stream == "" and c.is_request)


def test_producers_and_consumers_are_known() -> None:
    for c in contracts():
        assert c.producers, c.name
        assert c.consumers, c.name
        assert set(c.producers) <= SERVICES | {STATE_RELAY}
        assert set(c.consumers) <= SERVICES | {OPERATOR}
        if c.address.startswith("rtc.state."):
            assert STATE_RELAY in c.producers


def test_state_producers_follow_the_key_writers() -> None:
    by_address = {c.address: c for c in contracts()}
    assert by_address["rtc.state.rooms.{roomId}.livemeta"].producers == ("svc_rooms", STATE_RELAY)
    assert by_address["rtc.state.rooms.{roomId}.janus"].producers == ("svc_janus", STATE_RELAY)
    assert by_address["rtc.state.rooms.{roomId}.mixer"].producers == ("svc_mixer", STATE_RELAY)
    assert by_address["rtc.state.mixers.{mixerId}.heartbeat"].producers == ("svc_mixer", STATE_RELAY)
    assert by_address["rtc.state.januses.{janusId}.mark"].producers == ("svc_rooms", STATE_RELAY)
    assert "svc_mixer" in by_address["rtc.state.rooms.{roomId}.livemeta"].consumers


@pytest.mark.parametrize(
    ("subject", "name"),
    [
        ("rtc.state.rooms.r1x.meta", "stateRoomsMeta"),
        ("rtc.state.rooms.room-1.livemeta", "stateRoomsLivemeta"),
        ("rtc.state.mixers.mixer-1.heartbeat", "stateMixersHeartbeat"),
        ("rtc.state.januses.j_1.mark", "stateJanusesMark"),
        ("rtc.events.rooms.r1x.migrated", "eventsRoomsMigrated"),
        ("rtc.events.rooms.r1x.janus_restarted", "eventsRoomsJanusRestarted"),
        ("rtc.dlq.svc_rooms", "dlq"),
        ("rtc.events.rooms.r1x.members", "eventsRoomsMembers"),
        ("rtc.users.status", "usersStatus"),
        ("rtc.gateway.0f3c9a2e-1b4d-4e5f-8a6b-7c8d9e0f1a2b.users", "gatewayUsers"),
    ],
)
def test_contract_for_concrete_subjects(subject: str, name: str) -> None:
    assert contract_for(subject).name == name


@pytest.mark.parametrize(
    "subject",
    [
        "rtc.state.rooms.r1x.heartbeat",
        "rtc.state.rooms.*.meta",
        "rtc.state.rooms.>",
        "rtc.state.rooms.ab.meta",
        "rtc.state.rooms.r1x.meta.extra",
        "rtc.events.rooms.r1x.unknown",
        "rtc.dlq.",
        "rtc.dlq.svc rooms",
        "rtc.dlq.a.b",
        "",
    ],
)
def test_contract_for_rejects_unknown_subjects(subject: str) -> None:
    with pytest.raises(InvalidInput) as err:
        contract_for(subject)
    assert err.value.fields["subject"] == subject


@given(rs.ids, st.sampled_from([(c, k) for c in Collection for k in KINDS[c]]))
def test_every_state_subject_has_its_contract(id_: str, pair: tuple[Collection, Any]) -> None:
    subject = state_subject(StateKey(pair[0], id_, pair[1]))
    contract = contract_for(subject)
    assert contract.matches(subject) == {contract.parameters[0].name: id_}
    assert contract.subject(**{contract.parameters[0].name: id_}) == subject


def test_contract_subject_validates_parameters() -> None:
    c = contract_for("rtc.events.rooms.r1x.migrated")
    with pytest.raises(InvalidInput):
        c.subject(roomId="r.1")
    with pytest.raises(InvalidInput):
        c.subject()


# -- examples ------------------------------------------------------------------------------


@pytest.mark.parametrize("contract", contracts(), ids=lambda c: c.name)
def test_example_validates_and_decodes(contract: Contract) -> None:
    subject = contract.subject(
        **{p.name: "svc_janus" if p.name == "service" else "room-1" for p in contract.parameters}
    )
    assert validate_payload(subject, contract.example) is contract
    assert validate_payload(subject, json.dumps(contract.example).encode()) is contract
    payload = decode_payload(contract.payload_type, contract.example, key=subject)
    assert unstructure(payload) == contract.example
    if isinstance(payload, StateEvent):
        kind = contract.address.rsplit(".", 1)[1]
        assert payload.key.endswith(f"/{kind}")
        assert decode_record(kind, payload.value or {}, key=payload.key) is not None


@pytest.mark.parametrize("contract", contracts(), ids=lambda c: c.name)
def test_extra_key_and_wrong_type_fail(contract: Contract) -> None:
    subject = contract.subject(
        **{p.name: "svc_janus" if p.name == "service" else "room-1" for p in contract.parameters}
    )
    extra = {**contract.example, "surprise": 1}
    with pytest.raises(InvalidInput) as err:
        validate_payload(subject, extra)
    assert err.value.fields["subject"] == subject
    assert err.value.fields["path"] == "$"
    first = next(iter(contract.example))
    wrong = {**contract.example, first: 12345 if isinstance(contract.example[first], str) else "x"}
    with pytest.raises(InvalidInput) as err:
        validate_payload(subject, wrong)
    assert err.value.fields["path"] == f"$.{first}"


def test_state_value_errors_name_the_nested_path() -> None:
    subject = "rtc.state.rooms.room-1.livemeta"
    example = dict(contract_for(subject).example)
    example["value"] = {**example["value"], "janusId": "bad.id"}
    with pytest.raises(InvalidInput) as err:
        validate_payload(subject, example)
    assert err.value.fields["path"] == "$.value.janusId"
    # the value schema is the kind's own: a mark is not a livemeta
    example["value"] = {"label": "ready"}
    with pytest.raises(InvalidInput):
        validate_payload(subject, example)


def test_delete_needs_null_value_and_put_needs_object() -> None:
    subject = "rtc.state.mixers.mixer-1.heartbeat"
    delete = {
        "key": "/mixers/mixer-1/heartbeat",
        "op": "delete",
        "revision": 8,
        "modRevision": 8,
        "value": None,
    }
    validate_payload(subject, delete)
    with pytest.raises(InvalidInput):
        validate_payload(subject, {**delete, "op": "put"})
    with pytest.raises(InvalidInput):
        validate_payload(subject, {**delete, "value": {"label": "ready"}})
    with pytest.raises(InvalidInput) as err:
        validate_payload(subject, {**delete, "key": "/mixers/mixer-1/mark"})
    assert err.value.fields["path"] == "$.key"


def test_non_json_and_non_object_payloads() -> None:
    with pytest.raises(InvalidInput) as err:
        validate_payload("rtc.dlq.svc_rooms", b"{nope")
    assert err.value.fields["path"] == "$"
    with pytest.raises(InvalidInput):
        validate_payload("rtc.dlq.svc_rooms", b"[]")


# -- schema generated from the record classes ----------------------------------------------


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
def test_schema_mirrors_the_attrs_fields(cls: type[Any]) -> None:
    schema = record_schema(cls)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    fields = attrs.fields(cls)
    assert list(schema["properties"]) == [wire_name(f.name) for f in fields]
    assert schema["required"] == [wire_name(f.name) for f in fields if f.default is attrs.NOTHING]
    strict_validator(schema)  # a valid draft 2020-12 schema


def test_schema_types() -> None:
    props = record_schema(LiveMeta)["properties"]
    assert props["status"] == {"type": "string", "enum": ["onair", "removing"]}
    assert props["createdAt"] == {"type": "string", "format": "date-time"}
    assert props["discardAt"] == {"type": ["string", "null"], "format": "date-time"}
    assert props["generation"] == {"type": "integer", "minimum": 0, "default": 0}
    assert record_schema(MixerRecord)["properties"]["port"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 65535,
    }
    assert record_schema(JanusRecord)["properties"]["janusRoomId"]["type"] == ["integer", "null"]


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
@given(data=st.data())
def test_schema_and_decoder_agree(cls: type[Any], data: st.DataObject) -> None:
    """Mutate a valid record's JSON one field at a time: the schema and the decoder must
    accept and reject exactly the same documents."""
    doc = unstructure(data.draw(STRATEGIES[cls]))
    names = [wire_name(f.name) for f in attrs.fields(cls)]
    action = data.draw(st.sampled_from(["set", "drop", "add", "none"]))
    if action == "set":
        doc[data.draw(st.sampled_from(names))] = data.draw(_ANY_VALUE)
    elif action == "drop":
        doc.pop(data.draw(st.sampled_from(names)), None)
    elif action == "add":
        doc[data.draw(st.text(max_size=8))] = data.draw(_ANY_VALUE)
    schema_errors = list(strict_validator(record_schema(cls)).iter_errors(doc))
    try:
        decode_payload(cls, encode_or_raw(doc))
        decoded = True
    except RecordDecodeError:
        decoded = False
    assert decoded == (not schema_errors), (doc, [e.message for e in schema_errors])


def encode_or_raw(doc: dict[str, Any]) -> bytes:
    # Through real JSON text, as on the wire.
    return json.dumps(doc).encode()


def test_encoded_records_validate_against_their_schema() -> None:
    example = contract_for("rtc.state.rooms.room-1.meta").example
    meta = decode_record("meta", example["value"])
    assert not list(strict_validator(record_schema(RoomMeta)).iter_errors(json.loads(encode_record(meta))))


_T = "2025-12-05T12:03:12Z"
_META = {"pin": "", "maxAnchors": 1, "hlsPath": "x", "createdAt": _T}


@pytest.mark.parametrize(
    ("schema_cls", "doc", "ok"),
    [
        (RoomMeta, {**_META, "maxAnchors": 1.0}, False),
        (RoomMeta, {**_META, "maxAnchors": True}, False),
        (RoomMeta, {**_META, "createdAt": "2025-12-05 12:03:12"}, False),
        (RoomMeta, _META, True),
        (Mark, {"label": "ready", "x": 1}, False),
        (MixerRecord, {"id": "abc\n", "host": "h", "port": 1, "status": "ready", "updatedAt": _T}, False),
    ],
)
def test_strict_validator_semantics(schema_cls: type[Any], doc: dict[str, Any], ok: bool) -> None:
    errors = list(strict_validator(record_schema(schema_cls)).iter_errors(doc))
    assert (not errors) == ok


# -- AsyncAPI ------------------------------------------------------------------------------


def test_asyncapi_document_is_consistent() -> None:
    doc = build_document()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["servers"]["local"]["protocol"] == "nats"
    channels, messages = doc["channels"], doc["components"]["messages"]
    by_name = {c.name: c for c in contracts()}
    assert set(channels) == {c.name for c in contracts()} == set(messages)
    for name, channel in channels.items():
        for param in re.findall(r"\{(\w+)\}", channel["address"]):
            assert param in channel["parameters"]
        ref = channel["messages"][name]["$ref"]
        assert ref == f"#/components/messages/{name}"
        assert "$schema" not in messages[name]["payload"]
        assert messages[name]["examples"][0]["payload"] == by_name[name].example
    for op in doc["operations"].values():
        channel_name = op["channel"]["$ref"].rsplit("/", 1)[1]
        assert channel_name in channels
        assert op["messages"] == [{"$ref": f"#/channels/{channel_name}/messages/{channel_name}"}]
        assert op["action"] in {"send", "receive"}
    expected_ops = sum(len(c.producers) + len(c.consumers) for c in contracts())
    assert len(doc["operations"]) == expected_ops


def test_render_is_deterministic_yaml() -> None:
    text = render()
    assert text == render()
    assert yaml.safe_load(text) == build_document()
    assert "&id" not in text  # no YAML anchors/aliases
