"""The nemesis: fault specs as data, and the fault proxy against small local servers: what the client sees
under each fault, what the history says, no socket left behind, cleanup after SIGKILL. (Through the proxy to
the embedded stack: ``test_faults_stack.py``.)"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import socket
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from harness.faults import (
    Bandwidth,
    Blackhole,
    Down,
    DropFrames,
    FaultProxy,
    FaultSpec,
    FaultSpecError,
    Latency,
    LimitData,
    Reset,
    StackFault,
    format_fault,
    parse_fault,
)
from harness.faults.connection import HIGH
from harness.history import History
from harness.records import Fault
from tests.harness.fault_support import Upstream, echo_ok, faults_in, read_all, run, until

# -- specs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "spec"), [
    ("reset", Reset()),
    ("blackhole", Blackhole()),
    ("down", Down()),
    ("latency:200", Latency(200)),
    ("latency:200,jitter=20,dir=down,seed=7", Latency(200, 20, "down", 7)),
    (" latency:ms=0.5, dir=up ", Latency(0.5, direction="up")),
    ("bandwidth:64000", Bandwidth(64000)),
    ("bandwidth:rate=100,dir=down", Bandwidth(100, "down")),
    ("limit:5000,dir=down", LimitData(5000, "down")),
    ("limit_data:0", LimitData(0)),
    ("drop:postgres_changes,count=3", DropFrames("postgres_changes", 3)),
    ("restart_realtime", StackFault("restart_realtime")),
    ("restart_realtime:1.5", StackFault("restart_realtime", 1.5)),
    ("restart_postgres", StackFault("restart_postgres")),
    ("pause_postgres:3", StackFault("pause_postgres", 3)),
])
def test_parse_fault_reads_the_command_line(text: str, spec: FaultSpec) -> None:
    assert parse_fault(text) == spec
    assert parse_fault(format_fault(spec)) == spec


@pytest.mark.parametrize(("text", "needle"), [
    ("", "unknown fault ''"),
    ("partition", "unknown fault 'partition'"),
    ("latency", "latency: missing ms"),
    ("latency:-1", "ms must be >= 0"),
    ("latency:nan", "ms must be finite"),
    ("latency:inf", "ms must be finite"),
    ("latency:1e400", "ms must be finite"),
    ("latency:abc", "ms must be a number"),
    ("latency:200,jitter=-5", "jitter_ms must be >= 0"),
    ("latency:200,seed=-1", "seed must be >= 0"),
    ("latency:200,seed=1.5", "seed must be an integer"),
    ("latency:200,colour=red", "unknown key 'colour' (known: ms, jitter, dir, seed)"),
    ("latency:200,dir=sideways", "direction must be one of both, down, up"),
    ("latency:200,300", "unexpected value '300'"),
    ("latency:200,ms=300", "ms given twice"),
    ("bandwidth:0", "bytes_per_s must be > 0"),
    ("bandwidth:1.5", "bytes_per_s must be an integer"),
    ("limit:-1", "bytes must be >= 0"),
    ("drop:x", "drop: missing count"),
    ("drop:x,count=0", "count must be > 0"),
    ("reset:1", "reset takes none"),
    ("blackhole,dir=down", "unknown fault 'blackhole,dir=down'"),
    ("restart_postgres:3", "restart_postgres takes none"),
    ("pause_postgres:-2", "seconds must be >= 0"),
])
def test_a_bad_spec_is_one_line_naming_the_problem(text: str, needle: str) -> None:
    with pytest.raises(FaultSpecError) as e:
        parse_fault(text)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


def test_specs_validate_when_built_and_carry_their_params() -> None:
    with pytest.raises(FaultSpecError, match="ms must be finite"):
        Latency(math.inf)
    with pytest.raises(FaultSpecError, match="direction must be one of"):
        Bandwidth(10, direction="left")  # type: ignore[arg-type]
    with pytest.raises(FaultSpecError, match="must be an integer"):
        LimitData(True)  # a bool is not a number of bytes
    with pytest.raises(FaultSpecError, match="kind must be one of"):
        StackFault("reboot")  # type: ignore[arg-type]
    assert Latency(200, 20, "down", 7).params() == {"ms": 200, "jitter_ms": 20, "direction": "down", "seed": 7}
    assert (Reset().name, Reset().params()) == ("reset", {})
    assert (DropFrames("x", 2).name, DropFrames("x", 2).params()) == ("drop_frames", {"contains": "x", "count": 2})
    assert (StackFault("pause_postgres", 2).name, StackFault("pause_postgres", 2).params()) == \
        ("pause_postgres", {"seconds": 2})
    with pytest.raises(FaultSpecError, match="cannot carry"):
        format_fault(DropFrames("a,b", 1))


_numbers = st.floats(0, 1e6, allow_nan=False).map(lambda x: round(x, 3))
_dirs = st.sampled_from(["both", "down", "up"])
_specs = st.one_of(
    st.builds(Latency, _numbers, _numbers, _dirs, st.integers(0, 2**31)),
    st.builds(Bandwidth, st.integers(1, 10**9), _dirs),
    st.builds(LimitData, st.integers(0, 10**9), _dirs),
    st.builds(DropFrames, st.text("abcxyz_\":{}", min_size=1).filter(lambda s: s == s.strip()), st.integers(1, 99)),
    st.just(Reset()), st.just(Blackhole()), st.just(Down()),
    st.builds(StackFault, st.sampled_from(["restart_realtime", "pause_postgres"]), _numbers),
)


@given(_specs)
def test_format_and_parse_round_trip(spec: FaultSpec) -> None:
    assert parse_fault(format_fault(spec)) == spec


# -- the proxy against small local servers -------------------------------------------------------------


async def rtt_ms(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int = 5) -> float:
    """The median round trip of a few pings (sequential)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert await echo_ok(r, w, b"x")
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@pytest.mark.parametrize("inspect", [False, True])
def test_bytes_pass_untouched_half_close_travels_and_counters_count(inspect: bool) -> None:
    payload = random.Random(7).randbytes(1_000_000)

    async def go() -> None:
        async with Upstream() as up, FaultProxy("127.0.0.1", up.port, name="t", inspect_websocket=inspect) as p:
            r, w = await asyncio.open_connection(*p.address)
            assert p.connections == 1 and p.accepted == 1
            w.write(payload)
            w.write_eof()  # half-close: the echo must still come back whole, then EOF
            got, end = await read_all(r)
            assert got == payload and end == "eof"
            assert p.bytes_up == p.bytes_down == len(payload) and bytes(up.received) == payload
            w.close()
            assert await until(lambda: p.connections == 0 and up.closed == 1)

    run(go())


