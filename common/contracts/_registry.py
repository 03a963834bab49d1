"""The contracts registry: one entry per NATS subject pattern, and payload validation.

Each entry gives the address with placeholders, the payload's JSON Schema (generated from the
record classes in common.records), who produces and who consumes it, and an example built
from a real record, so the example is known to decode. A core NATS request/reply subject has
no stream (``stream == ""``) and the JSON Schema of its successful reply in ``reply``; its
producers send the request, its consumers answer it. ``validate_payload`` finds the entry of
a concrete subject and validates a payload with jsonschema; contract tests use it on what a
real producer sent.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

import attrs
import jsonschema.protocols
from jsonschema.exceptions import best_match

from common.contracts._schema import record_schema, strict_validator
from common.errors import InvalidInput
from common.ids import ID_PATTERN, is_valid_id
from common.keys import (
    DLQ_STREAM,
    EVENTS_STREAM,
    KINDS,
    STATE_STREAM,
    Collection,
    Kind,
)
from common.records import (
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
    Member,
    MemberRole,
    MemberStatus,
    MigrationKind,
    MigrationReason,
    MixerRecord,
    MixerStatus,
    ModuleStatus,
    RoomMembers,
    RoomMeta,
    RoomMigrated,
    StateEvent,
    UserAction,
    UserCommand,
    UserStatusReport,
    UserStatusReports,
    record_type,
    unstructure,
)

__all__ = [
    "OPERATOR",
    "STATE_RELAY",
    "Contract",
    "camel_case",
    "contract_for",
    "contracts",
    "pascal_case",
    "validate_payload",
]

logger = logging.getLogger(__name__)

# The producer name of the state relay (common/relay.py), which republishes any etcd change a
# writer did not publish itself (lease expiries, a crash between commit and publish).
STATE_RELAY = "state_relay"
OPERATOR = "operator"

_TOKEN_PATTERN = "^[A-Za-z0-9_-]{1,64}$"


@attrs.frozen(kw_only=True)
class Parameter:
    """A placeholder in an address: what it stands for and the token pattern it must match."""

    name: str
    description: str
    pattern: str = ID_PATTERN


@attrs.frozen(kw_only=True)
class Contract:
    """One subject pattern: address, payload schema, producers, consumers, example."""

    name: str
    address: str
    title: str
    description: str
    stream: str
    payload_type: type[Any]
    schema: Mapping[str, Any] = attrs.field(repr=False)
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    example: Mapping[str, Any] = attrs.field(repr=False)
    parameters: tuple[Parameter, ...] = ()
    headers: Mapping[str, str] = attrs.field(factory=dict)
    # core NATS request/reply: the JSON Schema of a successful reply (errors: common.bus.error_reply)
    reply: Mapping[str, Any] | None = attrs.field(default=None, repr=False)

    @property
    def is_request(self) -> bool:
        return self.reply is not None

    def matches(self, subject: str) -> dict[str, str] | None:
        """The parameter values if ``subject`` is a concrete instance of this address."""
        want = self.address.split(".")
        got = subject.split(".")
        if len(want) != len(got):
            return None
        params = {p.name: p for p in self.parameters}
        values: dict[str, str] = {}
        for w, g in zip(want, got, strict=True):
            if w.startswith("{") and w.endswith("}"):
                param = params[w[1:-1]]
                if not _token_ok(g, param.pattern):
                    return None
                values[param.name] = g
            elif w != g:
                return None
        return values

    def subject(self, **values: str) -> str:
        """A concrete subject of this address (each value validated as its parameter's token)."""
        out = self.address
        for param in self.parameters:
            value = values.get(param.name, "")
            if not _token_ok(value, param.pattern):
                raise InvalidInput("bad subject parameter", field=param.name, value=value)
            out = out.replace("{" + param.name + "}", value)
        return out


def _token_ok(value: str, pattern: str) -> bool:
    if pattern == ID_PATTERN:
        return is_valid_id(value)
    # Parameter patterns are anchored "^...$"; fullmatch on the body keeps "\n" out.
    return re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value, re.ASCII) is not None


# -- examples (real records, fixed times so the generated document is stable) ---------------

_AT = datetime(2025, 12, 5, 12, 3, 12, 387123, tzinfo=UTC)
_ROOM = "room-1"
_JANUS = "janus-1"
_MIXER = "mixer-1"

