"""Keyed scheduler throughput: enqueue rate and end-to-end dispatch rate.

``python -m tests.bench.scheduler_bench [--keys N] [--enqueues N] [--workers N]`` prints both
rates; ``just bench core`` reports ``measure_enqueues_per_s`` as ``scheduler_enqueues_per_s``
(goal >= 100,000/s with 10,000 distinct keys).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import time

from common.scheduler import KeyedScheduler

__all__ = ["measure_dispatch_per_s", "measure_enqueues_per_s", "measure_fresh_enqueues_per_s"]

# Enqueues between yields to the loop: events arrive in bursts (one fetch batch of a pull
# consumer), and the scheduler dispatches in between, so keys keep leaving and re-entering.
_BATCH = 1_000


def _keys(n_keys: int) -> list[str]:
    return [f"room-{i:06d}" for i in range(n_keys)]


async def measure_enqueues_per_s(n_keys: int = 10_000, n_enqueues: int = 500_000, workers: int = 8) -> float:
    """Enqueues per second over ``n_keys`` distinct keys on a started scheduler.

    The handler is trivial; the loop gets a turn every ``_BATCH`` enqueues, so the time also
    covers the dispatching that interleaves with a real stream of events.
    """

    async def handler(key: str) -> None:
        return None

    keys = _keys(n_keys)
    async with KeyedScheduler(handler, workers=workers, name="bench-enqueue") as sched:
        enqueue = sched.enqueue
        stream = itertools.islice(itertools.cycle(keys), n_enqueues)
        started = time.perf_counter()
        while batch := list(itertools.islice(stream, _BATCH)):
            for key in batch:
                enqueue(key)
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - started
        sched.clear()
    return n_enqueues / elapsed


async def measure_fresh_enqueues_per_s(n_keys: int = 10_000, rounds: int = 20) -> float:
    """Worst case: every enqueue inserts a heap entry (no dedup hit), random delays up to 10 s."""

    async def handler(key: str) -> None:
        return None

    keys = _keys(n_keys)
    rng = random.Random(1)
    delays = [rng.uniform(0.0, 10.0) for _ in keys]
    async with KeyedScheduler(handler, name="bench-fresh") as sched:
        started = time.perf_counter()
        for _ in range(rounds):
            for key, delay_s in zip(keys, delays, strict=True):
                sched.enqueue(key, delay_s)
            sched.clear()
        elapsed = time.perf_counter() - started
    return n_keys * rounds / elapsed


async def measure_dispatch_per_s(n_keys: int = 10_000, workers: int = 8) -> float:
    """Keys run per second end to end: ``n_keys`` due keys, from ``enqueue`` to handler done."""
    remaining = n_keys
    done = asyncio.Event()

    async def handler(key: str) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            done.set()

    keys = _keys(n_keys)
    async with KeyedScheduler(handler, workers=workers, name="bench-dispatch") as sched:
        started = time.perf_counter()
        for key in keys:
            sched.enqueue(key)
        await asyncio.wait_for(done.wait(), timeout=60.0)
        elapsed = time.perf_counter() - started
    return n_keys / elapsed


async def _main(args: argparse.Namespace) -> None:
    enq = await measure_enqueues_per_s(args.keys, args.enqueues, args.workers)
    print(f"scheduler_enqueues_per_s {enq:,.0f}  ({args.enqueues:,} enqueues, {args.keys:,} keys)")
    fresh = await measure_fresh_enqueues_per_s(args.keys)
    print(f"scheduler_fresh_enqueues_per_s {fresh:,.0f}  (every enqueue a heap insert, {args.keys:,} keys)")
    disp = await measure_dispatch_per_s(args.keys, args.workers)
    print(f"scheduler_dispatch_per_s {disp:,.0f}  ({args.keys:,} keys, {args.workers} workers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--enqueues", type=int, default=500_000)
    parser.add_argument("--workers", type=int, default=8)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
