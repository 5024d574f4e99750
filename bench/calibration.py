"""Calibration of the fault proxy: what it adds with no fault, how exact a latency fault is, and that
``DropFrames`` drops exactly what it says, measured on postgres_changes from the embedded stack.

    .venv/bin/python bench/calibration.py [--quick]

What runs where:
* the stack (`zora-harness stack up`) in its own process;
* the writer (the load generator) in its own process (this file with ``--writer``), open loop: write i
  of a phase is due at start + i/rate and carries that intended time in its row; the CPU it used and
  how late it fell behind are printed;
* two subscribers, both our ``AsyncPhoenix`` (the harness's probe client, stamping each frame as it
  comes off the socket) on the same postgres_changes channel: the direct one in its own process (this
  file with ``--direct``), the proxied one in this process with the ``FaultProxy`` on the same loop (as
  the harness would run it). Two processes, because a proxied frame needs one more turn of its loop
  than a direct one: on a shared loop it would also wait for the direct subscriber's handling of the
  same change (about 0.3 ms here), which is the subscriber's cost, not the proxy's.
  write->deliver = arrival - the write's intended time (CLOCK_MONOTONIC in every process); "per change"
  = the proxied arrival minus the direct arrival of the same change.
* (a) and (b) go through a byte-transparent proxy; (c) needs ``inspect_websocket=True``, which strips
  permessage-deflate from the upgrade. Against the embedded stack that changes nothing (it never
  negotiates compression, as Supabase Realtime does not); against a server that compresses, the proxied
  subscriber would get uncompressed frames and the direct one compressed ones, and (c)'s "per change"
  figure would measure that difference more than the proxy.

Phases: (a) no fault: the proxy's overhead; (b) ``Latency(200, direction="down")``: the shift against
the direct subscriber; (c) ``DropFrames`` of k of N change messages: how many the proxied subscriber
missed (must be exactly k, and exactly the first k). ``tests/harness/test_calibration.py`` runs
``calibrate`` with fewer changes against the test session's stack, with loose bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.checks.stats import percentile as pct  # noqa: E402
from harness.faults import DropFrames, FaultProxy, Latency  # noqa: E402
from harness.phoenix import AsyncPhoenix, Message, ReconnectPolicy  # noqa: E402
from harness.probes import quiet_heap  # noqa: E402
from harness.procs import wait_or_kill  # noqa: E402
from harness.targets import Target  # noqa: E402

CALIB_SQL = """
create table if not exists public.bench_calib_items (
    id bigserial primary key,
    owner uuid not null,
    note text not null,
    created_at timestamptz not null default now()
);
alter table public.bench_calib_items enable row level security;
drop policy if exists calib_read on public.bench_calib_items;
create policy calib_read on public.bench_calib_items for select to authenticated using (owner = auth.uid());
grant select on public.bench_calib_items to authenticated;
do $$ begin
    if not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
                   and tablename = 'bench_calib_items')
    then alter publication supabase_realtime add table public.bench_calib_items; end if;
end $$;
"""  # bench_*: the schema tests leave benchmark tables out of the publication they check
DROP_MARK = '"note":"drop:'  # only the drop phase's change messages contain it


# -- the writer, in its own process ------------------------------------------------------------------
def writer_main(dsn: str, owner: str) -> None:
    """Reads {"phase", "n", "rate"} lines on stdin, writes each phase open loop, answers one JSON line each."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select 1")
        for line in sys.stdin:
            cmd = json.loads(line)
            n, rate, phase = int(cmd["n"]), float(cmd["rate"]), str(cmd["phase"])
            cpu0, lag = os.times(), 0.0
            t0 = time.perf_counter_ns() + 20_000_000
            for i in range(n):
                due = t0 + int(i * 1e9 / rate)
                now = time.perf_counter_ns()
                if due > now:
                    time.sleep((due - now) / 1e9)
                else:
                    lag = max(lag, (now - due) / 1e6)
                conn.execute("insert into bench_calib_items (owner, note) values (%s, %s)", (owner, f"{phase}:{i}:{due}"))
            took = (time.perf_counter_ns() - t0) / 1e9
            cpu1 = os.times()
            cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            print(json.dumps({"sent": n, "seconds": took, "rate": n / took if took else 0.0, "max_lag_ms": lag,
                              "cpu_s": cpu}), flush=True)


