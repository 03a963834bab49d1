"""`just bench faults`: how long each single failure takes to heal, and what listeners see.

The fault suite's rig (tests/faults/rig.py, which says exactly what is injected and measured):
the whole stack as `just up` runs it, ``ROOMS`` rooms on air, each with a plain-RTP speaker
playing its own tone; the faults of ``FAULTS`` one after the other, each once the previous one
has converged. Per fault:

- ``recover_s_<fault>``: fault -> every room's HLS carries its speaker's tone again (a segment
  recorded after the fault, fetched and decrypted like a listener, in a run of segments that
  goes on without a stall). Goal 15 s. About 2-4 s is the floor of the measure: the segment in
  progress at the fault holds audio from before it, so the first one that can count ends one
  to two segment durations (HLS_TIME, 2 s) after the fault.
- ``hls_gap_s_<fault>``: the longest time any room's playlist went without a new segment, from
  its last segment before the fault to convergence (2 s segments: ~2 s when undisturbed). Goal
  5 s for a Janus kill.

``faults_not_converged`` counts the faults after which some check still failed ``SETTLE_S``
after the fault, or that did not stay converged, or whose probe room or anchor failed; their
``recover_s`` is left out. The stack runs with ``MODULE_GRACE_PERIOD`` = ``GRACE_S`` (not the
15 s default) so that ``mixer_away`` (svc_mixer stopped for good, its rooms moved to a second
mixer after the grace) is measured within the same bound; its recover_s is the grace plus the
move.
"""

from __future__ import annotations

from pathlib import Path

from tests.faults.rig import CONVERGE_S, FAULTS, Rig, work_dir

__all__ = ["GOALS", "run"]

GOALS = {
    **{f"recover_s_{f.name}": f"<= {CONVERGE_S:g}" for f in FAULTS},
    "hls_gap_s_kill_janus": "<= 5",
    "faults_not_converged": "== 0",
}


async def run() -> dict[str, float]:
    figures: dict[str, float] = {}
    failed = 0
    with work_dir() as tmp:
        async with Rig(Path(tmp)) as rig:
            for fault in FAULTS:
                out = await rig.run_fault(fault)
                print(f"    {out.report()}")
                if out.recover_s is not None:
                    figures[f"recover_s_{fault.name}"] = out.recover_s
                figures[f"hls_gap_s_{fault.name}"] = out.hls_gap_s
                failed += bool(out.problems or out.converged_s is None)
    figures["faults_not_converged"] = failed
    return figures
