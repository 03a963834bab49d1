"""Our wire records: etcd values, state events and domain events, with one strict converter.

One frozen attrs class per etcd value kind (docs/architecture.md, State; names as in the reference system):

    /rooms/{roomId}/meta        RoomMeta      pin, maxAnchors, hlsPath, createdAt
    /rooms/{roomId}/livemeta    LiveMeta      status, janusId, mixerId, nonce, generation,
                                              createdAt, discardAt?
    /rooms/{roomId}/janus       JanusRecord   janusId, janusRoomId?, status, generation, updatedAt
    /rooms/{roomId}/mixer       MixerRecord   id, host, port, status, generation, updatedAt
    /{januses,mixers}/{id}/heartbeat  Heartbeat  status, host, capacity, streams, startedAt
    /{januses,mixers}/{id}/mark       Mark       label

plus the NATS payloads ``StateEvent`` (rtc.state.*), ``RoomMigrated`` and ``JanusRestarted``
(rtc.events.rooms.*) and ``DeadLetter`` (rtc.dlq.*).

Deviations from the reference system's etcd values, on purpose:
- livemeta carries ``generation`` (incremented when a room migrates to another Janus/mixer);
  the janus and mixer records carry the generation they were built for, so a record left by
  the previous owner is recognisable.
- the janus record has ``updatedAt`` (UTC) instead of ``timestamp`` (local time); the mixer
  record is ``{id, host, port, status, generation, updatedAt}`` (``ip`` renamed ``host``).
- the heartbeat carries ``streams`` (current load) next to ``capacity``, and ``status`` is
  ``healthy`` or ``unhealthy``.
- the mark key lives under the module prefix (``/mixers/{id}/mark``), not ``mixers{id}/mark``.
- a "removing" livemeta keeps its ``createdAt`` instead of the Go zero time.

Wire format: camelCase JSON (one rename rule, :func:`wire_name`), times as RFC3339 UTC strings
(``2025-12-05T12:03:12.387123Z``; offsets and up to nanosecond fractions are accepted and
normalised to UTC microseconds), enums by value, ``None`` fields with a ``None`` default omitted.

Decoding is strict (docs/conventions.md, Records): unknown keys, a wrong JSON type (``1`` for a string,
``"1"`` or ``true`` for an int), a bad enum value or an invalid id raise ``RecordDecodeError``
(an ``InvalidInput``) naming the key and the field path; consumers log and skip it. Data we do
not own (Janus replies) is not decoded here.

The ``json_schema`` field metadata mirrors each validator for ``common.contracts``, which
generates the JSON Schemas from these classes; a unit test checks that both agree.
"""

from __future__ import annotations

import enum
import json
import re
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from common.errors import InvalidInput
from common.ids import ID_PATTERN, USER_ID_PATTERN, is_valid_id, is_valid_user_id
from common.keys import Kind

__all__ = [
    "DEAD_LETTER_PAYLOAD_MAX_CHARS",
    "SCHEMA_METADATA",
    "USER_STATUS_REPORTS_MAX",
    "DeadLetter",
    "Heartbeat",
    "JanusRecord",
    "JanusRestarted",
    "JanusStatus",
    "LiveMeta",
    "LiveStatus",
    "Mark",
    "MarkLabel",
    "Member",
    "MemberRole",
    "MemberStatus",
    "MigrationKind",
    "MigrationReason",
    "MixerRecord",
    "MixerStatus",
    "ModuleStatus",
    "RecordDecodeError",
    "RoomMembers",
    "RoomMeta",
    "RoomMigrated",
    "StateEvent",
    "StateOp",
    "UserAction",
    "UserCommand",
    "UserStatusReport",
    "UserStatusReports",
    "decode_event",
    "decode_payload",
    "decode_record",
    "encode_record",
    "format_time",
    "parse_time",
    "record_kinds",
    "record_type",
    "unstructure",
    "wire_name",
]

T = TypeVar("T")

# Field metadata key: the JSON Schema keywords a field's validator enforces (common.contracts).
SCHEMA_METADATA = "json_schema"