_RECORD_EXAMPLES: dict[tuple[Collection, Kind], tuple[str, object]] = {
    (Collection.ROOMS, Kind.META): (
        _ROOM,
        RoomMeta(pin="a1b2c3", max_anchors=3, hls_path=f"{_ROOM}/stream.m3u8", created_at=_AT),
    ),
    (Collection.ROOMS, Kind.LIVEMETA): (
        _ROOM,
        LiveMeta(
            status=LiveStatus.ONAIR,
            janus_id=_JANUS,
            mixer_id=_MIXER,
            nonce="5f0c1e9a2b7d4c3e8f10",
            generation=1,
            created_at=_AT,
        ),
    ),
    (Collection.ROOMS, Kind.JANUS): (
        _ROOM,
        JanusRecord(
            janus_id=_JANUS,
            janus_room_id=4242,
            status=JanusStatus.FORWARDING,
            forwarder_stream_id=1_789_012_345,
            generation=1,
            updated_at=_AT,
        ),
    ),
    (Collection.ROOMS, Kind.MIXER): (
        _ROOM,
        MixerRecord(
            id=_MIXER, host="127.0.0.1", port=20000, status=MixerStatus.READY, generation=1, updated_at=_AT
        ),
    ),
    (Collection.JANUSES, Kind.HEARTBEAT): (
        _JANUS,
        Heartbeat(status=ModuleStatus.HEALTHY, host="127.0.0.1", capacity=10, streams=2, started_at=_AT),
    ),
    (Collection.JANUSES, Kind.MARK): (_JANUS, Mark(label=MarkLabel.CORDON)),
    (Collection.MIXERS, Kind.HEARTBEAT): (
        _MIXER,
        Heartbeat(status=ModuleStatus.HEALTHY, host="127.0.0.1", capacity=20, streams=5, started_at=_AT),
    ),
    (Collection.MIXERS, Kind.MARK): (_MIXER, Mark(label=MarkLabel.DRAINING)),
}

# -- who writes and who reads what (docs/architecture.md, State and Services) ------------------

_STATE_PRODUCERS: dict[tuple[Collection, Kind], tuple[str, ...]] = {
    (Collection.ROOMS, Kind.META): ("svc_rooms",),
    (Collection.ROOMS, Kind.LIVEMETA): ("svc_rooms",),
    (Collection.ROOMS, Kind.JANUS): ("svc_janus",),
    (Collection.ROOMS, Kind.MIXER): ("svc_mixer",),
    (Collection.JANUSES, Kind.HEARTBEAT): ("svc_janus",),
    (Collection.JANUSES, Kind.MARK): ("svc_rooms",),
    (Collection.MIXERS, Kind.HEARTBEAT): ("svc_mixer",),
    (Collection.MIXERS, Kind.MARK): ("svc_rooms",),
}

# The services whose reconcile runtime subscribes to the subject (svc_*/reconcile.py INTERESTS;
# tests/unit/common/test_contract_consumers.py checks this against them). Reading a key from
# etcd directly (svc_users: livemeta and meta per request) does not make a consumer.
# Core NATS subscriptions are declared as SUBSCRIPTIONS (svc_users/reconcile.py,
# svc_gateway/__init__.py) and checked the same way.
_STATE_CONSUMERS: dict[tuple[Collection, Kind], tuple[str, ...]] = {
    # pin for the AudioBridge room and for joins; svc_users removes a deleted room's users
    (Collection.ROOMS, Kind.META): ("svc_rooms", "svc_janus", "svc_users"),
    # who serves the room; the nonce keys the HLS encryption (svc_mixer)
    (Collection.ROOMS, Kind.LIVEMETA): ("svc_rooms", "svc_janus", "svc_mixer"),
    # janusRoomId and status for migration and stats; svc_janus holds its own record;
    # forwarderStreamId: a replaced RTP stream restarts the room's FFmpeg (svc_mixer)
    (Collection.ROOMS, Kind.JANUS): ("svc_rooms", "svc_janus", "svc_mixer"),
    # the RTP forward target (svc_janus); rtpPort in the room API; svc_mixer holds its own record
    (Collection.ROOMS, Kind.MIXER): ("svc_rooms", "svc_janus", "svc_mixer"),
    # picking and migration
    (Collection.JANUSES, Kind.HEARTBEAT): ("svc_rooms",),
    (Collection.JANUSES, Kind.MARK): ("svc_rooms",),
    (Collection.MIXERS, Kind.HEARTBEAT): ("svc_rooms",),
    (Collection.MIXERS, Kind.MARK): ("svc_rooms",),
}

