"""What a measured interval holds: the write and its delivery, never the harness's own set-up. (A new HTTP
client per send once added 35 ms of TLS-context building to every broadcast's send->deliver.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.criteria import load_criteria
from harness.flows import FLOWS
from harness.history import read_history
from harness.lifecycle import Lifecycle
from harness.records import Op
from stack.server import EmbeddedStack


def test_no_client_is_built_inside_a_measured_write(stack: EmbeddedStack, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    for cls in (httpx.Client, httpx.AsyncClient):
        original = cls.__init__

        def init(self: Any, *a: Any, __original: Any = original, **kw: Any) -> None:
            built.append(time.perf_counter_ns())
            __original(self, *a, **kw)

        monkeypatch.setattr(cls, "__init__", init)
    lc = Lifecycle(stack.target(), load_criteria(), tmp_path, js=False, quiet=True)

    async def go() -> None:
        try:
            await lc.open()
            await lc.flows(FLOWS, 1)
        finally:
            await lc.close()

    asyncio.run(go())
    lc.end(None)
    origin = lc.run.clock.mono_origin
    records = read_history(lc.run.dir / "history.jsonl").records
    invoked = {(r.process, r.op_id): r.t for r in records if isinstance(r, Op) and r.type == "invoke"}
    spans = [(invoked[(r.process, r.op_id)], r.t, r.f) for r in records
             if isinstance(r, Op) and r.type == "ok" and r.expect]
    assert len(spans) >= 10 and len(built) >= 10  # the flows wrote, and clients were built (outside the spans)
    inside = [(f, (t - origin) / 1e6) for t in built for start, end, f in spans if start <= t - origin <= end]
    assert inside == []