DEAD_LETTER_PAYLOAD_MAX_CHARS = 64 * 1024
# reports per rtc.users.status request: one request stays well under NATS' 1 MB payload limit
USER_STATUS_REPORTS_MAX = 500

_OPTIONAL_ID_PATTERN = "^([A-Za-z0-9_-]{3,32})?$"
_PIN_PATTERN = "^([A-Za-z0-9]{6})?$"
_PIN_REGEX = re.compile(r"([A-Za-z0-9]{6})?", re.ASCII)
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


# -- enums (wire values) -------------------------------------------------------------------


class LiveStatus(enum.StrEnum):
    ONAIR = "onair"
    REMOVING = "removing"


class JanusStatus(enum.StrEnum):
    ROOM_CREATED = "room_created"
    FORWARDING = "forwarding"
    NOT_FORWARDING = "not_forwarding"


class MixerStatus(enum.StrEnum):
    READY = "ready"


class ModuleStatus(enum.StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class MarkLabel(enum.StrEnum):
    READY = "ready"
    CORDON = "cordon"
    DRAINING = "draining"
    DRAINED = "drained"
    UNREADY = "unready"


class StateOp(enum.StrEnum):
    PUT = "put"
    DELETE = "delete"


class MemberRole(enum.StrEnum):
    """A room user's role; both speak in the AudioBridge room, a host may also kick and mute."""

    HOST = "host"
    ANCHOR = "anchor"


class MemberStatus(enum.StrEnum):
    """Reported by the user's gateway connection; ``left`` when not refreshed for 30 s."""

    IDLE = "idle"
    ONAIR = "onair"
    LEFT = "left"


class UserAction(enum.StrEnum):
    KICK = "kick"
    MUTE = "mute"


class MigrationKind(enum.StrEnum):
    JANUS = "janus"
    MIXER = "mixer"


class MigrationReason(enum.StrEnum):
    LEASE_EXPIRED = "lease_expired"
    DRAINING = "draining"
    UNREADY = "unready"


# -- naming and time -----------------------------------------------------------------------


def wire_name(attribute_name: str) -> str:
    """The JSON name of an attribute: camelCase; a trailing ``_`` (``from_``) is dropped."""
    head, *rest = attribute_name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def parse_time(value: str) -> datetime:
    """An RFC3339 timestamp with an offset, as an aware UTC datetime (ValueError otherwise)."""
    if _RFC3339.fullmatch(value) is None:
        raise ValueError(f"not an RFC3339 date-time with offset: {value[:40]!r}")
    # fromisoformat (3.11) truncates fractions past microseconds, as Go's nanoseconds need.
    return datetime.fromisoformat(value.upper()).astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC3339 in UTC with a ``Z``, microseconds only when non-zero."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


# -- validators (each raises InvalidInput naming the wire field) ----------------------------


def _fail(attribute: attrs.Attribute[Any], detail: str, value: Any) -> InvalidInput:
    shown = value[:64] if isinstance(value, str) else value
    return InvalidInput(detail, field=wire_name(attribute.name), value=shown)


def _is_id(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not is_valid_id(value):
        raise _fail(attribute, "must be 3-32 characters of A-Z a-z 0-9 _ -", value)


def _is_id_or_empty(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value != "" and not is_valid_id(value):
        raise _fail(attribute, "must be empty or 3-32 characters of A-Z a-z 0-9 _ -", value)


def _is_pin(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or _PIN_REGEX.fullmatch(value) is None:
        raise _fail(attribute, "must be empty or 6 letters/digits", value)


def _non_empty(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value:
        raise _fail(attribute, "must not be empty", value)


def _max_chars(limit: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if len(value) > limit:
            raise _fail(attribute, f"must be at most {limit} characters", len(value))

    return check


def _item_count(lo: int, hi: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not lo <= len(value) <= hi:
            raise _fail(attribute, f"must hold {lo} to {hi} items", len(value))

    return check


def _int_range(lo: int, hi: int | None = None) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if value < lo or (hi is not None and value > hi):
            bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise _fail(attribute, f"must be {bound}", value)

    return check


def _is_utc(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
        raise _fail(attribute, "must be a timezone-aware datetime", value)


def _to_utc(value: datetime) -> datetime:
    # Normalise, don't judge: a naive datetime passes through and _is_utc rejects it.
    return value.astimezone(UTC) if value.tzinfo is not None else value


def _to_utc_opt(value: datetime | None) -> datetime | None:
    return None if value is None else _to_utc(value)


# -- field helpers: validator + schema metadata from one call -------------------------------


def _id_field(*, allow_empty: bool = False) -> Any:
    return attrs.field(
        validator=_is_id_or_empty if allow_empty else _is_id,
        metadata={SCHEMA_METADATA: {"pattern": _OPTIONAL_ID_PATTERN if allow_empty else ID_PATTERN}},
    )


def _int_field(lo: int, hi: int | None = None, **kwargs: Any) -> Any:
    schema: dict[str, Any] = {"minimum": lo}
    if hi is not None:
        schema["maximum"] = hi
    return attrs.field(validator=_int_range(lo, hi), metadata={SCHEMA_METADATA: schema}, **kwargs)


def _text_field() -> Any:
    return attrs.field(validator=_non_empty, metadata={SCHEMA_METADATA: {"minLength": 1}})


# -- etcd value records --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RoomMeta:
    """``/rooms/{roomId}/meta``: what the room is, set once at creation."""

    pin: str = attrs.field(validator=_is_pin, metadata={SCHEMA_METADATA: {"pattern": _PIN_PATTERN}})
    max_anchors: int = _int_field(1, 5)
    hls_path: str = _text_field()
    created_at: datetime = attrs.field(converter=_to_utc, validator=_is_utc)


def _check_livemeta(instance: LiveMeta, attribute: attrs.Attribute[Any], value: Any) -> None:
    # Cross-field rule, run after every field is set: an on-air room has both modules, a
    # removing one has a discard time (housekeeping deletes it a grace period later).
    if instance.status is LiveStatus.ONAIR:
        if not is_valid_id(instance.janus_id):
            raise InvalidInput("an onair livemeta needs a janusId", field="janusId", value=instance.janus_id)
        if not is_valid_id(instance.mixer_id):
            raise InvalidInput("an onair livemeta needs a mixerId", field="mixerId", value=instance.mixer_id)
    elif instance.discard_at is None:
        raise InvalidInput("a removing livemeta needs a discardAt", field="discardAt", value=None)


@attrs.frozen(kw_only=True)
class LiveMeta:
    """``/rooms/{roomId}/livemeta``: whether the room is live and which modules serve it."""

    json_schema_extra: ClassVar[Mapping[str, Any]] = {
        "if": {"properties": {"status": {"const": LiveStatus.ONAIR.value}}},
        "then": {"properties": {"janusId": {"pattern": ID_PATTERN}, "mixerId": {"pattern": ID_PATTERN}}},
        "else": {"required": ["discardAt"], "properties": {"discardAt": {"type": "string"}}},
    }

    status: LiveStatus
    janus_id: str = _id_field(allow_empty=True)
    mixer_id: str = _id_field(allow_empty=True)
    nonce: str
    generation: int = _int_field(0, default=0)
    created_at: datetime = attrs.field(converter=_to_utc, validator=_is_utc)
    discard_at: datetime | None = attrs.field(
        default=None, converter=_to_utc_opt, validator=[_is_utc, _check_livemeta]
    )


@attrs.frozen(kw_only=True)
class JanusRecord:
    """``/rooms/{roomId}/janus``: the AudioBridge room svc_janus built for the room.

    ``forwarder_stream_id`` is the Janus stream id of the RTP forwarder that feeds the room's
    mixer (set while ``status`` is ``forwarding``). Every new forwarder has a new one, also when
    a rebuilt room keeps its Janus room id after a Janus restart: the mixer restarts FFmpeg when
    it changes (a new RTP stream). Absent in records written before the field existed.
    """

    janus_id: str = _id_field()
    janus_room_id: int | None = _int_field(1, 2**63 - 1, default=None)
    status: JanusStatus
    forwarder_stream_id: int | None = _int_field(0, 2**32 - 1, default=None)
    generation: int = _int_field(0, default=0)
    updated_at: datetime = attrs.field(converter=_to_utc, validator=_is_utc)


@attrs.frozen(kw_only=True)
class MixerRecord:
    """``/rooms/{roomId}/mixer``: where the room's mixer listens for the forwarded RTP."""

    id: str = _id_field()
    host: str = _text_field()
    port: int = _int_field(1, 65535)
    status: MixerStatus
    generation: int = _int_field(0, default=0)
    updated_at: datetime = attrs.field(converter=_to_utc, validator=_is_utc)


@attrs.frozen(kw_only=True)
class Heartbeat:
    """``/{januses,mixers}/{id}/heartbeat``: a live module, on a lease."""

    status: ModuleStatus
    host: str = _text_field()
    capacity: int = _int_field(0)
    streams: int = _int_field(0)
    started_at: datetime = attrs.field(converter=_to_utc, validator=_is_utc)


@attrs.frozen(kw_only=True)
class Mark:
    """``/{januses,mixers}/{id}/mark``: the operator's label for a module."""

    label: MarkLabel


# -- NATS payloads -------------------------------------------------------------------------


def _check_state_event(instance: StateEvent, attribute: attrs.Attribute[Any], value: Any) -> None:
    if instance.op is StateOp.PUT and value is None:
        raise InvalidInput("a put event needs a value", field="value", value=None)
    if instance.op is StateOp.DELETE and value is not None:
        raise InvalidInput("a delete event must have a null value", field="value", value="<object>")


@attrs.frozen(kw_only=True)
class StateEvent:
    """The payload of ``rtc.state.<collection>.<id>.<kind>``: one etcd change.

    ``revision`` is the etcd revision of the change, ``mod_revision`` the key's mod revision
    (for a delete, the delete's revision); consumers ignore events not newer than what they
    hold. ``value`` is the record's JSON object (decode it with :func:`decode_record`), or
    ``None`` for a delete.
    """

    json_schema_extra: ClassVar[Mapping[str, Any]] = {
        "if": {"properties": {"op": {"const": StateOp.DELETE.value}}},
        "then": {"properties": {"value": {"type": "null"}}},
        "else": {"properties": {"value": {"type": "object"}}},
    }

    key: str = _text_field()
    op: StateOp
    revision: int = _int_field(1)
    mod_revision: int = _int_field(1)
    value: dict[str, Any] | None = attrs.field(validator=_check_state_event)

    @classmethod
    def for_put(cls, key: str, record: object, *, revision: int, mod_revision: int) -> StateEvent:
        """The event of a put of ``record`` at ``key``."""
        return cls(
            key=key, op=StateOp.PUT, revision=revision, mod_revision=mod_revision, value=unstructure(record)
        )


@attrs.frozen(kw_only=True)
class RoomMigrated:
    """``rtc.events.rooms.{roomId}.migrated``: a room moved to another Janus or mixer."""

    room_id: str = _id_field()
    kind: MigrationKind
    from_: str = _id_field(allow_empty=True)
    to: str = _id_field()
    generation: int = _int_field(0)
    reason: MigrationReason
    at: datetime = attrs.field(converter=_to_utc, validator=_is_utc)


@attrs.frozen(kw_only=True)
class JanusRestarted:
    """``rtc.events.rooms.{roomId}.janus_restarted``: the room's Janus lost its state; rebuilt."""

    room_id: str = _id_field()
    janus_id: str = _id_field()
    janus_room_id: int = _int_field(1, 2**63 - 1)
    at: datetime = attrs.field(converter=_to_utc, validator=_is_utc)


def _is_user_id(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not is_valid_user_id(value):
        raise _fail(attribute, "must be a lowercase uuid4", value)


def _user_id_field() -> Any:
    return attrs.field(validator=_is_user_id, metadata={SCHEMA_METADATA: {"pattern": USER_ID_PATTERN}})


@attrs.frozen(kw_only=True)
class Member:
    """One user of a room as ``GET /api/rooms/{roomId}/users`` and the members event show it.

    ``status`` is None for a user created but never connected; ``connected`` is true while the
    status is ``idle`` or ``onair``.
    """

    user_id: str = _user_id_field()
    role: MemberRole
    status: MemberStatus | None = None
    connected: bool = False
    talking: bool = False
    muted: bool = False
    display_name: str = attrs.field(default="", validator=_max_chars(64))


@attrs.frozen(kw_only=True)
class RoomMembers:
    """``rtc.events.rooms.{roomId}.members``: the full member list after any change."""

    room_id: str = _id_field()
    members: list[Member] = attrs.field(factory=list)
    at: datetime = attrs.field(converter=_to_utc, validator=_is_utc)


@attrs.frozen(kw_only=True)
class UserStatusReport:
    """``rtc.users.status`` request (svc_gateway -> svc_users): a connection's status.

    ``gen`` is the connection's generation (a per-user counter the gateway increments at each
    join): a report with a ``gen`` older than the stored one is ignored. ``talking`` and
    ``muted``, when present, are stored too.
    """

    room_id: str = _id_field()
    user_id: str = _user_id_field()
    status: MemberStatus
    gen: int = _int_field(1)
    talking: bool | None = None
    muted: bool | None = None


@attrs.frozen(kw_only=True)
class UserStatusReports:
    """``rtc.users.status`` request (svc_gateway -> svc_users): a batch of connection statuses.

    The gateway sends the reports of one moment together (1 to ``USER_STATUS_REPORTS_MAX``), in
    the order its connections made them; svc_users applies them in that order and answers one
    result per report.
    """

    reports: list[UserStatusReport] = attrs.field(
        validator=_item_count(1, USER_STATUS_REPORTS_MAX),
        metadata={SCHEMA_METADATA: {"minItems": 1, "maxItems": USER_STATUS_REPORTS_MAX}},
    )


@attrs.frozen(kw_only=True)
class UserCommand:
    """``rtc.gateway.{serverId}.users`` request (svc_users -> the gateway holding the user).

    ``kick`` closes the user's socket after a ``kicked`` notification; ``mute`` sets the user's
    AudioBridge mute (``muted`` required). The reply is ``{"delivered": bool}``.
    """

    room_id: str = _id_field()
    user_id: str = _user_id_field()
    action: UserAction
    muted: bool | None = None


@attrs.frozen(kw_only=True)
class DeadLetter:
    """``rtc.dlq.{service}``: a message a service gave up on, kept for an operator."""

    service: str = _id_field()
    subject: str = _text_field()
    sequence: int = _int_field(0)
    error: str
    payload: str = attrs.field(
        validator=_max_chars(DEAD_LETTER_PAYLOAD_MAX_CHARS),
        metadata={SCHEMA_METADATA: {"maxLength": DEAD_LETTER_PAYLOAD_MAX_CHARS}},
    )

    @classmethod
    def build(cls, *, service: str, subject: str, sequence: int, error: str, data: bytes) -> DeadLetter:
        """A dead letter for raw message ``data``, cut to 64 KiB and decoded leniently."""
        text = data[:DEAD_LETTER_PAYLOAD_MAX_CHARS].decode("utf-8", errors="replace")
        return cls(service=service, subject=subject, sequence=sequence, error=error, payload=text)


# -- the converter -------------------------------------------------------------------------


def _exact(expected: type) -> Callable[[Any, Any], Any]:
    # cattrs would coerce 1 -> "1" and accept True as an int; JSON types must match exactly.
    def hook(value: Any, _: Any) -> Any:
        if type(value) is not expected:
            raise TypeError(f"expected {_JSON_NAMES[expected]}, got {_json_type(value)}")
        return value

    return hook


_JSON_NAMES: dict[type, str] = {str: "string", int: "integer", bool: "boolean", float: "number"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _structure_float(value: Any, _: Any) -> float:
    if type(value) not in (int, float):
        raise TypeError(f"expected number, got {_json_type(value)}")
    return float(value)


def _structure_time(value: Any, _: Any) -> datetime:
    if type(value) is not str:
        raise TypeError(f"expected RFC3339 date-time string, got {_json_type(value)}")
    return parse_time(value)


def _structure_object(value: Any, _: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(type(k) is str for k in value):
        raise TypeError(f"expected object, got {_json_type(value)}")
    return dict(value)


def _enum_value(member: enum.Enum) -> Any:
    # Plain str out, so unstructured data is plain JSON data (YAML dumpers, deep equality).
    return member.value


def _enum_hook(cl: type[enum.Enum]) -> Callable[[Any, Any], Any]:
    allowed = [m.value for m in cl]

    def hook(value: Any, _: Any) -> Any:
        if type(value) is not str or value not in allowed:
            raise ValueError(f"expected one of {allowed}, got {value!r}")
        return cl(value)

    return hook


_ENUMS: tuple[type[enum.Enum], ...] = (
    LiveStatus,
    JanusStatus,
    MixerStatus,
    ModuleStatus,
    MarkLabel,
    StateOp,
    MigrationKind,
    MigrationReason,
    MemberRole,
    MemberStatus,
    UserAction,
)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for t in (str, int, bool):
        conv.register_structure_hook(t, _exact(t))
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(datetime, _structure_time)
    conv.register_unstructure_hook(datetime, format_time)
    conv.register_structure_hook_func(lambda t: t == dict[str, Any], _structure_object)

    def list_factory(cl: Any) -> Any:
        structure_items = list_structure_factory(cl, conv)

        def hook(value: Any, _: Any) -> Any:
            # cattrs alone iterates whatever it gets: "" or {} would pass as an empty list
            if type(value) is not list:
                raise TypeError(f"expected array, got {_json_type(value)}")
            return structure_items(value, cl)

        return hook

    def is_list(cl: Any) -> bool:
        return typing.get_origin(cl) is list

    conv.register_structure_hook_factory(is_list, list_factory)
    # Per class, not by predicate: a StrEnum is a str, so the str hook would win and let a
    # plain "onair" through instead of LiveStatus.ONAIR.
    for enum_cls in _ENUMS:
        conv.register_structure_hook(enum_cls, _enum_hook(enum_cls))
        conv.register_unstructure_hook(enum_cls, _enum_value)

    def structure_factory(cl: type[Any]) -> Any:
        renames: dict[str, Any] = {a.name: override(rename=wire_name(a.name)) for a in attrs.fields(cl)}
        structure_fields = make_dict_structure_fn(cl, conv, _cattrs_forbid_extra_keys=True, **renames)

        def hook(value: Any, _: Any) -> Any:
            # a nested record (an item of a list) may be any JSON value: say which, not "no .keys"
            if not isinstance(value, Mapping):
                raise TypeError(f"expected object, got {_json_type(value)}")
            return structure_fields(value, cl)

        return hook

    def unstructure_factory(cl: type[Any]) -> Any:
        # Only fields defaulting to None are omitted when None (discardAt, janusRoomId);
        # a None where None is not the default is a bug and must not silently vanish.
        renames: dict[str, Any] = {
            a.name: override(rename=wire_name(a.name), omit_if_default=a.default is None)
            for a in attrs.fields(cl)
        }
        return make_dict_unstructure_fn(cl, conv, **renames)

    conv.register_structure_hook_factory(attrs.has, structure_factory)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    return conv


_converter = _make_converter()

_KIND_TYPES: dict[Kind, type[Any]] = {
    Kind.META: RoomMeta,
    Kind.LIVEMETA: LiveMeta,
    Kind.JANUS: JanusRecord,
    Kind.MIXER: MixerRecord,
    Kind.HEARTBEAT: Heartbeat,
    Kind.MARK: Mark,
}


class RecordDecodeError(InvalidInput):
    """A value that is not a valid record of its kind; ``fields`` name key, kind and paths."""

    def __init__(self, *, key: str, kind: str, errors: list[str]) -> None:
        where = f" at {key!r}" if key else ""
        super().__init__(
            f"cannot decode {kind}{where}: {'; '.join(errors)}",
            key=key,
            kind=kind,
            field=_first_path(errors),
            errors=errors,
        )
        self.errors = errors


def _first_path(errors: list[str]) -> str:
    for line in errors:
        if " @ " in line:
            return line.rsplit(" @ ", 1)[1]
    return "$"


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, TypeError | ValueError) and str(exc):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def _error_lines(exc: BaseException, path: str) -> list[str]:
    """``message @ $.wireName`` lines: cattrs paths use attribute names, ours wire names."""
    if isinstance(exc, InvalidInput):
        # Raised by a validator in the constructor: cattrs has no path for it, the field does.
        field = exc.fields.get("field")
        return [f"{exc.detail} @ {path}.{field}" if field else f"{exc.detail} @ {path}"]
    if isinstance(exc, ForbiddenExtraKeysError):
        return [f"unknown field @ {path}.{name}" for name in sorted(exc.extra_fields)]
    if isinstance(exc, ClassValidationError):
        lines: list[str] = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            lines.extend(_error_lines(sub, f"{path}.{wire_name(note.name)}"))
        for sub in without:
            lines.extend(_error_lines(sub, path))
        return lines
    if isinstance(exc, IterableValidationError):
        # a list of records (UserStatusReports.reports): each item's errors with its index
        lines = []
        with_index, without = exc.group_exceptions()
        for sub, index_note in with_index:
            lines.extend(_error_lines(sub, f"{path}[{index_note.index}]"))
        for sub in without:
            lines.extend(_error_lines(sub, path))
        return lines
    return cattrs.transform_error(exc, path=path, format_exception=_format_exception)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _load_object(raw: bytes | str | Mapping[str, Any] | None, *, key: str, what: str) -> dict[str, Any]:
    if raw is None:
        # A delete event's value: callers may pass event.value straight through.
        raise RecordDecodeError(key=key, kind=what, errors=["expected object, got null @ $"])
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        obj = json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordDecodeError(key=key, kind=what, errors=[f"not valid JSON ({exc}) @ $"]) from None
    if not isinstance(obj, dict):
        raise RecordDecodeError(key=key, kind=what, errors=[f"expected object, got {_json_type(obj)} @ $"])
    return obj


def _decode(cls: type[T], raw: bytes | str | Mapping[str, Any] | None, *, key: str, what: str) -> T:
    obj = _load_object(raw, key=key, what=what)
    try:
        return _converter.structure(obj, cls)
    except (cattrs.BaseValidationError, InvalidInput, TypeError, ValueError) as exc:
        raise RecordDecodeError(key=key, kind=what, errors=_error_lines(exc, "$")) from None


def record_kinds() -> Mapping[Kind, type[Any]]:
    """Every etcd kind and its record class."""
    return dict(_KIND_TYPES)


def record_type(kind: Kind | str) -> type[Any]:
    """The record class stored under keys of ``kind`` (``"livemeta"`` -> ``LiveMeta``)."""
    try:
        return _KIND_TYPES[Kind(kind)]
    except ValueError:
        raise InvalidInput("unknown record kind", field="kind", value=kind) from None


def unstructure(record: object) -> dict[str, Any]:
    """The JSON object of a record (wire names, times as strings)."""
    if not attrs.has(type(record)):
        raise TypeError(f"not a record: {type(record).__name__}")
    out: dict[str, Any] = _converter.unstructure(record)
    return out


def encode_record(record: object) -> bytes:
    """Compact UTF-8 JSON of any record in this module (etcd values and NATS payloads)."""
    return json.dumps(
        unstructure(record), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def decode_record(kind: Kind | str, raw: bytes | str | Mapping[str, Any] | None, *, key: str = "") -> Any:
    """The record of etcd ``kind`` in ``raw``; ``RecordDecodeError`` naming ``key`` and field."""
    return _decode(record_type(kind), raw, key=key, what=str(kind))


def decode_payload(cls: type[T], raw: bytes | str | Mapping[str, Any] | None, *, key: str = "") -> T:
    """Decode ``raw`` as record class ``cls`` (event payloads); ``key`` names the source."""
    return _decode(cls, raw, key=key, what=cls.__name__)


def decode_event(raw: bytes | str | Mapping[str, Any], *, subject: str = "") -> StateEvent:
    """A state event from a NATS payload; ``value`` stays a JSON object (see decode_record)."""
    return decode_payload(StateEvent, raw, key=subject)
