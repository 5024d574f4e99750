"""From a committed change to the frames each entitled channel receives.

For each change: the hub names the bindings whose event, table and filter
accept it; one database call (the table's checker, ``realtime.zora_chk_<oid>``) answers, for every
distinct subscriber identity among them, whether RLS lets that identity see the
row, and renders the row as PostgreSQL renders JSON; then every channel with a
visible binding gets one ``postgres_changes`` frame listing its binding ids.
No subscriber's claims can widen another's view: each check runs under the
subscriber's own role and claims. On a table whose SELECT policies can be rewritten
safely, one set-based query decides for all identities at once (stack/realtime/rls_sets.py);
any doubt (an unsafe policy, an error, a role it cannot vouch for) goes to the per-identity
checker. ``ZORA_REALTIME_RLS=per-identity`` turns the set-based path off (benchmarks, comparisons).

Rules taken from Supabase Realtime (walrus's ``realtime.apply_rls``): a role
receives a table's changes when it may select the table's primary key, and sees
only the columns it may select (``record``, ``old_record``, ``columns``), by
table or column grants. UPDATE's ``old_record`` is what REPLICA IDENTITY logged
(the primary key by default, the whole old row with REPLICA IDENTITY FULL), RLS
on or not: the new row passed the subscriber's RLS check. DELETE events cannot
be checked against RLS (the row is gone) and go to every subscriber whose role
may select the primary key, carrying only the primary key when RLS is on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads

from harness.phoenix.codec import Frame, RawPayload, dumps
from stack.db import connect
from stack.realtime.filters import Subscription
from stack.realtime.hub import Binding, Channel, Hub
from stack.realtime.rls_sets import SetPlan, plan_table
from stack.realtime.wal import Change, Transaction

__all__ = ["ChangeDispatcher"]

log = logging.getLogger("stack.realtime.changes")
TABLE_CACHE_TTL = 5.0


@dataclass(frozen=True)
class TableInfo:
    in_publication: bool
    rls_enabled: bool
    cols: list[dict[str, Any]]
    pk: list[str]
    checker: str  # realtime."zora_chk_<oid>", generated for this table


class ChangeDispatcher:
    def __init__(self, dsn: str, hub: Hub, delay_ms: int = 0) -> None:
        self.dsn = dsn
        self.hub = hub
        self.delay_s = max(0, delay_ms) / 1000
        self._conn: psycopg.AsyncConnection | None = None
        # One user of the connection at a time: the WAL task dispatching and joins preparing their tables.
        # (Closing a connection another task is waiting on would pull its socket from under the event loop.)
        self._lock = asyncio.Lock()
        self._tables: dict[tuple[str, str], TableInfo] = {}
        self._selectable: dict[tuple[str, str], dict[str, frozenset[str]]] = {}  # table -> role -> columns
        self._tables_at = 0.0
        self._set_plans: dict[tuple[str, str], SetPlan] = {}
        self._told: set[tuple[str, str, str]] = set()  # (schema, table, reason) already logged
        self._planned: dict[tuple[str, str, str], bool] = {}  # (set checker, role, claims) -> plannable
        self._to_probe: dict[tuple[str, str], set[tuple[str, str]]] = {}  # (set checker, table) -> identities
        self._prober: asyncio.Task[None] | None = None
        self._sweep_tables: set[tuple[str, str]] = set()  # joined since the last sweep
        self._sweeper: asyncio.Task[None] | None = None
        self._splits: dict[str, tuple[tuple[tuple[str, str], ...], list[int], list[int], str]] = {}
        self.rls_sets = os.environ.get("ZORA_REALTIME_RLS", "sets") != "per-identity"
        self.delivered = 0  # frames handed to connections (for benchmarks and tests)
        self.set_checks = 0  # changes decided by the set-based query alone (for tests)
        self.fallback_checks = 0  # RLS changes that asked the per-identity checker for some identity

    def forget_tables(self) -> None:
        """Called on DDL (NOTIFY zora_realtime_ddl): publication, RLS flags, columns or grants may have changed."""
        self._tables.clear()
        self._selectable.clear()
        self._set_plans.clear()

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await connect(self.dsn, autocommit=True)
            set_json_loads(_loads, self._conn)
            self.forget_tables()
        return self._conn

    async def close(self) -> None:
        for task in (self._prober, self._sweeper):
            if task is not None:
                task.cancel()
        async with self._lock:
            await self._drop_connection()

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        self.forget_tables()

    async def _table(self, conn: psycopg.AsyncConnection, schema: str, table: str) -> TableInfo:
        now = time.monotonic()
        if now - self._tables_at > TABLE_CACHE_TTL:  # a safety net should a DDL notification be missed
            self.forget_tables()
            self._tables_at = now
        info = self._tables.get((schema, table))
        if info is None:
            entity = sql.Identifier(schema, table).as_string(conn)
            for attempt in range(5):
                try:
                    cur = await conn.execute("select in_publication, rls_enabled, cols, pk, checker"
                                             " from realtime.zora_table_info(%s::regclass)", (entity,))
                    break
                except (psycopg.errors.UniqueViolation, psycopg.errors.InternalError_) as e:
                    # another stack on this database (re)creating the same checker at this moment
                    # ("tuple concurrently updated", or both creating it): theirs commits in a moment
                    racing = isinstance(e, psycopg.errors.UniqueViolation) or "concurrently updated" in str(e)
                    if attempt == 4 or not racing:
                        raise
                    await asyncio.sleep(0.005 * (attempt + 1))
            row = await cur.fetchone()
            assert row is not None
            info = TableInfo(bool(row[0]), bool(row[1]), list(row[2]), list(row[3]), str(row[4]))
            self._tables[(schema, table)] = info
        return info

    async def _columns_for(self, conn: psycopg.AsyncConnection, schema: str, table: str,
                           roles: set[str]) -> dict[str, frozenset[str]]:
        """The columns of the table each role may select (table or column grants), as walrus asks
        ``has_column_privilege``; a role that does not exist may select nothing."""
        known = self._selectable.setdefault((schema, table), {})
        missing = sorted(roles - known.keys())
        if missing:
            cur = await conn.execute(
                "select r.rolname::text, coalesce(array_agg(a.attname::text) filter (where a.attname is not null),"
                " '{}') from pg_catalog.pg_roles r left join pg_catalog.pg_attribute a on a.attrelid = %s::regclass"
                " and a.attnum > 0 and not a.attisdropped"
                " and pg_catalog.has_column_privilege(r.oid, a.attrelid, a.attnum, 'SELECT')"
                " where r.rolname = any(%s) group by r.rolname",
                (sql.Identifier(schema, table).as_string(conn), missing))
            found = {role: frozenset(cols) for role, cols in await cur.fetchall()}
            for role in missing:
                known[role] = found.get(role, frozenset())
        return known

    async def _set_plan(self, conn: psycopg.AsyncConnection, schema: str, table: str, info: TableInfo) -> SetPlan:
        plan = self._set_plans.get((schema, table))
        if plan is None:
            entity = sql.Identifier(schema, table).as_string(conn)
            try:
                cur = await conn.execute("select %s::regclass::oid::int8", (entity,))
                found = await cur.fetchone()
                assert found is not None
                plan = await plan_table(conn, int(found[0]), entity, table, info.pk)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as e:  # e.g. another stack creating the same function this moment: tried again
                # when the tables are next forgotten (DDL, or within TABLE_CACHE_TTL)
                plan = SetPlan(None, f"could not create the set-based checker: {str(e).strip().splitlines()[:1]}")
            self._set_plans[(schema, table)] = plan
            if plan.function is None and (schema, table, plan.reason) not in self._told:
                self._told.add((schema, table, plan.reason))
                log.info("RLS on %s.%s is checked per subscriber identity: %s", schema, table, plan.reason)
        return plan

    def _plannable(self, function: str, entity: str, identities: list[tuple[str, str]]) -> list[bool]:
        """Whether PostgreSQL can plan a query on the table under each identity (realtime.zora_plan_probe):
        asked once per identity and set checker (the answer depends on the policies and claims only), in the
        background between changes; an identity not asked yet is checked per identity meanwhile."""
        known = []
        for ident in identities:
            ok = self._planned.get((function, *ident))
            if ok is None:
                self._to_probe.setdefault((function, entity), set()).add(ident)
            known.append(bool(ok))
        if self._to_probe and (self._prober is None or self._prober.done()):
            self._prober = asyncio.get_running_loop().create_task(self._probe())
        return known

    def _split(self, function: str, change: Change, identities: list[tuple[str, str]]
               ) -> tuple[list[int], list[int], str]:
        """The identities the set checker decides (and their JSON), and those not probed yet (checked per
        identity). An identity PostgreSQL cannot even plan a query for is in neither: it sees nothing (its own
        query would fail; the per-identity checker's answer for it depends on the plans it cached before).
        The last answer per checker is kept: consecutive changes mostly have the same subscribers."""
        key = tuple(identities)
        last = self._splits.get(function)
        if last is not None and last[0] == key:
            return last[1], last[2], last[3]
        entity = sql.Identifier(change.schema, change.table).as_string(None)
        planned = self._plannable(function, entity, identities)
        sure = [i for i in range(len(identities)) if planned[i]]
        unknown = [i for i in range(len(identities)) if (function, *identities[i]) not in self._planned]
        out = (sure, unknown, _identities_json([identities[i] for i in sure]))
        if not unknown:
            self._splits[function] = (key, *out)
        return out

    async def _sweep(self) -> None:
        """Shortly after a burst of joins, probe the identities subscribed to the tables they joined, so
        their first change is decided by the set query (a join's own bindings exist once it is answered)."""
        await asyncio.sleep(0.05)
        while self._sweep_tables:
            schema, table = self._sweep_tables.pop()
            plan = self._set_plans.get((schema, table))
            if plan is not None and plan.function:
                idents = list({b.channel.identity(): None for b in self.hub._by_table.get((schema, table), ())})
                self._plannable(plan.function, sql.Identifier(schema, table).as_string(None), idents)

    async def _probe(self) -> None:
        while self._to_probe:
            key = next(iter(self._to_probe))
            function, entity = key
            batch = [self._to_probe[key].pop() for _ in range(min(100, len(self._to_probe[key])))]
            if not self._to_probe[key]:
                del self._to_probe[key]
            try:
                async with self._lock:
                    conn = await self._connection()
                    cur = await conn.execute("select realtime.zora_plan_probe(%s::regclass, %s::jsonb)",
                                             (entity, _identities_json(batch)))
                    got = await cur.fetchone()
            except psycopg.Error as e:  # asked again on their next change
                log.info("could not probe identities: %s", str(e).strip().splitlines()[:1])
                continue
            failed = set(got[0] or ()) if got else set(range(len(batch)))
            if len(self._planned) > 200_000:
                self._planned.clear()
                self._splits.clear()
            for j, ident in enumerate(batch):
                self._planned[(function, *ident)] = j not in failed
            await asyncio.sleep(0)  # let a change in between

    async def _visible(self, conn: psycopg.AsyncConnection, tx: Transaction, change: Change, info: TableInfo,
                       row: dict[str, Any], identities: list[tuple[str, str]], check_rows: bool
                       ) -> tuple[dict[str, Any], set[int]] | None:
        """The row as PostgreSQL renders it, and which identities (by index) may see it."""
        row_json = json.dumps(row, default=_json_default)
        todo = list(range(len(identities)))
        rec: dict[str, Any] | None = None
        visible: set[int] = set()
        if self.rls_sets and check_rows and info.rls_enabled and identities:
            plan = await self._set_plan(conn, change.schema, change.table, info)
            if plan.function:
                sure, unknown, sure_json = self._split(plan.function, change, identities)
                cur = await conn.execute(
                    sql.SQL("select rec, visible, unsure from {}(%s::jsonb, %s::jsonb, %s)").format(
                        sql.SQL(plan.function)), (row_json, sure_json, tx.xid))
                got = await cur.fetchone()
                if got is not None and got[1] is not None:
                    rec, visible = got[0], {sure[i] for i in got[1]}
                    todo = sorted(unknown + [sure[i] for i in got[2] or ()])
                    if not todo:
                        self.set_checks += 1
                        return rec, visible
        if todo:
            self.fallback_checks += info.rls_enabled and check_rows
            cur = await conn.execute(
                sql.SQL("select rec, visible from {}(%s::jsonb, %s::jsonb, %s, %s)").format(sql.SQL(info.checker)),
                (row_json, _identities_json([identities[i] for i in todo]), check_rows, tx.xid))
            result = await cur.fetchone()
            if result is None:
                return None
            rec = result[0]
            visible |= {todo[i] for i in (result[1] or ())}
        assert rec is not None
        return rec, visible

    async def prepare(self, subs: list[Subscription]) -> None:
        """Connect and learn the subscribed tables (their RLS checker made) before their first change:
        a join calls this, so the first change after "Subscribed to PostgreSQL" is not held up by it
        (an RLS check reads the row as it is then, and a row deleted meanwhile is visible to no one)."""
        async with self._lock:
            try:
                conn = await self._connection()
                for s in subs:
                    if s.schema != "*" and s.table != "*":
                        info = await self._table(conn, s.schema, s.table)
                        if self.rls_sets and info.rls_enabled:
                            await self._set_plan(conn, s.schema, s.table, info)
                            self._sweep_tables.add((s.schema, s.table))
                if self._sweep_tables and (self._sweeper is None or self._sweeper.done()):
                    self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
            except psycopg.Error as e:  # the first change will try again
                log.info("could not prepare %s: %s", [f"{s.schema}.{s.table}" for s in subs], str(e).strip()[:200])
                await self._drop_connection()

    async def on_transaction(self, tx: Transaction) -> None:
        for change in tx.changes:
            bindings = self.hub.candidates(change)
            if bindings:
                if self.delay_s:  # injected fault (negative controls): a slow server
                    await asyncio.sleep(self.delay_s)
                await self._dispatch_retrying(tx, change, bindings)

    async def _dispatch_retrying(self, tx: Transaction, change: Change, bindings: list[Binding]) -> None:
        """A lost connection (PostgreSQL restarting) is retried, bounded; any other failure drops this change."""
        delay = 0.01
        for _attempt in range(60):  # at most ~15 s of waiting for the database to come back
            try:
                async with self._lock:
                    try:
                        await self._dispatch(tx, change, bindings)
                        return
                    except psycopg.Error:
                        await self._drop_connection()
                        raise
            except psycopg.OperationalError as e:
                log.info("database connection lost, retrying change: %s", str(e).strip().splitlines()[:1])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except psycopg.Error as e:
                log.warning("dropping change on %s.%s: %s", change.schema, change.table,
                            str(e).strip().splitlines()[:1])
                return
            except Exception:  # one bad change must not stop the stream for everyone
                log.exception("dropping change on %s.%s", change.schema, change.table)
                return
        log.warning("dropping change on %s.%s: database unreachable", change.schema, change.table)

    async def _dispatch(self, tx: Transaction, change: Change, bindings: list[Binding]) -> None:
        by_channel: dict[Channel, list[Binding]] = defaultdict(list)
        for b in bindings:
            by_channel[b.channel].append(b)
        conn = await self._connection()
        info = await self._table(conn, change.schema, change.table)
        if not info.in_publication:
            return
        identities: dict[tuple[str, str], int] = {}
        # grouped by role so the checker switches role (and re-plans) as rarely as possible
        for ch in sorted(by_channel, key=lambda c: c.role):
            identities.setdefault(ch.identity(), len(identities))
        is_delete = change.action == "DELETE"
        row = change.identity if is_delete else change.record
        checked = await self._visible(conn, tx, change, info, row, list(identities), not is_delete)
        if checked is None:
            return
        rec, visible_set = checked
        receivers = [(ch, bs) for ch, bs in by_channel.items()
                     if identities[ch.identity()] in visible_set and not ch.closed]
        if not receivers:
            return
        selectable = await self._columns_for(conn, change.schema, change.table, {ch.role for ch, _ in receivers})
        old: dict[str, Any] | None = None
        if change.action == "UPDATE":  # what REPLICA IDENTITY logged: the new row passed RLS
            old = dict(change.identity)
        elif is_delete:  # not checkable against RLS: with RLS on, only the primary key leaves the database
            keep = set(info.pk) if (info.rls_enabled or not change.identity) else set(change.identity)
            old = {k: v for k, v in rec.items() if k in keep}
        encoded: dict[tuple[tuple[str, ...] | None, frozenset[str]], str] = {}
        for ch, bs in receivers:
            cols = selectable[ch.role]
            for select, group in _by_selection(bs).items():
                data = encoded.get((select, cols))
                if data is None:  # the same bytes for every channel that sees the same: encode once per change
                    body: dict[str, Any] = {
                        "schema": change.schema,
                        "table": change.table,
                        "commit_timestamp": tx.commit_timestamp,
                        "type": change.action,
                        "columns": [c for c in _pick_columns(info.cols, select) if c.get("name") in cols],
                        "errors": None,
                    }
                    if not is_delete:
                        body["record"] = _visible(_pick(rec, select), cols)
                    if old is not None:
                        body["old_record"] = _visible(_pick(old, select), cols)
                    data = encoded[(select, cols)] = dumps(body)
                ch.outbox.send(Frame(topic=ch.topic, event="postgres_changes",
                                     payload=RawPayload(ids=[b.id for b in group], data=data)))
                self.delivered += 1


def _identities_json(identities: list[tuple[str, str]]) -> str:
    return "[" + ",".join(f'["{role}",{claims}]' for role, claims in identities) + "]"


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


def _visible(rec: dict[str, Any], cols: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k in cols}


def _pick_columns(cols: list[dict[str, Any]], select: tuple[str, ...] | None) -> list[dict[str, Any]]:
    return list(cols) if not select else [c for c in cols if c.get("name") in select]