_SERVICES = ("svc_rooms", "svc_janus", "svc_mixer", "svc_gateway", "svc_users")

_PARAM_DESCRIPTIONS = {
    Collection.ROOMS: ("roomId", "The room id ([A-Za-z0-9_-]{3,32})."),
    Collection.JANUSES: ("janusId", "The Janus module id ([A-Za-z0-9_-]{3,32})."),
    Collection.MIXERS: ("mixerId", "The mixer module id ([A-Za-z0-9_-]{3,32})."),
}


def pascal_case(*parts: str) -> str:
    """``("svc_rooms", "meta")`` -> ``SvcRoomsMeta``: every ``_`` or ``-`` separated word capitalised."""
    return "".join(w[:1].upper() + w[1:] for part in parts for w in part.replace("-", "_").split("_"))


def camel_case(*parts: str) -> str:
    """``("state", "rooms", "meta")`` -> ``stateRoomsMeta``."""
    out = pascal_case(*parts)
    return out[:1].lower() + out[1:]


def _state_schema(collection: Collection, kind: Kind) -> dict[str, Any]:
    schema = record_schema(StateEvent)
    value_schema = record_schema(record_type(kind), dialect=False)
    cls_name = value_schema["title"]
    schema["title"] = f"StateEvent[{collection.value}.{kind.value}]"
    # The key is the etcd key of this kind; the prefix is configurable, the tail is not.
    schema["properties"]["key"]["pattern"] = f"/[A-Za-z0-9_-]{{3,32}}/{kind.value}$"
    # Nullable object rather than anyOf [record, null]: the object keywords ignore null, and
    # an invalid record then reports its own path ($.value.janusId), not "no branch matched".
    value_schema["type"] = ["object", "null"]
    value_schema["description"] = f"The {cls_name} record after the change; null for a delete."
    schema["properties"]["value"] = value_schema
    return schema


def _state_contract(collection: Collection, kind: Kind) -> Contract:
    param_name, param_doc = _PARAM_DESCRIPTIONS[collection]
    id_, record = _RECORD_EXAMPLES[(collection, kind)]
    cls = record_type(kind)
    example = StateEvent.for_put(
        f"/{collection.value}/{id_}/{kind.value}", record, revision=1207, mod_revision=1207
    )
    return Contract(
        name=camel_case("state", collection.value, kind.value),
        address=f"rtc.state.{collection.value}.{{{param_name}}}.{kind.value}",
        title=f"{collection.value} {kind.value} changed",
        description=(
            f"Every change of the etcd key {{prefix}}{{{param_name}}}/{kind.value} ({cls.__name__}): "
            "a put, a delete or a lease expiry. Published by the writer right after its etcd "
            "transaction and by the state relay for anything missed; JetStream dedups on "
            "Nats-Msg-Id, consumers ignore a modRevision not newer than the one they hold."
        ),
        stream=STATE_STREAM,
        payload_type=StateEvent,
        schema=_state_schema(collection, kind),
        producers=(*_STATE_PRODUCERS[(collection, kind)], STATE_RELAY),
        consumers=_STATE_CONSUMERS[(collection, kind)],
        example=unstructure(example),
        parameters=(Parameter(name=param_name, description=param_doc),),
        headers={"Nats-Msg-Id": "<key>@<revision>: JetStream drops a duplicate of the same change."},
    )


