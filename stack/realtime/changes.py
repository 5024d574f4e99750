"""From a committed change to the frames each entitled channel receives.

For each change: the hub names the bindings whose event, table and filter
accept it; one database call (``realtime.zora_apply_rls``) answers, for every
distinct subscriber identity among them, whether RLS lets that identity see the
row, and renders the row as PostgreSQL renders JSON; then every channel with a
visible binding gets one ``postgres_changes`` frame listing its binding ids.
No subscriber's claims can widen another's view: each check runs under the
subscriber's own role and claims.

Rules taken from Supabase Realtime: DELETE events cannot be checked against RLS
(the row is gone) and go to every subscriber with SELECT on the table, carrying
only the primary key when RLS is on; UPDATE's ``old_record`` likewise carries
only the primary key when RLS is on, else what REPLICA IDENTITY logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads

from stack.realtime.frames import Frame
from stack.realtime.hub import Binding, Channel, Hub
from stack.realtime.wal import Change, Transaction

__all__ = ["ChangeDispatcher"]

log = logging.getLogger("stack.realtime.changes")


class ChangeDispatcher:
    def __init__(self, dsn: str, hub: Hub) -> None:
        self.dsn = dsn
        self.hub = hub
        self._conn: psycopg.AsyncConnection | None = None
        self.delivered = 0  # frames handed to connections (for benchmarks and tests)

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            set_json_loads(_loads, self._conn)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def on_transaction(self, tx: Transaction) -> None:
        for change in tx.changes:
            bindings = self.hub.candidates(change)
            if bindings:
                await self._dispatch_retrying(tx, change, bindings)

    async def _dispatch_retrying(self, tx: Transaction, change: Change, bindings: list[Binding]) -> None:
        """A lost connection (PostgreSQL restarting) is retried, bounded; any other failure drops this change."""
        delay = 0.01
        for _attempt in range(60):  # at most ~15 s of waiting for the database to come back
            try:
                await self._dispatch(tx, change, bindings)
                return
            except psycopg.OperationalError as e:
                log.info("database connection lost, retrying change: %s", str(e).strip().splitlines()[:1])
                await self.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except psycopg.Error as e:
                log.warning("dropping change on %s.%s: %s", change.schema, change.table,
                            str(e).strip().splitlines()[:1])
                await self.close()
                return
            except Exception:  # one bad change must not stop the stream for everyone
                log.exception("dropping change on %s.%s", change.schema, change.table)
                return
        log.warning("dropping change on %s.%s: database unreachable", change.schema, change.table)

    async def _dispatch(self, tx: Transaction, change: Change, bindings: list[Binding]) -> None:
        by_channel: dict[Channel, list[Binding]] = defaultdict(list)
        for b in bindings:
            by_channel[b.channel].append(b)
        identities: dict[tuple[str, str], int] = {}
        for ch in by_channel:
            identities.setdefault(ch.identity(), len(identities))
        is_delete = change.action == "DELETE"
        row = change.identity if is_delete else change.record
        conn = await self._connection()
        entity = sql.Identifier(change.schema, change.table).as_string(conn)
        cur = await conn.execute(
            "select in_publication, rls_enabled, rec, cols, pk, visible"
            " from realtime.zora_apply_rls(%s::regclass, %s::jsonb, %s::jsonb, %s, %s)",
            (entity, json.dumps(row, default=_json_default),
             json.dumps([[role, json.loads(claims)] for role, claims in identities]), not is_delete, tx.xid),
        )
        result = await cur.fetchone()
        if result is None:
            return
        in_pub, rls, rec, cols, pk, visible = result
        if not in_pub:
            return
        visible_set = set(visible or ())
        old: dict[str, Any] | None = None
        if change.action in ("UPDATE", "DELETE"):
            # RLS on: only the primary key may leave the database; else what REPLICA IDENTITY logged.
            keep = set(pk) if (rls or not change.identity) else set(change.identity)
            source = rec if is_delete else change.identity
            old = {k: v for k, v in source.items() if k in keep}
        for ch, bs in by_channel.items():
            if identities[ch.identity()] not in visible_set or ch.closed:
                continue
            for select, group in _by_selection(bs).items():
                data: dict[str, Any] = {
                    "schema": change.schema,
                    "table": change.table,
                    "commit_timestamp": tx.commit_timestamp,
                    "type": change.action,
                    "columns": _pick_columns(cols, select),
                    "errors": None,
                }
                if not is_delete:
                    data["record"] = _pick(rec, select)
                if old is not None:
                    data["old_record"] = _pick(old, select) if select else old
                frame = Frame(topic=ch.topic, event="postgres_changes",
                              payload={"ids": [b.id for b in group], "data": data}, ref=None, join_ref=None)
                ch.conn.send(frame)
                self.delivered += 1


def _loads(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal)


def _json_default(v: Any) -> Any:
    return str(v)  # Decimal (numeric's exact digits) and anything else wal2json gave as text


def _by_selection(bindings: list[Binding]) -> dict[tuple[str, ...] | None, list[Binding]]:
    groups: dict[tuple[str, ...] | None, list[Binding]] = defaultdict(list)
    for b in bindings:
        groups[b.sub.select].append(b)
    return groups


def _pick(rec: dict[str, Any], select: tuple[str, ...] | None) -> dict[str, Any]:
    return dict(rec) if not select else {k: v for k, v in rec.items() if k in select}


def _pick_columns(cols: list[dict[str, Any]], select: tuple[str, ...] | None) -> list[dict[str, Any]]:
    return list(cols) if not select else [c for c in cols if c.get("name") in select]