def test_reset_closes_every_connection_at_once_and_accepts_new_ones(tmp_path: Path) -> None:
    async def go() -> None:
        with History(tmp_path / "h.jsonl") as h:
            async with Upstream() as up, FaultProxy("127.0.0.1", up.port, name="rt", history=h) as p:
                conns = [await asyncio.open_connection(*p.address) for _ in range(3)]
                assert all([await echo_ok(r, w) for r, w in conns])
                t0 = time.monotonic()
                fid = await p.apply(Reset())
                ends = [await read_all(r, timeout=2) for r, _ in conns]
                assert all(end in ("reset", "eof") for _, end in ends) and time.monotonic() - t0 < 1.0
                assert [end for _, end in ends].count("reset") == 3  # SO_LINGER 0: RST, not FIN
                assert await until(lambda: up.closed == 3)  # the upstream side was reset too
                r, w = await asyncio.open_connection(*p.address)  # accepted again at once
                assert await echo_ok(r, w) and p.connections == 1 and p.active == {}
                w.close()
        start, end = faults_in(tmp_path / "h.jsonl")
        assert (start.fault_id, start.name, start.phase, start.target) == (fid, "reset", "start", "rt")
        assert (end.fault_id, end.phase, end.params) == (fid, "end", {"connections": 3}) and start.t <= end.t

    run(go())


def test_blackhole_holds_both_ways_then_delivers_everything_in_order() -> None:
    async def go() -> None:
        async with Upstream() as up, FaultProxy("127.0.0.1", up.port, name="t") as p:
            r, w = await asyncio.open_connection(*p.address)
            assert await echo_ok(r, w)
            sent = b""
            async with p.fault(Blackhole()) as fid:
                for i in range(50):
                    chunk = b"chunk-%03d;" % i
                    sent += chunk
                    w.write(chunk)
                    await asyncio.sleep(0.002)
                r2, w2 = await asyncio.open_connection(*p.address)  # accepted during the black hole, and held
                w2.write(b"second")
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(r.read(1), 0.3)
                assert len(up.received) == 4 and up.opened == 1  # nothing reached upstream, not even a connect
                assert p.active == {fid: Blackhole()} and p.connections == 2
            assert await asyncio.wait_for(r.readexactly(len(sent)), 5) == sent  # late, whole, in order
            assert await asyncio.wait_for(r2.readexactly(6), 5) == b"second" and up.opened == 2
            w.close()
            w2.close()

    run(go())