def _event_contracts() -> list[Contract]:
    room = Parameter(name="roomId", description="The room id ([A-Za-z0-9_-]{3,32}).")
    migrated = RoomMigrated(
        room_id=_ROOM,
        kind=MigrationKind.MIXER,
        from_=_MIXER,
        to="mixer-2",
        generation=2,
        reason=MigrationReason.LEASE_EXPIRED,
        at=_AT,
    )
    restarted = JanusRestarted(room_id=_ROOM, janus_id=_JANUS, janus_room_id=4242, at=_AT)
    return [
        Contract(
            name="eventsRoomsMigrated",
            address="rtc.events.rooms.{roomId}.migrated",
            title="room migrated",
            description=(
                "svc_rooms moved the room to another Janus or mixer (its module's lease expired, or "
                "the module was marked draining/unready); livemeta.generation was incremented. "
                "svc_gateway asks the room's anchors connected to it to reconnect (notification "
                "reconnect {reason: migrated})."
            ),
            stream=EVENTS_STREAM,
            payload_type=RoomMigrated,
            schema=record_schema(RoomMigrated),
            producers=("svc_rooms",),
            consumers=("svc_gateway",),
            example=unstructure(migrated),
            parameters=(room,),
        ),
        Contract(
            name="eventsRoomsJanusRestarted",
            address="rtc.events.rooms.{roomId}.janus_restarted",
            title="janus restarted",
            description=(
                "svc_janus found its Janus restarted (session lost) and rebuilt the room's "
                "AudioBridge room; anchors' WebRTC sessions are gone. svc_gateway asks the room's "
                "anchors connected to it to reconnect (notification reconnect {reason: janus_restarted})."
            ),
            stream=EVENTS_STREAM,
            payload_type=JanusRestarted,
            schema=record_schema(JanusRestarted),
            producers=("svc_janus",),
            consumers=("svc_gateway",),
            example=unstructure(restarted),
            parameters=(room,),
        ),
    ]


_USER = "0b7e3a4c-5d6f-4a1b-8c2d-3e4f5a6b7c8d"
_USER2 = "5f1c2d3e-4a5b-4c6d-9e7f-8a9b0c1d2e3f"


def _users_contracts() -> list[Contract]:
    room = Parameter(name="roomId", description="The room id ([A-Za-z0-9_-]{3,32}).")
    members = RoomMembers(
        room_id=_ROOM,
        members=[
            Member(
                user_id=_USER,
                role=MemberRole.HOST,
                status=MemberStatus.ONAIR,
                connected=True,
                talking=True,
                display_name="Ann",
            ),
            Member(user_id=_USER2, role=MemberRole.ANCHOR, status=MemberStatus.LEFT, muted=True),
        ],
        at=_AT,
    )
    reports = UserStatusReports(
        reports=[
            UserStatusReport(room_id=_ROOM, user_id=_USER, status=MemberStatus.ONAIR, gen=3, talking=False),
            UserStatusReport(room_id=_ROOM, user_id=_USER2, status=MemberStatus.LEFT, gen=1),
        ]
    )
    command = UserCommand(room_id=_ROOM, user_id=_USER2, action=UserAction.MUTE, muted=True)
    bool_reply = {"type": "boolean"}
    return [
        Contract(
            name="eventsRoomsMembers",
            address="rtc.events.rooms.{roomId}.members",
            title="room members changed",
            description=(
                "svc_users changed a room's users (created, status report, expiry to left, kick, "
                "mute, room deleted: then the list is empty) and publishes the full member list. "
                "Every svc_gateway process subscribes to all rooms and notifies its connections of "
                "that room (roomStatus)."
            ),
            stream=EVENTS_STREAM,
            payload_type=RoomMembers,
            schema=record_schema(RoomMembers),
            producers=("svc_users",),
            consumers=("svc_gateway",),
            example=unstructure(members),
            parameters=(room,),
        ),
        Contract(
            name="usersStatus",
            address="rtc.users.status",
            title="user status report",
            description=(
                "Core NATS request (no stream), queue group svc_users: a batch of 1 to "
                f"{USER_STATUS_REPORTS_MAX} gateway connections' statuses (at join idle, keepalive "
                "onair/idle, leave left), each with its connection's generation; the gateway "
                "sends the reports of one moment together. svc_users applies them in order "
                "(one Redis pipeline), ignores a gen older than the stored one and publishes one "
                'members event per changed room. Reply {"ok": true, "results": [...]}, one per '
                'report in order: {"changed": bool}, or {"error", "code"} for a report refused on '
                "its own (unknown user 404). A whole request refused (undecodable payload 400, "
                'Redis down 503) is answered {"ok": false, "error", "code", "type"} with the '
                "Nats-Service-Error headers."
            ),
            stream="",
            payload_type=UserStatusReports,
            schema=record_schema(UserStatusReports),
            producers=("svc_gateway",),
            consumers=("svc_users",),
            example=unstructure(reports),
            reply={
                "type": "object",
                "properties": {
                    "ok": {"const": True},
                    "results": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": USER_STATUS_REPORTS_MAX,
                        "items": {
                            "oneOf": [
                                {
                                    "type": "object",
                                    "properties": {"changed": bool_reply},
                                    "required": ["changed"],
                                    "additionalProperties": False,
                                },
                                {
                                    "type": "object",
                                    "properties": {
                                        "error": {"type": "string"},
                                        "code": {"type": "integer", "minimum": 400, "maximum": 599},
                                    },
                                    "required": ["error", "code"],
                                    "additionalProperties": False,
                                },
                            ]
                        },
                    },
                },
                "required": ["ok", "results"],
                "additionalProperties": False,
            },
        ),
        Contract(
            name="gatewayUsers",
            address="rtc.gateway.{serverId}.users",
            title="user command",
            description=(
                "Core NATS request (no stream) to the gateway process holding the user's "
                "connection lock (its value serverId:connId): kick (notify kicked, close 4403) or "
                'mute (AudioBridge configure). Reply {"delivered": bool}; no responder or no '
                "answer in time counts as not delivered."
            ),
            stream="",
            payload_type=UserCommand,
            schema=record_schema(UserCommand),
            producers=("svc_users",),
            consumers=("svc_gateway",),
            example=unstructure(command),
            parameters=(
                Parameter(name="serverId", description="The gateway process id.", pattern=_TOKEN_PATTERN),
            ),
            reply={
                "type": "object",
                "properties": {"delivered": bool_reply},
                "required": ["delivered"],
                "additionalProperties": False,
            },
        ),
    ]


