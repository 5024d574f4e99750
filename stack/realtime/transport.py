"""The asyncio driver of one sans-IO ``Connection`` over a Starlette websocket.

It only moves messages and keeps time: a reader feeds each websocket message to
``Connection.receive`` (awaited, so a join that asks the publication is finished before the
next message is read, as Phoenix's channel process handles them in order); a writer sends what
``Connection.next_data`` hands out, one message at a time (so frames waiting for a slow client
count against the connection's queue limit); a timer calls ``Connection.tick`` at
``next_deadline()`` and as soon as the WAL stream comes up for a join waiting on it. When the
connection closes itself (a slow consumer, a realtime restart) the writer drains what was queued
before and closes the socket with the connection's close code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from stack.realtime.connection import Connection

__all__ = ["WebSocketTransport"]

CLOSE_INTERNAL_ERROR = 1011


class WebSocketTransport:
    def __init__(self, ws: WebSocket, wait_streaming: Callable[[float], Awaitable[bool]]) -> None:
        """Make the connection with ``wakeup=transport.wakeup``, then ``run`` it; deadlines are on its clock."""
        self.ws = ws
        self.wait_streaming = wait_streaming
        self._output = asyncio.Event()
        self._timers_changed = asyncio.Event()

    def wakeup(self) -> None:
        self._output.set()

    async def run(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        writer = loop.create_task(self._write(conn), name="realtime-writer")
        timer = loop.create_task(self._keep_time(conn), name="realtime-timer")
        try:
            while not conn.closed:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                data: Any = msg.get("text") if msg.get("text") is not None else msg.get("bytes")
                if data is None:
                    continue
                before = (conn.next_deadline(), conn.awaiting_streaming)
                await conn.receive(data)
                if (conn.next_deadline(), conn.awaiting_streaming) != before:
                    self._timers_changed.set()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            conn.close()
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(writer, 2)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await timer
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def _send(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_text(data)

    async def _write(self, conn: Connection) -> None:
        try:
            while True:
                data = conn.next_data()
                if data is None:
                    if conn.closed:
                        break
                    self._output.clear()
                    await self._output.wait()
                    continue
                await self._send(data)
        except Exception:  # the socket went away under us
            conn.close(CLOSE_INTERNAL_ERROR)
        with contextlib.suppress(Exception):
            await self.ws.close(code=conn.close_code)

    async def _keep_time(self, conn: Connection) -> None:
        while not conn.closed:
            if conn.awaiting_streaming and conn.subscriptions.streaming():
                conn.tick()  # the stream is up: announce at once
                continue
            deadline = conn.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - conn.clock())
            self._timers_changed.clear()
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._timers_changed.wait())]
            if conn.awaiting_streaming:
                waits.append(asyncio.ensure_future(self.wait_streaming(timeout if timeout is not None else 0.0)))
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            conn.tick()