@pytest.mark.parametrize(("direction", "shift"), [("down", 80), ("up", 80), ("both", 160)])
def test_latency_shifts_each_direction(direction: str, shift: float) -> None:
    async def go() -> None:
        async with Upstream() as up, FaultProxy("127.0.0.1", up.port, name="t") as p:
            r, w = await asyncio.open_connection(*p.address)
            base = await rtt_ms(r, w)
            async with p.fault(Latency(80, direction=direction)):  # type: ignore[arg-type]
                delayed = await rtt_ms(r, w)
            after = await rtt_ms(r, w)
            assert shift <= delayed - base < shift + 15, (base, delayed)
            assert after < base + 5  # cleared: untouched again
            w.close()

    run(go())


async def paced(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int, gap_s: float) -> tuple[float, list[float]]:
    """Send ``n`` numbered 8-byte chunks ``gap_s`` apart (each at its own scheduled time) through the echo and
    stamp each one's return (order checked): (t0, each chunk's shift in ms)."""
    arrived: list[float] = []

    async def reader() -> None:
        buf = b""
        for _ in range(10 * n):
            if len(arrived) == n:
                return
            buf += await r.read(4096)
            while len(buf) >= 8:
                assert buf[:8] == b"c%06d\n" % len(arrived)  # in order, nothing lost
                buf = buf[8:]
                arrived.append(time.perf_counter())

    task = asyncio.create_task(reader())
    sent: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i * gap_s - time.perf_counter()))
        sent.append(time.perf_counter())
        w.write(b"c%06d\n" % i)
    await asyncio.wait_for(task, 10)
    return t0, [(a - s) * 1e3 for a, s in zip(arrived, sent, strict=True)]


def test_latency_is_pipelined_and_keeps_order() -> None:
    """20 chunks sent 10 ms apart under 200 ms: each arrives 200 ms after it was sent, all by ~390 ms (a serial
    sleep per chunk would take 20 x 200 ms)."""

    async def go() -> None:
        async with Upstream() as up, FaultProxy("127.0.0.1", up.port, name="t") as p:
            r, w = await asyncio.open_connection(*p.address)
            assert await echo_ok(r, w)
            await p.apply(Latency(200, direction="down"))
            t0, shifts = await paced(r, w, 20, 0.010)
            assert all(200 <= x < 240 for x in shifts), shifts
            assert (time.perf_counter() - t0) * 1e3 < 200 + 190 + 60
            w.close()

    run(go())


def test_jitter_is_bounded_and_never_reorders() -> None:
    async def go() -> None:
        async with Upstream() as up, FaultProxy("127.0.0.1", up.port, name="t") as p:
            r, w = await asyncio.open_connection(*p.address)
            assert await echo_ok(r, w)
            await p.apply(Latency(60, jitter_ms=30, direction="down", seed=5))
            _, shifts = await paced(r, w, 40, 0.003)
            assert all(30 <= x < 90 + 25 for x in shifts), shifts
            assert max(shifts) - min(shifts) > 10  # the jitter is there
            w.close()

    run(go())


@pytest.mark.parametrize(("direction", "size", "seconds"), [("down", 200_000, 2.0), ("up", 100_000, 1.0)])
def test_bandwidth_paces_a_transfer(direction: str, size: int, seconds: float) -> None:
    async def go() -> None:
        async with Upstream() as up, FaultProxy("127.0.0.1", up.port, name="t") as p:
            r, w = await asyncio.open_connection(*p.address)
            assert await echo_ok(r, w)
            await p.apply(Bandwidth(100_000, direction=direction))  # type: ignore[arg-type]
            t0 = time.perf_counter()
            w.write(bytes(size))
            if direction == "down":  # the other direction is not limited
                assert await until(lambda: len(up.received) == 4 + size, timeout=0.5)
            await asyncio.wait_for(r.readexactly(size), seconds * 3)
            took = time.perf_counter() - t0
            assert seconds * 0.85 < took < seconds * 1.5, took
            w.close()

    run(go())


