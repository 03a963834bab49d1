"""Every single failure converges: one fault at a time against the whole supervised stack with
``ROOMS`` rooms on air, each with a plain-RTP speaker (tests/faults/rig.py says what is injected
and what converging means). One stack for the module; the faults run in order, each after the
previous one converged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.faults.rig import CONVERGE_S, FAULTS, Fault, Rig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.janus,
    pytest.mark.ffmpeg,
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    async with Rig(tmp_path_factory.mktemp("faults")) as r:
        yield r


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_fault_converges(rig: Rig, fault: Fault) -> None:
    outcome = await rig.run_fault(fault)
    print(outcome.report())
    assert outcome.converged_s is not None, outcome.report()
    assert outcome.converged_s <= CONVERGE_S, outcome.report()
    assert outcome.problems == [], outcome.report()