def _dlq_contract() -> Contract:
    example = DeadLetter.build(
        service="svc_janus",
        subject="rtc.state.rooms.room-1.livemeta",
        sequence=88,
        error="RecordDecodeError: cannot decode livemeta at '/rooms/room-1/livemeta': ...",
        data=b'{"key":"/rooms/room-1/livemeta","op":"put","revision":9}',
    )
    return Contract(
        name="dlq",
        address="rtc.dlq.{service}",
        title="dead letter",
        description=(
            "A message a service could never handle (undecodable, or still failing after its "
            "delivery limit), parked for an operator with the original text (cut to 64 KiB)."
        ),
        stream=DLQ_STREAM,
        payload_type=DeadLetter,
        schema=record_schema(DeadLetter),
        producers=_SERVICES,
        consumers=(OPERATOR,),
        example=unstructure(example),
        parameters=(
            Parameter(name="service", description="The service that gave up.", pattern=_TOKEN_PATTERN),
        ),
    )


@cache
def contracts() -> tuple[Contract, ...]:
    """Every contract: 8 state subjects, the room events, the users' subjects, the DLQ (a
    stable order)."""
    state = [_state_contract(c, k) for c in Collection for k in Kind if k in KINDS[c]]
    return (*state, *_event_contracts(), *_users_contracts(), _dlq_contract())


def contract_for(subject: str) -> Contract:
    """The contract of a concrete subject; ``InvalidInput`` if no pattern matches it."""
    for contract in contracts():
        if contract.matches(subject) is not None:
            return contract
    raise InvalidInput("no contract for subject", subject=subject)


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    contract = next(c for c in contracts() if c.name == name)
    return strict_validator(contract.schema)


def validate_payload(subject: str, payload: bytes | str | Mapping[str, Any]) -> Contract:
    """Validate ``payload`` against the contract of ``subject``; return that contract.

    Raises ``InvalidInput`` naming the subject and the JSON path of the (most relevant) error,
    when the payload is not JSON, does not match the schema, or no contract matches the subject.
    """
    contract = contract_for(subject)
    if isinstance(payload, Mapping):
        document: Any = dict(payload)
    else:
        try:
            document = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(
                f"payload on {subject} is not JSON: {exc}", subject=subject, path="$", contract=contract.name
            ) from None
    error = best_match(_validator(contract.name).iter_errors(document))
    if error is not None:
        raise InvalidInput(
            f"payload on {subject} does not match {contract.name}: {error.message} at {error.json_path}",
            subject=subject,
            path=error.json_path,
            contract=contract.name,
        )
    return contract