def test_limit_data_cuts_after_exactly_n_bytes_counted_from_the_fault() -> None:
    data = random.Random(3).randbytes(12_000)

    async def go() -> None:
        async with Upstream() as up, FaultProxy("127.0.0.1", up.port, name="t") as p:
            r, w = await asyncio.open_connection(*p.address)
            assert await echo_ok(r, w, data[:1000])  # before the fault: not counted
            fid = await p.apply(LimitData(5000, direction="down"))
            w.write(data[1000:])
            got, end = await read_all(r)
            assert got == data[1000:6000] and end == "eof"  # exactly 5000, then EOF
            assert await until(lambda: up.closed == 1)
            await p.clear(fid)
            await p.apply(LimitData(3000, direction="up"))
            r, w = await asyncio.open_connection(*p.address)
            w.write(data)
            got, end = await read_all(r)
            assert end == "eof" and got == data[:len(got)] and len(got) <= 3000
            assert await until(lambda: up.closed == 2)
            assert len(up.received) == 12_000 + 3000 and bytes(up.received[-3000:]) == data[:3000]  # exactly 3000 up
            await p.reset()
            await p.apply(LimitData(5000, direction="down"))
            await p.apply(Bandwidth(50_000, direction="down"))  # with pacing: still exactly the limit, then EOF
            r, w = await asyncio.open_connection(*p.address)
            w.write(data)
            got, end = await read_all(r)
            assert (got, end) == (data[:5000], "eof")

    run(go())


def test_down_refuses_new_connections_and_keeps_open_ones() -> None:
    async def go() -> None:
        async with Upstream() as up, FaultProxy("127.0.0.1", up.port, name="t") as p:
            r, w = await asyncio.open_connection(*p.address)
            assert await echo_ok(r, w)
            async with p.fault(Down()):
                t0 = time.monotonic()
                try:
                    r2, w2 = await asyncio.open_connection(*p.address)
                    w2.write(b"hello")
                    got, end = await read_all(r2, timeout=2)
                    assert (got, end) in ((b"", "reset"), (b"", "eof"))
                    w2.close()
                except ConnectionRefusedError:
                    pass
                assert time.monotonic() - t0 < 1.0 and p.refused == 1 and up.opened == 1
                assert await echo_ok(r, w)  # the open connection goes on
            r3, w3 = await asyncio.open_connection(*p.address)
            assert await echo_ok(r3, w3) and p.accepted == 2
            w.close()
            w3.close()

    run(go())


def test_a_black_hole_holds_a_bounded_queue_and_an_unreachable_upstream_is_a_reset() -> None:
    payload = random.Random(11).randbytes(12 * 1024 * 1024)

    async def go() -> None:
        async with Upstream() as up, FaultProxy("127.0.0.1", up.port, name="t") as p:
            r, w = await asyncio.open_connection(*p.address)
            assert await echo_ok(r, w)
            async with p.fault(Blackhole()):
                w.write(payload)  # more than the proxy may hold: it stops reading (TCP back-pressure)
                (conn,) = p._conns
                assert await until(lambda: conn.up.queued >= HIGH, timeout=5)
                await asyncio.sleep(0.2)
                assert HIGH <= conn.up.queued <= HIGH + 256 * 1024 and len(up.received) == 4
            assert await asyncio.wait_for(r.readexactly(len(payload)), 20) == payload  # all of it, in order
            w.close()
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()  # nobody listens there
        async with FaultProxy("127.0.0.1", port, name="nowhere") as p:
            r, w = await asyncio.open_connection(*p.address)
            assert (await read_all(r, timeout=5))[1] in ("reset", "eof")
            assert await until(lambda: p.connections == 0)
            w.close()

    run(go(), timeout=60)


