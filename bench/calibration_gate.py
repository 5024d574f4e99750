"""Calibration of the gate's own instruments, on the embedded stack in this process (the proxy's own
calibration is ``bench/calibration.py``):

(d) a 2 s PostgreSQL pause (every backend frozen, then thawed) under an open-loop writer: each order is
    written at its intended time whatever the previous one is doing, and latency is measured from that
    time, so the writes due during the pause are all there, each with the stall it met: no coordinated
    omission. Printed: how many writes were due during the pause and how many were measured, and the
    latency of those against the others; the over-time chart (the pause shaded) is written too.
(e) broadcast vs postgres_changes on loopback: the announcement's send->deliver against the orders'
    commit->deliver, at p50 (no client set-up inside a measured interval: the broadcast's HTTP client is
    built and warmed at sign-in).

    .venv/bin/python bench/calibration_gate.py [--rate 20] [--seconds 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.checks import analyze  # noqa: E402
from harness.checks.stats import percentile  # noqa: E402
from harness.criteria import load_criteria  # noqa: E402
from harness.faults import StackFault, inject  # noqa: E402
from harness.flows import announcement  # noqa: E402
from harness.history import read_history  # noqa: E402
from harness.lifecycle import Lifecycle  # noqa: E402
from harness.records import Fault  # noqa: E402
from harness.report import write_report  # noqa: E402
from stack.server import EmbeddedStack  # noqa: E402


async def paced_orders(lc: Lifecycle, rate: float, seconds: float, pause_at: float, pause_s: float) -> None:
    """Open loop: order i is due at start + i / rate and written then, whatever the others are doing."""
    assert lc.scene is not None and lc.stack is not None
    s = lc.scene
    a = s.actors["customer-1/phone"]
    v1 = s.world.vendors["vendor-1"]
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[Any]] = []

    async def one(i: int) -> None:
        await a.op("place_order", lambda c: c.table("orders").insert(
            {"user_id": a.uid, "vendor_id": v1, "total": 1, "notes": f"{s.run.run_id} paced {i}"}).execute(),
            lambda d: [s.change("orders", "INSERT", {"id": d[0]["id"]}, d[0], "order_visible")])

    pause = loop.create_task(_pause_later(lc, start + pause_at, pause_s))
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        tasks.append(loop.create_task(one(i)))
    await asyncio.gather(*tasks, pause)


async def _pause_later(lc: Lifecycle, when: float, seconds: float) -> None:
    await asyncio.sleep(max(0.0, when - asyncio.get_running_loop().time()))
    await inject(lc.stack, StackFault("pause_postgres", seconds), lc.run.history)


async def interleaved(lc: Lifecycle, n: int) -> None:
    """n broadcasts and n order inserts, one after the other: the two paths measured side by side."""
    from harness.flows import order_flow

    assert lc.scene is not None
    for i in range(n):
        await announcement(lc.scene, 0)
        await order_flow(lc.scene, 1000 + i)
        await asyncio.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rate", type=float, default=20.0, help="orders per second, open loop")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--pause-s", type=float, default=2.0)
    ap.add_argument("--out", type=Path, help="where the run directory goes (default: a temporary one)")
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="zora-calibration-"))
    t0 = time.perf_counter()
    with EmbeddedStack.from_fixtures() as stack:
        lc = Lifecycle(stack.target(), load_criteria(), root, js=False, quiet=True, phases=("flows", "resilience"),
                       stack=stack)

        async def go() -> None:
            try:
                await lc.open()
                await paced_orders(lc, args.rate, args.seconds, pause_at=args.seconds / 3, pause_s=args.pause_s)
                await lc.settle(2.0)
                await interleaved(lc, 20)
                await lc.settle(2.0)
            finally:
                await lc.close()

        cpu0 = time.process_time()
        asyncio.run(go())
        cpu = time.process_time() - cpu0
        lc.end(None)
    records = read_history(lc.run.dir / "history.jsonl").records
    a = analyze(records)
    [pause] = [r for r in records if isinstance(r, Fault) and r.name == "pause_postgres" and r.phase == "start"]
    [thaw] = [r for r in records if isinstance(r, Fault) and r.name == "pause_postgres" and r.phase == "end"]
    paced = [d for d in a.deliveries.values() if d.probe == "vendor-1/portal" and d.exp.group == "order_visible"
             and d.t_write < (thaw.t + 10_000_000_000)]
    due = [d for d in paced if pause.t <= d.t_write < thaw.t]
    other = [d for d in paced if not pause.t <= d.t_write < thaw.t]
    lat = [(d.seen[0].t - d.t_write) / 1e6 for d in due if d.seen]
    lat_other = [(d.seen[0].t - d.t_write) / 1e6 for d in other if d.seen]
    pause_s = (thaw.t - pause.t) / 1e9
    print(f"(d) open-loop orders at {args.rate:g}/s for {args.seconds:g} s; PostgreSQL paused for {pause_s:.2f} s")
    print(f"    writes due during the pause: {len(due)} (rate x pause = {args.rate * pause_s:.0f}), measured "
          f"{len(lat)}; their write->deliver p50 {percentile(lat, 50):.0f} / max {max(lat, default=0):.0f} ms")
    print(f"    the other writes: {len(other)}, measured {len(lat_other)}: p50 {percentile(lat_other, 50):.1f} / "
          f"p99 {percentile(lat_other, 99):.1f} ms")
    write_report(lc.run.dir / "calibration", a, lc.verdict)  # type: ignore[arg-type]
    print(f"    over-time chart, the pause shaded: {lc.run.dir / 'calibration' / 'charts' / 'latency_over_time.png'}")
    bcast = [(d.seen[0].t - d.t_write) / 1e6 for d in a.deliveries.values()
             if d.exp.source == "broadcast" and d.seen and d.probe == "vendor-1/portal"]
    late = [d for d in a.deliveries.values() if d.probe == "vendor-1/portal" and d.t_write > thaw.t + 10_000_000_000]
    pg = [v for v in (_commit_ms(a, d) for d in late if d.exp.source == "change" and d.exp.subject == "orders")
          if v is not None]
    print(f"(e) on loopback, vendor-1/portal: broadcast send->deliver p50 {percentile(bcast, 50):.2f} ms over "
          f"{len(bcast)}; orders commit->deliver p50 {percentile(pg, 50):.2f} ms over {len(pg)}; difference "
          f"{percentile(bcast, 50) - percentile(pg, 50):+.2f} ms (goal: within 2 ms)")
    print(f"harness process CPU {cpu:.1f} s over {time.perf_counter() - t0:.0f} s (stack, writer and probes in it)")
    return 0


def _commit_ms(a: Any, d: Any) -> float | None:
    first = d.seen[0] if d.seen else None
    if first is None or getattr(first, "commit_ns", None) is None or a.wall_origin is None:
        return None
    return float((a.wall_origin + first.t - (first.commit_ns - a.offset_ns)) / 1e6)


if __name__ == "__main__":
    sys.exit(main())
