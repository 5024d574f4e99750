"""One LISTEN for the whole stack: the event triggers of ``stack/sql/001_realtime.sql`` send
``NOTIFY zora_realtime_ddl`` after any DDL; REST's schema cache and realtime's table cache
both follow the ``generation`` counter this bumps, so a table, column, policy or publication
change is seen on the next request without a restart (PostgREST needs ``NOTIFY pgrst``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg

from stack.db import connect

__all__ = ["DdlWatch"]


class DdlWatch:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.generation = 0
        self.listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def _bump(self) -> None:
        self.generation += 1
        for fn in self.listeners:
            fn()

    async def _run(self) -> None:
        while True:
            try:
                async with await connect(self.dsn, autocommit=True) as conn:
                    await conn.execute("listen zora_realtime_ddl")
                    self._bump()  # whatever happened while we were not listening
                    self.listening.set()
                    async for _ in conn.notifies():
                        self._bump()
            except psycopg.Error:
                self.listening.clear()
                self._bump()
                await asyncio.sleep(0.2)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ddl-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