def test_drop_frames_drops_exactly_k_messages_and_leaves_the_rest_intact(tmp_path: Path) -> None:
    texts = [(f"mark-{i}" if i % 3 == 0 else f"plain-{i}") + "." * (i * 997 % 70_000) for i in range(20)]
    msgs: list[str | bytes] = [t.encode() if i in (4, 9) else t for i, t in enumerate(texts)]  # binary ones count too
    marked = [i for i, m in enumerate(msgs) if (m if isinstance(m, bytes) else m.encode()).startswith(b"mark")]
    seen_ext: list[str | None] = []

    async def handler(ws: ServerConnection) -> None:
        seen_ext.append(ws.request.headers.get("Sec-WebSocket-Extensions") if ws.request else "?")
        for m in msgs:
            await ws.send(m)
        await ws.send(["mark-fragmented-", "message"])  # fragmented: dropped whole if it is one of the k
        await ws.send("done")
        await ws.wait_closed()

    async def receive(url: str) -> tuple[list[str | bytes], list[Any]]:
        async with connect(url, max_size=None) as ws:
            got: list[str | bytes] = []
            for _ in range(100):
                m = await asyncio.wait_for(ws.recv(), 5)
                if m == "done":
                    return got, list(ws.protocol.extensions)
                got.append(m)
        raise AssertionError("no end")

    async def go() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            url = f"ws://127.0.0.1:{port}/socket"
            with History(tmp_path / "h.jsonl") as h:
                async with FaultProxy("127.0.0.1", port, name="ws", history=h, inspect_websocket=True) as p:
                    async with p.fault(DropFrames("mark", 3)) as fid:
                        got, ext = await receive(p.url_for(url))
                    assert got == [m for i, m in enumerate(msgs) if i not in marked[:3]] + ["mark-fragmented-message"]
                    assert ext == [] and seen_ext[-1] is None and p.dropped_frames == 3  # no compression offered
                    async with p.fault(DropFrames("mark", 100)):
                        got, _ = await receive(p.url_for(url))
                    assert got == [m for i, m in enumerate(msgs) if i not in marked]  # the fragmented one too
                    assert p.dropped_frames == 3 + len(marked) + 1
            async with FaultProxy("127.0.0.1", port, name="plain") as p:  # without inspection: untouched
                with pytest.raises(ValueError, match="inspect_websocket"):
                    await p.apply(DropFrames("mark", 1))
                got, ext = await receive(p.url_for(url))
                assert len(got) == len(msgs) + 1 and ext and seen_ext[-1] and "permessage-deflate" in seen_ext[-1]
        start, end = [f for f in faults_in(tmp_path / "h.jsonl") if f.fault_id == fid]
        assert start.params == {"contains": "mark", "count": 3} and end.params == {**start.params, "dropped": 3}

    run(go())


def test_the_history_holds_start_and_end_of_every_fault(tmp_path: Path) -> None:
    async def go() -> None:
        with History(tmp_path / "h.jsonl") as h:
            async with Upstream() as up:
                p = FaultProxy("127.0.0.1", up.port, name="realtime", history=h)
                async with p:
                    lat = await p.apply(Latency(50, direction="down"))
                    bw = await p.apply(Bandwidth(10_000))  # several at once
                    assert set(p.active) == {lat, bw}
                    await p.clear(lat)
                    await p.clear(lat)  # ended already: left alone, no second end
                    with pytest.raises(KeyError):
                        await p.clear("f-unknown")
                    await p.reset()
                    assert p.active == {}
                    with pytest.raises(RuntimeError, match="boom"):
                        async with p.fault(Blackhole()):
                            raise RuntimeError("boom")
                    assert p.active == {}  # cleared on the way out
                    t0 = time.monotonic()
                    async with p.fault(Down(), seconds=0.2):
                        pass
                    assert time.monotonic() - t0 >= 0.2  # the exit waits for the rest of its seconds
                    async with p.fault(Latency(1), seconds=0.1) as timed:
                        assert await until(lambda: timed not in p.active, timeout=2)  # ended while the body ran
                    left = await p.apply(Blackhole())
                await p.stop()  # idempotent; the black hole was ended by the first stop
        faults = faults_in(tmp_path / "h.jsonl")
        by_id: dict[str, list[Fault]] = {}
        for f in faults:
            by_id.setdefault(f.fault_id, []).append(f)
        assert all([f.phase for f in pair] == ["start", "end"] and pair[0].t <= pair[1].t for pair in by_id.values())
        assert all(f.target == "realtime" for f in faults) and left in by_id
        assert [pair[0].name for pair in by_id.values()] == ["latency", "bandwidth", "blackhole", "down", "latency",
                                                             "blackhole"]
        assert by_id[lat][0].params == {"ms": 50, "jitter_ms": 0, "direction": "down", "seed": 0}
        assert by_id[bw][1].params == {"bytes_per_s": 10_000, "direction": "both"}
        assert len(set(by_id)) == len(by_id) and all(k.startswith("f") for k in by_id)

    run(go())