class Writer:
    def __init__(self, dsn: str, owner: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--writer", dsn, owner],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def run(self, phase: str, n: int, rate: float) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"phase": phase, "n": n, "rate": rate}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the writer died")
        out: dict[str, float] = json.loads(line)
        return out

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        wait_or_kill(self.proc, 10)


# -- the subscribers ---------------------------------------------------------------------------------
class Sub:
    """``AsyncPhoenix`` on bench_calib_items for one owner: the arrival stamp of each row's note."""

    def __init__(self, url: str, owner: str, token: str) -> None:
        self.owner, self.token = owner, token
        self.arrived: dict[str, int] = {}
        self.live = asyncio.Event()
        self.client = AsyncPhoenix(url, policy=ReconnectPolicy(heartbeat_s=25), on_event=self._event)

    def _event(self, e: object, t: int) -> None:
        if not isinstance(e, Message) or not isinstance(e.payload, dict):
            return
        if e.event == "postgres_changes":
            self.arrived[e.payload["data"]["record"]["note"]] = t
        elif e.event == "system" and e.payload.get("status") == "ok":
            self.live.set()

    async def join(self) -> None:
        await self.client.connect()
        cfg = {"config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "bench_calib_items",
                                                "filter": f"owner=eq.{self.owner}"}]},
               "access_token": self.token}
        rep = await self.client.join("realtime:calibration", cfg)
        if rep.status != "ok":
            raise RuntimeError(f"join refused: {rep.response}")
        await asyncio.wait_for(self.live.wait(), 15)

    def phase(self, name: str) -> dict[int, tuple[int, int]]:
        """i -> (intended write time, arrival) for the phase's rows."""
        out = {}
        for note, t in self.arrived.items():
            phase, i, due = note.split(":")
            if phase == name:
                out[int(i)] = (int(due), t)
        return out


def direct_main(url: str, owner: str, token: str) -> None:
    """The direct subscriber: "live" once joined, then one JSON line per "PHASE" line read: i -> [due, arrival]."""

    async def go() -> None:
        sub = Sub(url, owner, token)
        await sub.join()
        quiet_heap()
        print("live", flush=True)
        loop = asyncio.get_running_loop()
        for _ in range(10_000):
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                break
            print(json.dumps({str(i): v for i, v in sub.phase(line.strip()).items()}), flush=True)
        await sub.client.close()

    asyncio.run(go())


