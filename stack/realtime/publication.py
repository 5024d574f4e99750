"""The ``supabase_realtime`` publication as a subscriber meets it: may these postgres_changes be
subscribed to, and are changes streaming yet?

This is the database side of a join, kept out of the sans-IO ``Connection``, which sees it only
through its ``Subscriptions`` interface (``validate``, ``streaming``); the websocket transport
uses ``wait_streaming`` to wake the connection when the WAL stream comes up. The messages are
Supabase Realtime's (``Unable to subscribe to changes with given parameters...``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import psycopg

from stack.db import connect
from stack.realtime.filters import Subscription

__all__ = ["Publication"]


class Publication:
    def __init__(self, dsn: str, connected: Callable[[], asyncio.Event | None],
                 prepare: Callable[[list[Subscription]], Awaitable[None]] | None = None) -> None:
        """``connected``: the WAL source's "streaming" event, or None while there is no source;
        ``prepare``: awaited once subscriptions are valid (the change dispatcher learns their tables)."""
        self.dsn = dsn
        self._connected = connected
        self._prepare = prepare
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()

    def streaming(self) -> bool:
        ev = self._connected()
        return ev is not None and ev.is_set()

    async def wait_streaming(self, timeout: float) -> bool:
        ev = self._connected()
        if ev is None:
            return False
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def validate(self, subs: list[Subscription]) -> str:
        """'' if every subscription names a published table and existing filter columns, else the error."""
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = await connect(self.dsn, autocommit=True)  # assumes the login role on an existing database
                for s in subs:
                    cur = await self._conn.execute(
                        "select pt.attnames from pg_publication_tables pt where pt.pubname = 'supabase_realtime'"
                        " and pt.schemaname like (case %(s)s when '*' then '%%' else %(s)s end)"
                        " and pt.tablename like (case %(t)s when '*' then '%%' else %(t)s end)",
                        {"s": s.schema, "t": s.table})
                    rows = await cur.fetchall()
                    if not rows:
                        return ("Unable to subscribe to changes with given parameters. Please check Realtime is "
                                f"enabled for the given connect parameters: [event: {s.event}, schema: {s.schema}, "
                                f"table: {s.table}, filters: {[f.column for f in s.filters]}]")
                    if s.table != "*":
                        cols = set(rows[0][0] or ())
                        missing = [f.column for f in s.filters if f.column not in cols]
                        if missing:
                            return f"Unable to subscribe to changes: column {missing[0]!r} does not exist"
            except psycopg.Error as e:
                self._conn = None
                return f"Realtime was unable to connect to the project database: {str(e).strip()[:200]}"
        if self._prepare is not None:
            await self._prepare(subs)
        return ""

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
