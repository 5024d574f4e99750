"""How many subscriptions one harness process holds while the delay it adds stays <= 1 ms at p99.

    .venv/bin/python bench/probe_capacity.py [--max 3000]

The stack runs in its own process. This process opens N probe sockets (our asyncio Phoenix client,
as the gate's probes), each joined to a channel with a postgres_changes subscription and the
announcement broadcast, while the stack broadcasts to all of them twice a second. The delay the
harness adds is how late its event loop gets to anything that is ready (a frame that arrived, a
timer that fired): a 1 ms ticker measures it, exact percentiles over the measuring window.
Goal (issue "Harness core"): >= 2,000 subscriptions at p99 <= 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import secrets
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack_process import StackProcess  # noqa: E402
from harness.checks.latency import percentile  # noqa: E402
from harness.phoenix import AsyncPhoenix, ReconnectPolicy  # noqa: E402


async def loop_lag(seconds: float) -> list[float]:
    lags = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(max(0.0, (time.perf_counter() - t0 - 0.001) * 1000))
    return lags


async def measure(env: dict[str, str], n: int, seconds: float) -> dict[str, float]:
    url = env["REALTIME_URL"] + f"/websocket?apikey={env['ANON_KEY']}&vsn=1.0.0"
    received = 0

    def on_event(ev: object, t: int) -> None:
        nonlocal received
        received += 1

    clients = [AsyncPhoenix(url, on_event=on_event, policy=ReconnectPolicy(heartbeat_s=25)) for _ in range(n)]
    for i in range(0, n, 100):  # connect in batches: the join storm is not what we measure
        batch = clients[i:i + 100]
        await asyncio.gather(*(c.connect(30) for c in batch))
        await asyncio.gather(*(c.join("realtime:capacity", {"config": {"postgres_changes": [
            {"event": "INSERT", "schema": "public", "table": "orders"}]}}, timeout=30) for c in batch))
    stop = asyncio.Event()

    async def broadcaster() -> None:
        async with httpx.AsyncClient(timeout=10) as h:
            while not stop.is_set():
                await h.post(f"{env['API_URL']}/realtime/v1/api/broadcast", headers={"apikey": env["ANON_KEY"]},
                             json={"messages": [{"topic": "capacity", "event": "tick", "payload": {"t": time.time()}}]})
                await asyncio.sleep(0.5)

    b = asyncio.get_running_loop().create_task(broadcaster())
    received = 0
    lags = await loop_lag(seconds)
    stop.set()
    await b
    frames = received
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {"n": n, "p50": percentile(lags, 50), "p99": percentile(lags, 99), "max": max(lags),
            "frames_per_s": frames / seconds}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    stack = StackProcess("--no-seed", "--jwt-secret", secrets.token_urlsafe(48))
    env = stack.env
    best = 0
    try:
        print("probe capacity: subscriptions held by one harness process vs the delay it adds (ms)")
        for n in [s for s in (250, 500, 1000, 2000, 3000, 4000) if s <= max(250, min(args.max, 10_000))]:
            r = await measure(env, n, args.seconds)
            ok = r["p99"] <= 1.0
            print(f"  {n:>5} subscriptions  p50 {r['p50']:.3f}  p99 {r['p99']:.3f}  max {r['max']:.2f}"
                  f"  ({r['frames_per_s']:.0f} frames/s received){'' if ok else '  <- over 1 ms'}")
            if not ok:
                break
            best = n
        print(f"  held with p99 added delay <= 1 ms: {best} subscriptions (goal >= 2,000)")
    finally:
        stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
