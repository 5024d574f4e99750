"""One proxied connection: the client's socket, the upstream's, and a ``Pipe`` for each direction.

Sockets are asyncio protocols (no streams, no task per connection): a chunk that arrives while no
fault touches its direction is written to the other socket inside the same ``data_received`` call,
so forwarding costs one read and one write. Otherwise it joins the pipe's queue with the time it is
due (arrival + latency) and ``Pipe.pump`` delivers the queue in order, as the active faults allow:
nothing while a black hole holds it, each chunk at its due time (a timer per pipe, never a sleep per
chunk, so chunks keep their spacing), bandwidth in paced pieces of 20 ms, a byte limit that cuts the
connection. The queue is bounded: past ``HIGH`` bytes the source stops being read (TCP's own
back-pressure, as a full window would do), and so it is when the sink cannot keep up.

Timers are the event loop's: epoll counts in whole milliseconds, so a delayed chunk goes out up to
about a millisecond after its due time (``bench/calibration.py``: +0.6 ms at p50), never before it.

EOF travels as a queue entry too (held and delayed like data); when both directions have delivered
theirs the connection closes. A reset from either side resets the other (RST, SO_LINGER 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING, Literal

from harness.faults.spec import Bandwidth, Latency, LimitData
from harness.faults.wsframes import FrameFilter, RequestRewriter

if TYPE_CHECKING:
    from harness.faults.proxy import FaultProxy

__all__ = ["HIGH", "Connection", "Pipe"]

HIGH = 4 * 1024 * 1024  # queued bytes past which a pipe stops reading its source
LOW = HIGH // 4  # ... and below which it reads again
PIECE_S = 0.02  # bandwidth: bytes are paced in pieces worth this long
CONNECT_TIMEOUT_S = 10.0
Role = Literal["client", "upstream"]


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _abort(transport: asyncio.Transport | None, rst: bool) -> None:
    """Close at once; with ``rst`` the kernel sends RST instead of FIN (SO_LINGER on, 0 s)."""
    if transport is None or (transport.is_closing() and not rst):
        return
    sock = transport.get_extra_info("socket")
    if rst and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Chunk:
    __slots__ = ("data", "due")

    def __init__(self, data: bytes | None, due: float) -> None:
        self.data = data  # None: the source's EOF
        self.due = due  # loop time it may be delivered


class Pipe:
    """One direction of one connection: the source's bytes to the sink, through the active faults."""

    def __init__(self, conn: Connection, direction: Literal["up", "down"]) -> None:
        self.conn = conn
        self.proxy = conn.proxy
        self.direction = direction
        self.loop = conn.loop
        self.sink: asyncio.Transport | None = None
        self.source: asyncio.Transport | None = None
        self.queue: deque[_Chunk] = deque()
        self.queued = 0
        self.finished = False  # its EOF was delivered, or its sink is gone
        self.eof_seen = False
        self.sink_paused = False
        self._reading_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._rng: dict[str, random.Random] = {}  # latency fault id -> this pipe's jitter (seeded)
        self._next_send: dict[str, float] = {}  # bandwidth fault id -> when the next piece may go
        self._passed: dict[str, int] = {}  # limit fault id -> bytes delivered under it

    # -- in --------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self.finished:
            return
        if self.sink is not None and self.sink.is_closing():
            # closed or aborted, its connection_lost not yet called: the bytes can reach no one (writing them
            # anyway is what made asyncio log "socket.send() raised exception." through every reset fault)
            self.sink_lost()
            return
        faults = self.proxy.delivery[self.direction]
        if not faults and not self.queue and self.sink is not None:
            self.sink.write(data)  # the fast path: no fault on this direction, nothing queued
            self.proxy.count(self.direction, len(data))
            return
        self.queue.append(_Chunk(data, self.loop.time() + self._delay(faults, jitter=True)))
        self.queued += len(data)
        self._update_reading()
        if self._timer is None:  # else the head is waiting for its time, and this chunk is behind it
            self.pump()

    def feed_eof(self) -> None:
        if self.eof_seen or self.finished:
            return
        self.eof_seen = True
        self.queue.append(_Chunk(None, self.loop.time() + self._delay(self.proxy.delivery[self.direction])))
        if self._timer is None:
            self.pump()

    def _delay(self, faults: tuple[tuple[str, object], ...], jitter: bool = False) -> float:
        delay = 0.0
        for fid, f in faults:
            if isinstance(f, Latency):
                d = f.ms
                if jitter and f.jitter_ms:
                    rng = self._rng.get(fid)
                    if rng is None:
                        rng = self._rng[fid] = random.Random(f"{f.seed}/{self.conn.serial}/{self.direction}")
                    d = max(0.0, d + rng.uniform(-f.jitter_ms, f.jitter_ms))
                delay += d / 1e3
        return delay

    # -- out -------------------------------------------------------------------------------------
    def pump(self) -> None:
        """Deliver what is due, in order; schedule the next attempt if something must wait for time. A
        fault's start or end calls this again (``FaultProxy`` kicks every pipe)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.finished or self.sink is None or self.proxy.blackholed:
            return
        if self.sink.is_closing():  # as in feed: nothing queued can reach it any more
            self.sink_lost()
            return
        faults = self.proxy.delivery[self.direction]
        now = self.loop.time()
        while self.queue:  # each turn delivers a chunk or a piece of one, or returns: bounded by the queue
            chunk = self.queue[0]
            if chunk.due > now:
                self._wake_at(chunk.due)
                return
            data = chunk.data
            if data is None:
                self.queue.popleft()
                self.finished = True
                self.conn.pipe_finished(self)
                return
            n, wait = len(data), 0.0
            for fid, f in faults:
                if isinstance(f, Bandwidth):
                    wait = max(wait, self._next_send.get(fid, now))
                    n = min(n, max(1, int(f.bytes_per_s * PIECE_S)))
            if wait > now:
                self._wake_at(wait)
                return
            for fid, f in faults:
                if isinstance(f, LimitData):
                    n = min(n, f.bytes - self._passed.get(fid, 0))
            if n:
                self.sink.write(data if n == len(data) else data[:n])
                self.proxy.count(self.direction, n)
            cut = False
            for fid, f in faults:
                if isinstance(f, Bandwidth):
                    self._next_send[fid] = max(now, self._next_send.get(fid, now)) + n / f.bytes_per_s
                elif isinstance(f, LimitData):
                    self._passed[fid] = self._passed.get(fid, 0) + n
                    cut = cut or self._passed[fid] >= f.bytes
            if n == len(data):
                self.queue.popleft()
            else:
                chunk.data = data[n:]
            self.queued -= n
            if cut:
                self.conn.close()  # the limit: what passed is flushed, then FIN both ways
                return
        self._update_reading()

    def _wake_at(self, when: float) -> None:
        self._timer = self.loop.call_at(when, self.pump)
        self._update_reading()  # a paused source reads again once the queue is below LOW, not only when empty

    def sink_lost(self) -> None:
        """Nothing can reach the sink any more: drop what is queued for it."""
        self.stop()
        self.finished = True

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.queue.clear()
        self.queued = 0

    def _update_reading(self) -> None:
        src = self.source
        if src is None or src.is_closing():
            return
        if not self._reading_paused and (self.queued > HIGH or self.sink_paused):
            self._reading_paused = True
            src.pause_reading()
        elif self._reading_paused and self.queued < LOW and not self.sink_paused:
            self._reading_paused = False
            src.resume_reading()

    def set_sink_paused(self, paused: bool) -> None:
        self.sink_paused = paused
        self._update_reading()


class _Side(asyncio.Protocol):
    """One socket of a connection; everything it hears goes to the connection."""

    def __init__(self, conn: Connection, role: Role) -> None:
        self.conn = conn
        self.role: Role = role

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _nodelay(transport)
        self.conn.made(self.role, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.conn.received(self.role, data)

    def eof_received(self) -> bool:
        self.conn.eof(self.role)
        return True  # keep the socket open for writing: half-close travels through the pipe

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost(self.role, exc)

    def pause_writing(self) -> None:
        self.conn.writing(self.role, paused=True)

    def resume_writing(self) -> None:
        self.conn.writing(self.role, paused=False)


class Connection:
    """A client's connection through the proxy and the proxy's connection upstream for it."""

    def __init__(self, proxy: FaultProxy, serial: int) -> None:
        self.proxy = proxy
        self.serial = serial
        self.loop = asyncio.get_running_loop()
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.up = Pipe(self, "up")  # client -> upstream
        self.down = Pipe(self, "down")  # upstream -> client
        self.closed = False
        self.connecting: asyncio.Task[None] | None = None
        self._open = 0  # transports made and not yet lost
        self.rewriter = RequestRewriter() if proxy.inspect_websocket else None
        self.frames = FrameFilter() if proxy.inspect_websocket else None

    def client_side(self) -> _Side:
        return _Side(self, "client")

    # -- the two sockets ----------------------------------------------------------------------
    def made(self, role: Role, transport: asyncio.Transport) -> None:
        self._open += 1
        if role == "client":
            if not self.proxy.admit(self):  # down, or stopping: reset at once
                self.closed = True
                _abort(transport, rst=True)
                return
            self.client = transport
            self.up.source = self.down.sink = transport
            if not self.proxy.blackholed:
                self.connect_upstream()
            return
        if self.closed:
            _abort(transport, rst=False)
            return
        self.upstream = transport
        self.down.source = self.up.sink = transport
        self.up.pump()

    def connect_upstream(self) -> None:
        """Open the upstream socket (deferred while a black hole holds a new connection: a partition)."""
        if self.connecting is None and self.upstream is None and not self.closed:
            self.connecting = self.proxy.spawn(self._connect())

    async def _connect(self) -> None:
        try:
            await asyncio.wait_for(self.loop.create_connection(
                lambda: _Side(self, "upstream"), self.proxy.upstream_host, self.proxy.upstream_port),
                CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            self.abort(rst=True)  # the upstream refused or is unreachable: the client sees a reset

    def received(self, role: Role, data: bytes) -> None:
        if self.closed:
            return
        if role == "client":
            if self.rewriter is not None and not self.rewriter.done:
                data = self.rewriter.feed(data)
                if self.rewriter.done and self.frames is not None:
                    self.frames.upgrade_requested(self.rewriter.upgrade)
                if not data:
                    return
            self.up.feed(data)
        else:
            if self.frames is not None:
                data = self.frames.feed(data, self.proxy.droppers)
                if not data:
                    return
            self.down.feed(data)

    def eof(self, role: Role) -> None:
        if self.closed:
            return
        if role == "client":
            if self.rewriter is not None and not self.rewriter.done:
                held = self.rewriter.flush()
                if held:
                    self.up.feed(held)
            self.up.feed_eof()
        else:
            self.down.feed_eof()

    def lost(self, role: Role, exc: Exception | None) -> None:
        self._open -= 1
        if role == "client":
            self.client = None
        else:
            self.upstream = None
        if not self.closed:
            if exc is not None:
                self.abort(rst=True)  # a reset on one side: reset the other, as TCP end to end would
            else:  # that side is gone: what it sent still goes on, nothing more can reach it
                src, dst = (self.up, self.down) if role == "client" else (self.down, self.up)
                src.feed_eof()
                dst.sink_lost()
                self.pipe_finished(dst)
        if self._open <= 0:
            self.proxy.forget(self)

    def writing(self, role: Role, paused: bool) -> None:
        (self.down if role == "client" else self.up).set_sink_paused(paused)

    # -- ending -------------------------------------------------------------------------------
    def pipe_finished(self, pipe: Pipe) -> None:
        other = self.down if pipe is self.up else self.up
        if other.finished:
            self.close()
        elif pipe.sink is not None and not pipe.sink.is_closing() and pipe.sink.can_write_eof():
            pipe.sink.write_eof()

    def close(self) -> None:
        """Flush what was written, then FIN both ways."""
        if self.closed:
            return
        self._end()
        for t in (self.client, self.upstream):
            if t is not None:
                t.close()

    def abort(self, rst: bool = True) -> None:
        """Close both sockets now, nothing flushed; with ``rst`` (a reset fault) they get RST."""
        if self.closed and not rst:
            return
        self._end()
        _abort(self.client, rst)
        _abort(self.upstream, rst)

    def _end(self) -> None:
        self.closed = True
        self.up.stop()
        self.down.stop()
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
        if self._open <= 0:
            self.proxy.forget(self)
