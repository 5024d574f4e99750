"""The fault proxy's calibration (``bench/calibration.py``) in small: against the session's stack, a latency
fault shifts deliveries by its 200 ms (+/- 20: two shared cores) against a direct subscriber, no fault adds
next to nothing, and ``DropFrames`` makes the proxied subscriber miss exactly the first k change messages."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bench.calibration import calibrate, report
from harness.checks.stats import percentile
from stack.server import EmbeddedStack
from tests.stack.rt_support import user_token


def test_calibration_in_small(stack: EmbeddedStack) -> None:
    f = asyncio.run(asyncio.wait_for(calibrate(
        stack.api_url, stack.anon_key, stack.service_role_key, stack.superuser_dsn,
        lambda owner: user_token(stack, owner), overhead_n=40, latency_n=30, drop_n=20, drop_k=3), 120))
    text = report(f)
    a, b, c = f.overhead, f.latency, f.drop
    assert a.missed_direct == a.missed_proxied == b.missed_direct == b.missed_proxied == [], text
    assert percentile(a.delta_ms, 50) < 5, text  # no fault: the proxy adds next to nothing
    assert len(b.delta_ms) == 30 and all(180 <= x <= 220 for x in (percentile(b.delta_ms, 50),
                                                                    percentile(b.delta_ms, 99))), text
    assert c.missed_proxied == [0, 1, 2] and c.dropped_counter == 3 and c.missed_direct == [], text


def test_the_completeness_checker_counts_exactly_the_events_the_proxy_dropped(stack: EmbeddedStack,
                                                                              tmp_path: Path) -> None:
    """k of N orders dropped on the phone's network, and only there: the checker reports exactly those k, at
    that probe, and nothing else anywhere."""
    from harness.checks import analyze, completeness
    from harness.criteria import load_criteria
    from harness.faults import DropFrames
    from harness.history import read_history
    from harness.lifecycle import Lifecycle
    from harness.phoenix import ReconnectPolicy

    n, k = 10, 3
    lc = Lifecycle(stack.target(), load_criteria(), tmp_path, js=False, quiet=True, phases=("flows", "resilience"),
                   policy=ReconnectPolicy(heartbeat_s=2.0))
    assert lc.network is not None
    lc.network.inspect = True

    async def orders(s: Any, round_: int) -> None:
        a = s.actors["customer-1/phone"]
        for i in range(n):
            note = f"{s.run.run_id} {'drop-me' if i % 3 == 0 and i < 3 * k else 'keep'} {i}"
            await a.op("place_order", lambda c, note=note: c.table("orders").insert(
                {"user_id": a.uid, "vendor_id": s.world.vendors["vendor-1"], "total": 1, "notes": note}).execute(),
                lambda d: [s.change("orders", "INSERT", {"id": d[0]["id"]}, d[0], "order_visible")])

    async def go() -> None:
        try:
            await lc.open()
            assert lc.network is not None
            await lc.network.proxy("customer-1/phone").apply(DropFrames("drop-me", k))
            await lc.flows([orders], 1)
            await lc.settle(2.0)
        finally:
            await lc.close()

    asyncio.run(go())
    lc.end(None)
    r = completeness(analyze(read_history(lc.run.dir / "history.jsonl").records))
    missed = {p: c["lost"] + c["unseen"] for p, c in r.details["per_probe"].items() if c["lost"] + c["unseen"]}
    assert missed == {"customer-1/phone": k}, r.summary
    assert r.details["counts"]["delivered"] == r.details["expected"] - k


def test_a_postgres_pause_shows_in_full_and_broadcasts_measure_like_changes(tmp_path: Path) -> None:
    """bench/calibration_gate.py in small: every write due during a 1 s pause is measured (no coordinated
    omission) with the stall it met, and broadcast send->deliver stays near postgres_changes commit->deliver."""
    from bench.calibration_gate import measure

    c = measure(tmp_path, rate=20.0, seconds=4.0, pause_s=1.0, interleave=8)
    assert c.due >= 15 and c.measured == c.due  # 20/s x ~1 s, every one of them there
    assert percentile(c.due_ms, 50) > 200 and max(c.due_ms) > 600  # they waited for the thaw
    assert percentile(c.other_ms, 50) < 100
    assert abs(percentile(c.broadcast_ms, 50) - percentile(c.commit_ms, 50)) < 20  # loose: two shared cores
    assert c.chart.is_file()
