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
from dataclasses import dataclass
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


@dataclass
class GateCalibration:
    rate: float
    pause_s: float
    due: int  # writes due during the pause
    measured: int  # of those, measured
    due_ms: list[float]
    other_ms: list[float]
    broadcast_ms: list[float]
    commit_ms: list[float]
    chart: Path
    cpu_s: float


def measure(root: Path, rate: float = 20.0, seconds: float = 8.0, pause_s: float = 2.0,
            interleave: int = 20) -> GateCalibration:
    with EmbeddedStack.from_fixtures() as stack:
        lc = Lifecycle(stack.target(), load_criteria(), root, js=False, quiet=True, phases=("flows", "resilience"),
                       stack=stack)

        async def go() -> None:
            try:
                await lc.open()
                await paced_orders(lc, rate, seconds, pause_at=seconds / 3, pause_s=pause_s)
                await lc.settle(2.0)
                await interleaved(lc, interleave)
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
    sent = [d for d in a.deliveries.values() if d.exp.source == "broadcast" and d.seen and d.probe == "vendor-1/portal"]
    first = min((d.t_write for d in sent), default=0)  # (e) began with the first broadcast
    paced = [d for d in a.deliveries.values() if d.probe == "vendor-1/portal" and d.exp.group == "order_visible"
             and d.t_write < first]
    due = [d for d in paced if pause.t <= d.t_write < thaw.t]
    other = [d for d in paced if not pause.t <= d.t_write < thaw.t]
    late = [d for d in a.deliveries.values() if d.probe == "vendor-1/portal" and d.t_write >= first]
    assert lc.verdict is not None
    write_report(lc.run.dir / "calibration", a, lc.verdict)
    return GateCalibration(
        rate, (thaw.t - pause.t) / 1e9, len(due), sum(1 for d in due if d.seen),
        [(d.seen[0].t - d.t_write) / 1e6 for d in due if d.seen],
        [(d.seen[0].t - d.t_write) / 1e6 for d in other if d.seen],
        [(d.seen[0].t - d.t_write) / 1e6 for d in sent],
        [v for v in (_commit_ms(a, d) for d in late if d.exp.source == "change" and d.exp.subject == "orders")
         if v is not None],
        lc.run.dir / "calibration" / "charts" / "latency_over_time.png", cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rate", type=float, default=20.0, help="orders per second, open loop")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--pause-s", type=float, default=2.0)
    ap.add_argument("--out", type=Path, help="where the run directory goes (default: a temporary one)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    c = measure(args.out or Path(tempfile.mkdtemp(prefix="zora-calibration-")), args.rate, args.seconds, args.pause_s)
    print(f"(d) open-loop orders at {c.rate:g}/s for {args.seconds:g} s; PostgreSQL paused for {c.pause_s:.2f} s")
    print(f"    writes due during the pause: {c.due} (rate x pause = {c.rate * c.pause_s:.0f}), measured "
          f"{c.measured}; their write->deliver p50 {percentile(c.due_ms, 50):.0f} / max {max(c.due_ms, default=0):.0f} ms")
    print(f"    the other writes: {len(c.other_ms)}: p50 {percentile(c.other_ms, 50):.1f} / "
          f"p99 {percentile(c.other_ms, 99):.1f} ms")
    print(f"    over-time chart, the pause shaded: {c.chart}")
    b, p = percentile(c.broadcast_ms, 50), percentile(c.commit_ms, 50)
    print(f"(e) on loopback, vendor-1/portal: broadcast send->deliver p50 {b:.2f} ms over {len(c.broadcast_ms)}; "
          f"orders commit->deliver p50 {p:.2f} ms over {len(c.commit_ms)}; difference {b - p:+.2f} ms "
          "(goal: within 2 ms)")
    print(f"harness process CPU {c.cpu_s:.1f} s over {time.perf_counter() - t0:.0f} s (stack, writer and probes in it)")
    return 0


def _commit_ms(a: Any, d: Any) -> float | None:
    first = d.seen[0] if d.seen else None
    if first is None or getattr(first, "commit_ns", None) is None or a.wall_origin is None:
        return None
    return float((a.wall_origin + first.t - (first.commit_ns - a.offset_ns)) / 1e6)


if __name__ == "__main__":
    sys.exit(main())