class Direct:
    """The direct subscriber's process."""

    def __init__(self, url: str, owner: str, token: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--direct", url, owner, token],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "live":
            self.close()
            raise RuntimeError("the direct subscriber did not get live")

    def phase(self, name: str) -> dict[int, tuple[int, int]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the direct subscriber died")
        return {int(i): (int(v[0]), int(v[1])) for i, v in json.loads(line).items()}

    def close(self) -> None:
        Writer.close(self)  # type: ignore[arg-type]


@dataclass
class Phase:
    name: str
    sent: int
    direct_ms: list[float] = field(default_factory=list)  # write->deliver
    proxied_ms: list[float] = field(default_factory=list)
    delta_ms: list[float] = field(default_factory=list)  # proxied - direct, per change both saw
    missed_direct: list[int] = field(default_factory=list)
    missed_proxied: list[int] = field(default_factory=list)
    writer: dict[str, float] = field(default_factory=dict)
    dropped_counter: int = 0


@dataclass
class Figures:
    overhead: Phase
    latency: Phase
    drop: Phase
    drop_k: int
    latency_ms: float
    rate: float
    process_cpu_s: float
    wall_s: float


async def _run_phase(name: str, n: int, rate: float, writer: Writer, direct: Direct, proxied: Sub,
                     expect_proxied: int, settle_s: float) -> Phase:
    info = await asyncio.to_thread(writer.run, name, n, rate)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(proxied.phase(name)) < expect_proxied:
        await asyncio.sleep(0.02)
    await asyncio.sleep(settle_s)  # anything still on its way (a drop phase must not miss what is late)
    for _ in range(100):
        d = await asyncio.to_thread(direct.phase, name)
        if len(d) >= n or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    p = proxied.phase(name)
    ph = Phase(name, n, writer=info)
    ph.direct_ms = [(t - due) / 1e6 for due, t in d.values()]
    ph.proxied_ms = [(t - due) / 1e6 for due, t in p.values()]
    ph.delta_ms = [(p[i][1] - d[i][1]) / 1e6 for i in sorted(d.keys() & p.keys())]
    ph.missed_direct = sorted(set(range(n)) - d.keys())
    ph.missed_proxied = sorted(set(range(n)) - p.keys())
    return ph


async def calibrate(api_url: str, anon_key: str, service_key: str, dsn: str, token_for: Any, *, overhead_n: int,
                    latency_n: int, drop_n: int, drop_k: int, rate: float = 50.0, latency_ms: float = 200.0,
                    settle_s: float = 0.5) -> Figures:
    """The three phases against one stack; ``token_for(owner)`` signs a user token for the subscribers."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(CALIB_SQL)
    owner = str(uuid.uuid4())
    socket_url = Target("embedded", api_url, anon_key, service_key).socket_url
    u = urlsplit(api_url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    direct = await asyncio.to_thread(Direct, socket_url, owner, token_for(owner))
    writer = Writer(dsn, owner)
    try:
        async with FaultProxy(host, port, name="calibration") as proxy:  # byte-transparent, as the harness runs it
            proxied = Sub(proxy.url_for(socket_url), owner, token_for(owner))
            await proxied.join()
            quiet_heap()  # as the probes do: no full collections of what is built so far while measuring
            a = await _run_phase("overhead", overhead_n, rate, writer, direct, proxied, overhead_n, settle_s)
            async with proxy.fault(Latency(latency_ms, direction="down")):
                b = await _run_phase("latency", latency_n, rate, writer, direct, proxied, latency_n,
                                     settle_s + latency_ms / 1e3)
            await proxied.client.close()
        async with FaultProxy(host, port, name="calibration-frames", inspect_websocket=True) as proxy:
            framed = Sub(proxy.url_for(socket_url), owner, token_for(owner))
            await framed.join()
            async with proxy.fault(DropFrames(DROP_MARK, drop_k)):
                c_ = await _run_phase("drop", drop_n, rate, writer, direct, framed, drop_n - drop_k, settle_s)
            c_.dropped_counter = proxy.dropped_frames
            await framed.client.close()
    finally:
        writer.close()
        direct.close()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return Figures(a, b, c_, drop_k, latency_ms, rate, cpu, time.perf_counter() - t0)


# -- printing ----------------------------------------------------------------------------------------
def _p(values: list[float], q: float) -> float:
    return pct(values, q)


def report(f: Figures) -> str:
    a, b, c = f.overhead, f.latency, f.drop
    lines = [
        f"fault proxy calibration: {f.rate:.0f} changes/s paced open loop; write->deliver from each write's "
        "intended time; per change = proxied arrival - direct arrival",
        f"(a) no fault, {a.sent} changes",
        f"    direct   p50 {_p(a.direct_ms, 50):7.3f}  p99 {_p(a.direct_ms, 99):7.3f} ms",
        f"    proxied  p50 {_p(a.proxied_ms, 50):7.3f}  p99 {_p(a.proxied_ms, 99):7.3f} ms",
        f"    p99 difference {_p(a.proxied_ms, 99) - _p(a.direct_ms, 99):+.3f} ms (goal <= 0.2); per change "
        f"p50 {_p(a.delta_ms, 50):.3f}  p99 {_p(a.delta_ms, 99):.3f}  max {max(a.delta_ms, default=float('nan')):.3f} ms",
        f"(b) Latency({f.latency_ms:g}, direction=\"down\"), {b.sent} changes",
        f"    shift per change p50 {_p(b.delta_ms, 50):8.3f}  p99 {_p(b.delta_ms, 99):8.3f}  "
        f"min {min(b.delta_ms, default=float('nan')):8.3f} ms (goal {f.latency_ms:g} +/- 2)",
        f"    proxied - direct at p50 {_p(b.proxied_ms, 50) - _p(b.direct_ms, 50):8.3f}  at p99 "
        f"{_p(b.proxied_ms, 99) - _p(b.direct_ms, 99):8.3f} ms",
        f"(c) DropFrames(k={f.drop_k}) of N={c.sent} change messages",
        f"    proxied missed {len(c.missed_proxied)} (must be {f.drop_k}): rows {c.missed_proxied}; "
        f"proxy counted {c.dropped_counter}; direct missed {len(c.missed_direct)}",
        f"    per change (uncompressed through inspect_websocket vs compressed direct) p50 {_p(c.delta_ms, 50):.3f}  "
        f"p99 {_p(c.delta_ms, 99):.3f} ms",
    ]
    w = [p.writer for p in (a, b, c)]
    cpu, secs = sum(x["cpu_s"] for x in w), sum(x["seconds"] for x in w)
    rates = ", ".join(f"{x['rate']:.1f}" for x in w)
    lines += [
        f"load generator (writer process): {cpu:.2f} s CPU over {secs:.1f} s of writing ({100 * cpu / secs:.1f} % of "
        f"one core), achieved {rates} /s, max lag "
        f"{max(x['max_lag_ms'] for x in w):.1f} ms",
        f"this process (proxy + proxied subscriber, one loop): {f.process_cpu_s:.2f} s CPU over {f.wall_s:.1f} s",
        f"missed in (a)/(b): direct {len(a.missed_direct) + len(b.missed_direct)}, proxied "
        f"{len(a.missed_proxied) + len(b.missed_proxied)}",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer changes (a few seconds of writes)")
    ap.add_argument("--writer", nargs=2, metavar=("DSN", "OWNER"), help=argparse.SUPPRESS)
    ap.add_argument("--direct", nargs=3, metavar=("URL", "OWNER", "TOKEN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.writer:
        writer_main(*args.writer)
        return 0
    if args.direct:
        direct_main(*args.direct)
        return 0
    from bench.stack_process import StackProcess
    from stack import jwt

    secret = secrets.token_urlsafe(48)
    os.environ["ZORA_JWT_SECRET"] = secret  # not on the command line (ps)
    t0 = time.perf_counter()
    stack = StackProcess("--no-seed")
    print(f"embedded stack up in its own process in {time.perf_counter() - t0:.1f} s ({stack.env['API_URL']})")

    def token_for(sub: str) -> str:
        now = int(time.time())
        return jwt.encode({"sub": sub, "role": "authenticated", "aud": "authenticated", "iat": now,
                           "exp": now + 3600}, secret)

    n = (100, 60, 40, 4) if args.quick else (1000, 500, 200, 7)
    try:
        figures = asyncio.run(calibrate(stack.env["API_URL"], stack.env["ANON_KEY"], stack.env["SERVICE_ROLE_KEY"],
                                        stack.env["DB_URL"], token_for, overhead_n=n[0], latency_n=n[1],
                                        drop_n=n[2], drop_k=n[3]))
    finally:
        stack.stop()
    print(report(figures))
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
