"""Which rooms a mixer runs, what counts as a new forwarder, restart backoff."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs

from common import records
from svc_mixer.reconcile import forwarder_of, should_run
from svc_mixer.service import Forwarder, restart_delay_s

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _live(status: str = "onair", mixer_id: str = "mixer1") -> records.LiveMeta:
    if status == "onair":
        return records.LiveMeta(
            status=records.LiveStatus.ONAIR, janus_id="janus1", mixer_id=mixer_id, nonce="n1", created_at=NOW
        )
    return records.LiveMeta(
        status=records.LiveStatus.REMOVING, janus_id="", mixer_id="", nonce="", created_at=NOW, discard_at=NOW
    )


def test_should_run_only_onair_rooms_of_this_mixer() -> None:
    assert should_run(_live(), "mixer1")
    assert not should_run(_live(mixer_id="mixer2"), "mixer1")
    assert not should_run(_live("removing"), "mixer1")
    assert not should_run(None, "mixer1")


def test_forwarder_identity() -> None:
    assert forwarder_of(None) is None
    created = records.JanusRecord(
        janus_id="janus1", status=records.JanusStatus.ROOM_CREATED, generation=2, updated_at=NOW
    )
    assert forwarder_of(created) is None  # no Janus room yet: nothing feeds the mixer
    rec = records.JanusRecord(
        janus_id="janus1",
        janus_room_id=1234,
        status=records.JanusStatus.FORWARDING,
        generation=2,
        updated_at=NOW,
    )
    assert forwarder_of(rec) == Forwarder("janus1", 1234, 2)  # an old record: no stream id
    fed = attrs.evolve(rec, forwarder_stream_id=77)
    assert forwarder_of(fed) == Forwarder("janus1", 1234, 2, 77)
    # a Janus restart rebuilds the room under the same id, with a new forwarder: a new stream
    assert forwarder_of(attrs.evolve(fed, forwarder_stream_id=78)) != forwarder_of(fed)
    # the room exists but nothing forwards (yet, or any more): nothing to compare
    assert forwarder_of(attrs.evolve(rec, status=records.JanusStatus.ROOM_CREATED)) is None


def test_a_forwarder_of_an_earlier_generation_feeds_the_previous_mixer() -> None:
    rec = records.JanusRecord(
        janus_id="janus1",
        janus_room_id=1234,
        status=records.JanusStatus.FORWARDING,
        forwarder_stream_id=77,
        generation=2,
        updated_at=NOW,
    )
    # the room moved here (generation 3): svc_janus has not moved the forwarder yet
    assert forwarder_of(rec, 3) is None
    assert forwarder_of(rec, 2) == Forwarder("janus1", 1234, 2, 77)
    # a cache that has the janus record before the livemeta it was written for
    assert forwarder_of(rec, 1) == Forwarder("janus1", 1234, 2, 77)


def test_restart_delay_grows_and_is_capped() -> None:
    assert restart_delay_s(0) == 0.0
    assert restart_delay_s(1) == 0.0
    delays = [restart_delay_s(n) for n in range(2, 12)]
    assert delays == sorted(delays)
    assert delays[0] > 0
    assert delays[-1] == 10.0
