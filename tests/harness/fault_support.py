"""Helpers for the fault tests: a small echo server that notes its connections, and bounded waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from harness.history import read_history
from harness.records import Fault


class Upstream:
    """An echo server that notes its connections: how many opened and closed, and every byte received."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.received = bytearray()
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for w in list(self._writers):
            w.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(w)
        self.opened += 1
        try:
            for _ in range(100_000):
                data = await r.read(65536)
                if not data:
                    break
                self.received += data
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            self._writers.discard(w)
            w.close()
            self._handlers.discard(task)


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``pred`` (bounded by ``timeout``); True once it holds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def read_all(r: asyncio.StreamReader, timeout: float = 5.0) -> tuple[bytes, str]:
    """Everything until the connection ends: (bytes, "eof" | "reset" | "timeout")."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(out), "timeout"
            chunk = await asyncio.wait_for(r.read(65536), left)
            if not chunk:
                return bytes(out), "eof"
            out += chunk
    except ConnectionResetError:
        return bytes(out), "reset"
    except TimeoutError:
        return bytes(out), "timeout"


async def echo_ok(r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes = b"ping") -> bool:
    w.write(data)
    await w.drain()
    got = await asyncio.wait_for(r.readexactly(len(data)), 5)
    return got == data


def run(coro: Coroutine[Any, Any, None], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def faults_in(path: Path) -> list[Fault]:
    return [r for r in read_history(path).records if isinstance(r, Fault)]
