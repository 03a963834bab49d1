"""Contract tests of every rtc.state.* subject and of rtc.dlq.{service}, with real producers.

Producers here: the state store (what every service writes through) and the state relay (which
republishes every etcd change, lease expiries included). Consumer: the reconcile runtime every
service runs. For each subject: the real message validates against its contract, and the real
consumer accepts it (its cache holds the record afterwards, or drops it for a delete).
The services' own producers have their contract tests beside their code's tests.
"""

from __future__ import annotations

import json

import pytest

from common import keys, records
from common.bus import Bus
from common.contracts import STATE_RELAY, contract_for, validate_payload
from common.contracts._registry import _RECORD_EXAMPLES
from common.etcd import EtcdStore
from common.keys import Collection, Keyspace, Kind, StateKey
from common.reconcile import Interest, ReconcileRuntime
from common.relay import StateRelay
from common.state import StateStore
from tests.integration.eventcore import eventually, noop_reconcile

STATE_KINDS = sorted(_RECORD_EXAMPLES, key=lambda ck: (ck[0].value, ck[1].value))


def _runtime(etcd: EtcdStore, bus: Bus, keyspace: Keyspace, collection: Collection) -> ReconcileRuntime:
    return ReconcileRuntime(
        service="svc_contract",
        instance="c1",
        etcd=etcd,
        bus=bus,
        keyspace=keyspace,
        interests=[Interest(collection.value)],
        reconcile=noop_reconcile,
        resync_interval_s=3600,
    )


@pytest.mark.parametrize(("collection", "kind"), STATE_KINDS, ids=str)
async def test_state_subject_from_store_and_relay_validates_and_is_consumed(
    collection: Collection, kind: Kind, etcd: EtcdStore, bus: Bus, keyspace: Keyspace
) -> None:
    id_, record = _RECORD_EXAMPLES[(collection, kind)]
    skey = StateKey(collection, id_, kind)
    subject = keys.state_subject(skey)
    assert STATE_RELAY in contract_for(subject).producers
    sub = await bus.js.subscribe(subject, stream=keys.STATE_STREAM)
    try:
        async with _runtime(etcd, bus, keyspace, collection) as runtime:
            store = StateStore(etcd, bus, keyspace)
            revision = await store.put(skey, record)
            put = await sub.next_msg(timeout=5)
            validate_payload(put.subject, put.data)
            assert (put.headers or {}).get("Nats-Msg-Id") == keys.msg_id(store.key(skey), revision)
            await eventually(
                lambda: runtime.cache.get(collection, id_, kind) == record, 5, "consumer holds it"
            )

            # The relay's copy of the same change is the same message id: JetStream drops it.
            async with StateRelay(etcd=etcd, bus=bus, keyspace=keyspace) as relay:
                await relay.wait_caught_up(10)
            info = await bus.js.stream_info(keys.STATE_STREAM, subjects_filter=subject)
            assert info.state.messages == 1

            # A delete only the relay can see (straight to etcd, as a lease expiry would be).
            await etcd.delete(store.key(skey))
            async with StateRelay(etcd=etcd, bus=bus, keyspace=keyspace):
                gone = await sub.next_msg(timeout=5)
            validate_payload(gone.subject, gone.data)
            assert json.loads(gone.data)["op"] == "delete"
            await eventually(
                lambda: runtime.cache.get(collection, id_, kind) is None, 5, "consumer dropped it"
            )
    finally:
        await sub.unsubscribe()


async def test_dead_letter_subject_validates(etcd: EtcdStore, bus: Bus, keyspace: Keyspace) -> None:
    sub = await bus.js.subscribe(keys.dlq_subject("svc_contract"), stream=keys.DLQ_STREAM)
    try:
        async with _runtime(etcd, bus, keyspace, Collection.ROOMS):
            await bus.publish("rtc.state.rooms.room-1.meta", b'{"key": 1}')
            letter = await sub.next_msg(timeout=5)
        contract = validate_payload(letter.subject, letter.data)
        assert "svc_contract" in letter.subject and contract.address == "rtc.dlq.{service}"
        decoded = records.decode_payload(records.DeadLetter, letter.data)
        assert decoded.subject == "rtc.state.rooms.room-1.meta" and decoded.payload == '{"key": 1}'
    finally:
        await sub.unsubscribe()
