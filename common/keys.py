"""etcd keys and NATS subjects: the one place they are built and parsed.

etcd keys are ``{prefix}{id}/{kind}`` (docs/architecture.md, State), with one prefix per collection
(configurable, default ``/rooms/``, ``/januses/``, ``/mixers/``). Every change to such a key is
published on ``rtc.state.<collection>.<id>.<kind>`` (docs/architecture.md, Events); domain events go on
``rtc.events.<area>.<roomId>.<name>`` and messages no consumer could handle on
``rtc.dlq.<service>``. Services never format keys or subjects themselves.

Ids are validated (common.ids) before they become a key segment or a subject token; parsers
return ``None`` for anything that is not exactly one of our keys or subjects, so a stray key
in a watched prefix is skipped rather than misread.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

import attrs

from common.errors import InvalidInput
from common.ids import is_valid_id, validate_module_id, validate_room_id

__all__ = [
    "DLQ_STREAM",
    "DLQ_SUBJECTS",
    "EVENTS_STREAM",
    "EVENTS_SUBJECTS",
    "GATEWAY_USERS_FILTER",
    "KINDS",
    "STATE_STREAM",
    "STATE_SUBJECTS",
    "USERS_STATUS_SUBJECT",
    "Collection",
    "Keyspace",
    "Kind",
    "StateKey",
    "dlq_subject",
    "event_filter",
    "event_subject",
    "gateway_users_subject",
    "msg_id",
    "parse_state_subject",
    "state_filter",
    "state_subject",
]

STATE_STREAM = "RTC_STATE"
STATE_SUBJECTS = "rtc.state.>"
EVENTS_STREAM = "RTC_EVENTS"
EVENTS_SUBJECTS = "rtc.events.>"
DLQ_STREAM = "RTC_DLQ"
DLQ_SUBJECTS = "rtc.dlq.>"

# Core NATS request/reply (no stream): a gateway reports a connection's status to svc_users,
# and svc_users sends a kick or mute to the gateway process holding the user.
USERS_STATUS_SUBJECT = "rtc.users.status"
GATEWAY_USERS_FILTER = "rtc.gateway.*.users"

_STATE_ROOT = "rtc.state"
_EVENTS_ROOT = "rtc.events"
_DLQ_ROOT = "rtc.dlq"

# Event areas/names and service names are ours, not user input, but they still end up as
# subject tokens, so they get the same closed alphabet.
_TOKEN_REGEX = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


class Collection(enum.StrEnum):
    """A family of etcd keys sharing one prefix."""

    ROOMS = "rooms"
    JANUSES = "januses"
    MIXERS = "mixers"


class Kind(enum.StrEnum):
    """The last key segment: which record a key holds."""

    META = "meta"
    LIVEMETA = "livemeta"
    JANUS = "janus"
    MIXER = "mixer"
    HEARTBEAT = "heartbeat"
    MARK = "mark"


KINDS: Mapping[Collection, frozenset[Kind]] = {
    Collection.ROOMS: frozenset({Kind.META, Kind.LIVEMETA, Kind.JANUS, Kind.MIXER}),
    Collection.JANUSES: frozenset({Kind.HEARTBEAT, Kind.MARK}),
    Collection.MIXERS: frozenset({Kind.HEARTBEAT, Kind.MARK}),
}


def _collection(value: Any) -> Collection:
    try:
        return Collection(value)
    except ValueError:
        raise InvalidInput(
            "unknown collection", field="collection", value=value, allowed=[c.value for c in Collection]
        ) from None


def _kind(collection: Collection, value: Any) -> Kind:
    try:
        kind = Kind(value)
    except ValueError:
        kind = None
    if kind is None or kind not in KINDS[collection]:
        raise InvalidInput(
            f"kind not allowed in {collection.value}",
            field="kind",
            value=value,
            allowed=sorted(k.value for k in KINDS[collection]),
        )
    return kind


def _validate_id(collection: Collection, value: object) -> str:
    if collection is Collection.ROOMS:
        return validate_room_id(value)
    return validate_module_id(value)


def _to_kind(value: Any) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        raise InvalidInput("unknown kind", field="kind", value=value) from None


def _check_state_key(instance: StateKey, attribute: attrs.Attribute[Kind], value: Kind) -> None:
    # attrs runs validators after every field is set, so the (collection, id, kind) triple is
    # checked as a whole here.
    _validate_id(instance.collection, instance.id)
    _kind(instance.collection, value)


@attrs.frozen
class StateKey:
    """One parsed key: which collection, which id, which record kind."""

    collection: Collection = attrs.field(converter=_collection)
    id: str
    kind: Kind = attrs.field(converter=_to_kind, validator=_check_state_key)


def _check_prefix(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not (len(value) >= 2 and value.startswith("/") and value.endswith("/")):
        raise InvalidInput("an etcd prefix must start and end with '/'", field=attribute.name, value=value)
    if any(ch.isspace() for ch in value):
        raise InvalidInput("an etcd prefix must not contain whitespace", field=attribute.name, value=value)


@attrs.frozen(kw_only=True)
class Keyspace:
    """The etcd prefixes of the three collections (tests use a unique root per test)."""

    rooms: str = attrs.field(default="/rooms/", validator=_check_prefix)
    januses: str = attrs.field(default="/januses/", validator=_check_prefix)
    mixers: str = attrs.field(default="/mixers/", validator=_check_prefix)

    def __attrs_post_init__(self) -> None:
        # A prefix inside another would make parse() ambiguous and a prefix watch see both.
        prefixes = [self.rooms, self.januses, self.mixers]
        for i, a in enumerate(prefixes):
            for j, b in enumerate(prefixes):
                if i != j and b.startswith(a):
                    raise InvalidInput("etcd prefixes must not nest or repeat", field="prefix", value=b)

    @classmethod
    def under(cls, root: str) -> Keyspace:
        """All three collections under ``root`` (e.g. ``/t-<uuid>/``): ``{root}rooms/`` ..."""
        return cls(rooms=f"{root}rooms/", januses=f"{root}januses/", mixers=f"{root}mixers/")

    def prefix(self, collection: Collection | str) -> str:
        """The etcd prefix of a collection, e.g. ``/rooms/``."""
        prefix: str = getattr(self, _collection(collection).value)  # one attribute per collection
        return prefix

    def key(self, collection: Collection | str, id: str, kind: Kind | str) -> str:
        """``{prefix}{id}/{kind}`` after validating all three parts."""
        c = _collection(collection)
        valid_id = _validate_id(c, id)
        k = _kind(c, kind)
        return f"{self.prefix(c)}{valid_id}/{k.value}"

    def room_key(self, room_id: str, kind: Kind | str) -> str:
        """The key of one room record, e.g. ``/rooms/r1/livemeta``."""
        return self.key(Collection.ROOMS, room_id, kind)

    def module_key(self, collection: Collection | str, module_id: str, kind: Kind | str) -> str:
        """The key of a module record, e.g. ``/mixers/mixer-1/mark``."""
        c = _collection(collection)
        if c is Collection.ROOMS:
            raise InvalidInput("not a module collection", field="collection", value=c.value)
        return self.key(c, module_id, kind)

    def state_key_of(self, state_key: StateKey) -> str:
        """The etcd key of a parsed key (the inverse of :meth:`parse`)."""
        return self.key(state_key.collection, state_key.id, state_key.kind)

    def parse(self, key: str | bytes) -> StateKey | None:
        """The parts of one of our keys, or ``None`` for any other key.

        Exactly ``{prefix}{id}/{kind}``: an empty id, a trailing slash, extra segments, the
        prefix alone, an invalid id or a kind the collection does not hold give ``None``.
        """
        if isinstance(key, bytes):
            try:
                key = key.decode("utf-8")
            except UnicodeDecodeError:
                return None
        for collection in Collection:
            prefix = self.prefix(collection)
            if not key.startswith(prefix):
                continue
            parts = key[len(prefix) :].split("/")
            if len(parts) != 2:
                return None
            id_, kind = parts
            if not is_valid_id(id_) or kind not in KINDS[collection]:
                return None
            return StateKey(collection, id_, Kind(kind))
        return None


def state_subject(state_key: StateKey) -> str:
    """``rtc.state.<collection>.<id>.<kind>`` for one key."""
    return f"{_STATE_ROOT}.{state_key.collection.value}.{state_key.id}.{state_key.kind.value}"


def parse_state_subject(subject: str) -> StateKey | None:
    """The key a concrete state subject is about, or ``None`` if it is not one."""
    parts = subject.split(".")
    if len(parts) != 5 or f"{parts[0]}.{parts[1]}" != _STATE_ROOT:
        return None
    _, _, collection, id_, kind = parts
    if collection not in Collection.__members__.values() or not is_valid_id(id_):
        return None
    c = Collection(collection)
    if kind not in KINDS[c]:
        return None
    return StateKey(c, id_, Kind(kind))


def state_filter(collection: Collection | str, kind: Kind | str | None = None) -> str:
    """A consumer filter subject: ``rtc.state.rooms.*.livemeta`` or ``rtc.state.mixers.>``."""
    c = _collection(collection)
    if kind is None:
        return f"{_STATE_ROOT}.{c.value}.>"
    return f"{_STATE_ROOT}.{c.value}.*.{_kind(c, kind).value}"


def _token(value: object, field: str) -> str:
    if not isinstance(value, str) or _TOKEN_REGEX.fullmatch(value) is None:
        raise InvalidInput(f"{field} must be 1-64 characters of A-Z a-z 0-9 _ -", field=field, value=value)
    return value


def event_subject(area: str, room_id: str, name: str) -> str:
    """``rtc.events.<area>.<roomId>.<name>``, e.g. ``rtc.events.rooms.r1.migrated``."""
    return f"{_EVENTS_ROOT}.{_token(area, 'area')}.{validate_room_id(room_id)}.{_token(name, 'name')}"


def event_filter(area: str, name: str) -> str:
    """A subscription filter over every room: ``rtc.events.<area>.*.<name>``."""
    return f"{_EVENTS_ROOT}.{_token(area, 'area')}.*.{_token(name, 'name')}"


def gateway_users_subject(server_id: str) -> str:
    """``rtc.gateway.<serverId>.users``: the user commands of one gateway process."""
    return f"rtc.gateway.{_token(server_id, 'serverId')}.users"


def dlq_subject(service: str) -> str:
    """``rtc.dlq.<service>``: where a service parks a message it could never handle."""
    return f"{_DLQ_ROOT}.{_token(service, 'service')}"


def msg_id(key: str, revision: int) -> str:
    """The ``Nats-Msg-Id`` of a state change: ``<key>@<revision>`` (JetStream dedups on it)."""
    if type(revision) is not int or revision < 1:
        raise InvalidInput("revision must be a positive int", field="revision", value=revision)
    return f"{key}@{revision}"