def test_listens_on_loopback_only_and_rewrites_urls_to_itself() -> None:
    for host in ("0.0.0.0", "192.168.1.10", "example.com", ""):
        with pytest.raises(ValueError, match="loopback only"):
            FaultProxy("127.0.0.1", 5432, name="x", listen_host=host)

    async def go() -> None:
        async with FaultProxy("127.0.0.1", 54321, name="x") as p:
            assert p.address == ("127.0.0.1", p.port) and p.port > 0
            q = "/realtime/v1/websocket?apikey=k&vsn=1.0.0"
            assert p.url_for(f"ws://127.0.0.1:54321{q}") == f"ws://127.0.0.1:{p.port}{q}"
            assert p.url_for("http://localhost:54321/rest/v1/x#f") == f"http://127.0.0.1:{p.port}/rest/v1/x#f"
            for bad in ("ws://127.0.0.1:5432/x", "http://example.com:54321/", "ftp://127.0.0.1:54321/"):
                with pytest.raises(ValueError):
                    p.url_for(bad)
        async with FaultProxy("db.example.com", 443, name="tls") as p:  # a remote upstream, https: byte-transparent
            assert p.url_for("https://u:pw@db.example.com/auth/v1") == f"https://u:pw@127.0.0.1:{p.port}/auth/v1"

    run(go())


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_socket_or_task_is_left_after_many_connections_and_stop() -> None:
    async def go() -> None:
        async with Upstream() as up:
            before = fds()
            p = await FaultProxy("127.0.0.1", up.port, name="t").start()
            for batch in range(6):
                conns = [await asyncio.open_connection(*p.address) for _ in range(25)]
                assert all([await echo_ok(r, w) for r, w in conns])
                for i, (_, w) in enumerate(conns):
                    if batch == 2:
                        continue
                    if i % 3 == 0:  # the client resets
                        sock = w.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        w.transport.abort()
                    else:
                        w.close()
                if batch == 2:
                    await p.apply(Reset())  # the proxy resets them
                    for _, w in conns:
                        w.close()
                assert await until(lambda: p.connections == 0), p
            assert p.accepted == 150 and await until(lambda: up.closed == 150)
            held = [await asyncio.open_connection(*p.address) for _ in range(5)]
            await p.apply(Blackhole())
            for _, w in held:
                w.write(b"held")
            await p.stop()  # closes what is open, the black hole's end recorded (no history here)
            assert all([(await read_all(r, timeout=2))[1] in ("eof", "reset") for r, _ in held])
            for _, w in held:
                w.close()
            assert p.connections == 0 and not p._tasks and p.active == {}
            assert await until(lambda: fds() == before), (fds(), before)

    run(go())


CHILD = """
import asyncio, sys
from harness.faults import Blackhole, FaultProxy

async def main():
    async with FaultProxy("127.0.0.1", int(sys.argv[1]), name="child") as p:
        print(p.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await p.apply(Blackhole())
        print("held", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


def test_after_kill_9_in_a_black_hole_the_port_is_free_and_upstream_saw_the_close() -> None:
    async def go() -> None:
        async with Upstream() as up:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CHILD, str(up.port), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
            assert child.stdout is not None and child.stdin is not None
            try:
                port = int(await asyncio.wait_for(child.stdout.readline(), 30))
                r, w = await asyncio.open_connection("127.0.0.1", port)
                assert await echo_ok(r, w) and up.opened == 1
                child.stdin.write(b"go\n")
                await child.stdin.drain()
                assert await asyncio.wait_for(child.stdout.readline(), 10) == b"held\n"
                w.write(b"in the black hole")
                files = [os.readlink(f"/proc/{child.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{child.pid}/fd")
                         if int(fd) > 2]  # 0-2: what pytest gave it
                assert not [f for f in files if f.startswith("/") and not f.startswith("/dev/")], files  # no files
                await asyncio.sleep(0.1)
                assert up.closed == 0
                child.kill()  # SIGKILL: no cleanup code runs
                assert await child.wait() == -signal.SIGKILL
            finally:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
            assert await until(lambda: up.closed == 1, timeout=5)  # the kernel closed the proxy's upstream socket
            assert (await read_all(r, timeout=5))[1] in ("eof", "reset")  # and the client's
            w.close()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)  # nobody listens there any more
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # and the port can be had again
            s.listen()
            s.close()

    run(go())
