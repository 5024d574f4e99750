"""asyncio transport for ``PhoenixProtocol``: a socket, a heartbeat, reconnect with backoff.

Every message is stamped (the caller's clock) the moment its last bytes come off the socket,
before websockets parses them and before any of our code runs: the connection subclass below
reads the clock first thing in ``data_received``. When many sockets are ready at once (one
event fanned out to every probe), each stamp so waits only for the other sockets' reads, not
for their parsing, queueing and handling. Every loop is bounded: the reconnect loop stops when
``close()`` is called or after ``max_reconnects``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import DATA_OPCODES, Frame

from harness.phoenix.codec import VSN1
from harness.phoenix.protocol import (
    SUPABASE_JS_POLICY,
    ChannelState,
    Closed,
    Message,
    PhoenixProtocol,
    ReconnectPolicy,
    Reply,
)

__all__ = ["AsyncPhoenix"]

Event = Reply | Message | Closed


class StampingConnection(ClientConnection):
    """websockets' connection, noting when each message's last bytes arrived (one stamp per message)."""

    clock: Callable[[], int] = time.perf_counter_ns  # each AsyncPhoenix sets its own (see ``_stamping``)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rx_t = 0
        self.stamps: deque[int] = deque()

    def data_received(self, data: bytes) -> None:
        self.rx_t = self.clock()  # first thing: before websockets parses this chunk
        super().data_received(data)

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode in DATA_OPCODES and event.fin:
            self.stamps.append(self.rx_t)
        super().process_event(event)


def _stamping(now: Callable[[], int]) -> type[StampingConnection]:
    return type("StampingConnection", (StampingConnection,), {"clock": staticmethod(now)})


class AsyncPhoenix:
    def __init__(self, url: str, *, policy: ReconnectPolicy = SUPABASE_JS_POLICY,
                 on_event: Callable[[Event, int], None] | None = None,
                 on_state: Callable[[str, int], None] | None = None,
                 now: Callable[[], int] = time.perf_counter_ns, vsn: str = VSN1, max_reconnects: int = 1000) -> None:
        self.url = url
        self.policy = policy
        self.proto = PhoenixProtocol(vsn)
        self.on_event = on_event or (lambda e, t: None)
        self.on_state = on_state or (lambda s, t: None)
        self.now = now
        self._connection = _stamping(now)
        self.max_reconnects = max_reconnects
        self._ws: Any = None
        self._waiters: dict[str, asyncio.Future[Reply]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()
        self._closing = False
        self.state = "closed"
        self._rejoin_tries: dict[str, int] = {}  # per channel: refused joins in a row (phoenix-js's rejoin timer)
        self._rejoins: dict[str, asyncio.Task[None]] = {}
        self.max_rejoins = 1000

    def _set_state(self, s: str) -> None:
        self.state = s
        self.on_state(s, self.now())

    async def connect(self, timeout: float = 10.0) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self._opened.wait(), timeout)

    async def _run(self) -> None:
        tries = 0
        while not self._closing and tries <= self.max_reconnects:
            self._set_state("connecting")
            try:
                async with connect(self.url, max_size=None, ping_interval=None, open_timeout=self.policy.open_timeout_s,
                                   create_connection=self._connection) as ws:
                    self._ws = ws
                    tries = 0
                    self._set_state("open")
                    self._opened.set()
                    for data in self.proto.rejoin_all():
                        await ws.send(data)
                    beat = asyncio.get_running_loop().create_task(self._heartbeat(ws))
                    try:
                        async for data in ws:
                            stamps = cast(StampingConnection, ws).stamps
                            t = stamps.popleft() if stamps else self.now()
                            for ev in self.proto.receive(data):
                                if isinstance(ev, Reply) and ev.ref in self._waiters:
                                    fut = self._waiters.pop(ev.ref)
                                    if not fut.done():
                                        fut.set_result(ev)
                                if isinstance(ev, Reply) and ev.kind == "join":
                                    self._after_join(ev, ws)
                                self.on_event(ev, t)
                    finally:
                        beat.cancel()
            except (OSError, websockets.WebSocketException, TimeoutError):
                pass
            self._ws = None
            self.proto.connection_lost()
            for fut in self._waiters.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection lost"))
            self._waiters.clear()
            if self._closing:
                break
            self._set_state("closed")
            tries += 1
            await asyncio.sleep(self.policy.backoff(tries))
        self._set_state("closed")

    def _after_join(self, rep: Reply, ws: Any) -> None:
        """A refused join is tried again after the policy's backoff, as phoenix-js's channel rejoin timer does,
        while the socket stays open (bounded by ``max_rejoins`` in a row; a reconnect rejoins anyway)."""
        if rep.status == "ok":
            self._rejoin_tries.pop(rep.topic, None)
            return
        tries = self._rejoin_tries.get(rep.topic, 0) + 1
        self._rejoin_tries[rep.topic] = tries
        if tries > self.max_rejoins or self._closing:
            return
        old = self._rejoins.pop(rep.topic, None)
        if old is not None:
            old.cancel()
        self._rejoins[rep.topic] = asyncio.get_running_loop().create_task(self._rejoin(rep.topic, tries, ws))

    async def _rejoin(self, topic: str, tries: int, ws: Any) -> None:
        await asyncio.sleep(self.policy.backoff(tries))
        ch = self.proto.channels.get(topic)
        if self._closing or ws is not self._ws or ch is None or ch.state != ChannelState.ERRORED:
            return
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(self.proto.join(topic, ch.join_payload))

    async def _heartbeat(self, ws: Any) -> None:
        while True:
            await asyncio.sleep(self.policy.heartbeat_s)
            data = self.proto.heartbeat()
            if data is None:  # the last one went unanswered: a black hole, as supabase-js decides
                self._set_state("heartbeat_timeout")
                # the connection is dead: drop it now and reconnect, as phoenix-js does (a closing handshake
                # would wait out its own timeout for a peer that cannot answer)
                ws.transport.abort()
                return
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(data)

    async def _request(self, ref: str, data: str | bytes, timeout: float | None) -> Reply:
        if self._ws is None:
            raise ConnectionError("not connected")
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiters[ref] = fut
        await self._ws.send(data)
        return await asyncio.wait_for(fut, timeout or self.policy.push_timeout_s)

    async def join(self, topic: str, payload: dict[str, Any], timeout: float | None = None) -> Reply:
        data = self.proto.join(topic, payload)
        ref = self.proto.channels[topic].join_ref
        assert ref is not None
        return await self._request(ref, data, timeout)

    async def push(self, topic: str, event: str, payload: Any, timeout: float | None = None) -> Reply:
        ref, data = self.proto.push(topic, event, payload)
        return await self._request(ref, data, timeout)

    async def close(self) -> None:
        self._closing = True
        for task in self._rejoins.values():
            task.cancel()
        self._rejoins.clear()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._runner, 5)
