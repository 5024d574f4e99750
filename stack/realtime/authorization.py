"""Private channels: what a joiner may do on a topic, decided by the RLS policies of ``realtime.messages``.

As supabase/realtime's ``Realtime.Tenants.Authorization`` does it, in a transaction that is always rolled back:

* **read** (receive broadcasts / presence): rows for the topic are inserted as the table's owner (one per
  extension), then under the joiner's role, with its claims in ``request.jwt.claims`` (and ``.sub``, ``.role``)
  and the topic in ``realtime.topic()``, we SELECT them back: a row the policies let through grants that read;
* **write** (send broadcasts / track presence): under the same role and settings we INSERT a row per
  extension (each in a savepoint); a row the policies refuse (insufficient privilege) denies that write.

Nothing is left behind (the transaction rolls back, and rolled-back rows never reach the WAL). A role the
realtime admin may not assume, or a policy that errs, is an error (``PrivateError``), which the join
reports as Supabase does ("UnableToSetPolicies"). One connection, one check at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import psycopg

from stack.db import connect
from stack.realtime.policies import PrivateError

__all__ = ["Authorizer"]

log = logging.getLogger("stack.realtime.authorization")
EXTENSIONS = ("broadcast", "presence")


class Authorizer:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await connect(self.dsn)
        return self._conn

    async def read(self, topic: str, claims: dict[str, Any], presence: bool = True) -> tuple[bool, bool]:
        """(may receive broadcasts, may receive presence) on ``topic`` (the channel's name, no ``realtime:``)."""
        exts = EXTENSIONS if presence else EXTENSIONS[:1]
        ids = {ext: uuid.uuid4() for ext in exts}

        async def body(conn: psycopg.AsyncConnection[Any]) -> tuple[bool, bool]:
            for ext, mid in ids.items():
                await conn.execute("insert into realtime.messages (id, topic, extension) values (%s, %s, %s)",
                                   (mid, topic, ext))
            await self._assume(conn, topic, claims)
            cur = await conn.execute("select id from realtime.messages where id = any(%s)", (list(ids.values()),))
            seen = {r[0] for r in await cur.fetchall()}
            return ids["broadcast"] in seen, "presence" in ids and ids["presence"] in seen

        return await self._run(body)

    async def write(self, topic: str, claims: dict[str, Any], extension: str) -> bool:
        """May the claims send on ``topic`` (``extension``: broadcast or presence)?"""

        async def body(conn: psycopg.AsyncConnection[Any]) -> bool:
            await self._assume(conn, topic, claims)
            try:
                async with conn.transaction():  # a savepoint
                    await conn.execute("insert into realtime.messages (topic, extension) values (%s, %s)",
                                       (topic, extension))
            except psycopg.errors.InsufficientPrivilege:
                return False
            return True

        return await self._run(body)

    async def replay(self, topic: str, since_ms: int, limit: int) -> list[dict[str, Any]]:
        """Upstream's ``Realtime.Messages.replay``: the newest ``limit`` private broadcasts of the topic inserted
        since ``since_ms`` (and before a minute from now), handed out oldest first. Read as the table's owner:
        the join was authorized to read the topic."""

        async def body(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            cur = await conn.execute(
                "select id::text, event, payload, binary_payload from realtime.messages"
                " where topic = %s and private is true and extension = 'broadcast'"
                " and inserted_at >= (to_timestamp(%s / 1000.0) at time zone 'utc')"
                " and inserted_at < (now() at time zone 'utc') + interval '1 minute'"
                " order by inserted_at desc limit %s", (topic, since_ms, limit))
            rows = await cur.fetchall()
            return [{"id": r[0], "event": r[1], "payload": r[2], "binary": None if r[3] is None else bytes(r[3])}
                    for r in reversed(rows)]

        return await self._run(body)

    @staticmethod
    async def _assume(conn: psycopg.AsyncConnection[Any], topic: str, claims: dict[str, Any]) -> None:
        role = str(claims.get("role") or "anon")
        sub = claims.get("sub")
        await conn.execute(
            "select set_config('role', %s, true), set_config('realtime.topic', %s, true),"
            " set_config('request.jwt.claims', %s, true), set_config('request.jwt.claim.sub', %s, true),"
            " set_config('request.jwt.claim.role', %s, true)",
            (role, topic, json.dumps(claims), "" if sub is None else str(sub), role))

    async def _run(self, body: Any) -> Any:
        async with self._lock:
            for attempt in range(2):  # once more on a fresh connection if the old one had gone away
                try:
                    conn = await self._connection()
                    try:
                        async with conn.transaction(force_rollback=True):
                            return await body(conn)
                    finally:
                        if not conn.broken and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                            await conn.rollback()
                except psycopg.OperationalError as e:
                    self._conn = None
                    if attempt == 1:
                        raise PrivateError(f"the database is unavailable: {str(e).strip()[:200]}") from e
                except psycopg.Error as e:
                    raise PrivateError(str(e).strip().splitlines()[0][:200] if str(e).strip() else
                                             type(e).__name__) from e
        raise PrivateError("unreachable")
