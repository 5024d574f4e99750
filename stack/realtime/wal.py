"""Committed changes from PostgreSQL's logical decoding (wal2json, format v2).

Two sources with one output (``Transaction``):

* ``StreamingSource`` (default): ``pg_recvlogical`` holds a replication
  connection on our (permanent) slot and the server pushes each commit as it
  happens; no sleep anywhere. If PostgreSQL goes away the source reconnects and
  resumes from the slot; transactions it already handed out (the slot's confirmed
  position lags what we read) are dropped by commit LSN, so nothing is lost or
  repeated. pg_recvlogical gets the parent-death signal (SIGTERM): it runs in its
  own session (a terminal's Ctrl-C reaches only us, and we stop it in order), and
  if we are killed the kernel stops it, so no orphan keeps the slot busy.
* ``PollingSource`` (``hosted-polling`` mode): reproduces hosted Supabase
  Realtime's cadence, reading the slot with ``pg_logical_slot_get_changes``
  every 100 ms and 5x that (500 ms) after an empty poll (supabase/realtime
  ``replication_poller.ex``), so a team can preview production's latency tail.
  Its slot is temporary, as hosted Realtime's is: it lives as long as the polling
  connection, so nothing is left behind however the stack ends; like hosted
  Realtime, a reconnect starts at the current end of the WAL.

Why pg_recvlogical: psycopg 3 does not speak the replication protocol, and
PostgreSQL ships this client for exactly this job. Slot names and the cleanup of
leftovers: ``stack.realtime.slots``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg

from stack.db import connect
from stack.postgres import find_bindir

__all__ = ["Change", "PollingSource", "StreamingSource", "Transaction", "WalDecoder", "WalFormatError", "parse_lsn"]

log = logging.getLogger("stack.realtime.wal")
WAL2JSON_OPTIONS = {"format-version": "2", "include-timestamp": "1", "include-lsn": "1", "include-pk": "1",
                    "include-xids": "1", "include-type-oids": "0"}
ACTIONS = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}


def parse_lsn(text: str) -> int:
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def commit_time_iso(ts: str) -> str:
    """wal2json's ``2026-11-24 21:46:05.009807+00`` -> ``2026-11-24T21:46:05.009807Z`` (UTC, microseconds)."""
    s = ts.strip()
    if len(s) >= 3 and s[-3] in "+-" and s[-2:].isdigit():
        s += ":00"
    dt = datetime.fromisoformat(s).astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Change:
    schema: str
    table: str
    action: str  # INSERT | UPDATE | DELETE
    types: dict[str, str]  # column -> PostgreSQL type as wal2json names it
    record: dict[str, Any]  # new row (INSERT, UPDATE)
    identity: dict[str, Any]  # old key, or the whole old row with REPLICA IDENTITY FULL (UPDATE, DELETE)
    pk: tuple[str, ...]


@dataclass
class Transaction:
    commit_lsn: int
    commit_timestamp: str
    changes: list[Change] = field(default_factory=list)
    received_ns: int = 0  # perf_counter_ns when the commit record arrived
    xid: int | None = None  # 32-bit transaction id, to wait until the commit is visible to new snapshots


def _columns(items: Any) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    for c in items or ():
        name, typ, val = c.get("name"), c.get("type", "text"), c.get("value")
        if typ in ("json", "jsonb") and isinstance(val, str):
            with contextlib.suppress(ValueError):
                val = json.loads(val)
        values[name] = val
        types[name] = typ
    return values, types


class WalFormatError(ValueError):
    """A line that is not a wal2json v2 message (torn, or garbage); its transaction is dropped whole."""


class WalDecoder:
    """Turns wal2json v2 messages (one JSON object each) into whole transactions. Sans-IO.

    A transaction is handed out only complete: after a bad line (``WalFormatError``) the rest of
    its transaction is skipped up to the next ``B``, so no subscriber ever sees half of one.
    """

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.clock = clock  # stamps ``Transaction.received_ns``
        self._changes: list[Change] = []
        self._broken = False

    def feed(self, message: str | bytes) -> Transaction | None:
        try:
            # Decimal keeps numeric's digits (2.50 stays 2.50); PostgreSQL re-renders the row from it.
            msg = json.loads(message, parse_float=Decimal)
            if not isinstance(msg, dict):
                raise TypeError("not an object")
            return self._message(msg)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self._changes, self._broken = [], True
            text = message.decode(errors="replace") if isinstance(message, bytes) else message
            raise WalFormatError(f"not a wal2json v2 message ({type(e).__name__}): {text[:120]!r}") from e

    def _message(self, msg: dict[str, Any]) -> Transaction | None:
        action = msg.get("action")
        if action == "B":
            self._changes, self._broken = [], False
            return None
        if action == "C":
            xid = msg.get("xid")
            tx = Transaction(commit_lsn=parse_lsn(msg["lsn"]), commit_timestamp=commit_time_iso(msg["timestamp"]),
                             changes=self._changes, received_ns=self.clock(),
                             xid=int(xid) if xid is not None else None)
            broken, self._changes, self._broken = self._broken, [], False
            return None if broken else tx
        if self._broken:
            return None
        if action in ACTIONS:
            record, types = _columns(msg.get("columns"))
            identity, id_types = _columns(msg.get("identity"))
            for k, v in id_types.items():
                types.setdefault(k, v)
            pk = tuple(p["name"] for p in msg.get("pk") or ())
            self._changes.append(Change(schema=msg["schema"], table=msg["table"], action=ACTIONS[action],
                                        types=types, record=record, identity=identity, pk=pk))
        return None  # T (truncate) and M (messages) are not postgres_changes events


OnTransaction = Callable[[Transaction], Awaitable[None]]
_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn (runs in the child between fork and exec): SIGTERM when the forking thread's process
    dies, and exit at once if it already has (it died between fork and prctl)."""

    def preexec() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class StreamingSource:
    """Push: pg_recvlogical on a replication connection, restarted when PostgreSQL comes back."""

    def __init__(self, dsn: str, slot: str, on_transaction: OnTransaction) -> None:
        self.dsn = dsn
        self.slot = slot
        self.on_transaction = on_transaction
        self.last_commit_lsn = 0
        self.connected = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    def _command(self) -> tuple[list[str], dict[str, str]]:
        info = psycopg.conninfo.conninfo_to_dict(self.dsn)
        password = str(info.pop("password", "") or "")
        args = [str(find_bindir() / "pg_recvlogical"), "-d", psycopg.conninfo.make_conninfo(**info),  # type: ignore[arg-type]
                "--slot", self.slot, "--start", "-f", "-", "--no-loop", "-F", "0", "-s", "1"]
        for k, v in WAL2JSON_OPTIONS.items():
            args += ["-o", f"{k}={v}"]
        env = dict(os.environ)
        if password:
            env["PGPASSWORD"] = password  # never on the command line, where `ps` would show it
        return args, env

    async def run(self) -> None:
        backoff = 0.01
        while not self._stopping:
            args, env = self._command()
            # The parent-death signal follows the thread that forks: this event loop's thread, which lives
            # until the stack stops (and stops pg_recvlogical itself before that).
            self._proc = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
                limit=64 * 1024 * 1024, start_new_session=True, preexec_fn=_die_with(os.getpid()))
            decoder = WalDecoder()
            got_any = False
            assert self._proc.stdout is not None
            try:
                await self._mark_connected_when_streaming()
                while True:
                    line = await self._proc.stdout.readline()
                    if not line:
                        break
                    got_any = True
                    try:
                        tx = decoder.feed(line)
                    except WalFormatError as e:
                        log.warning("%s", e)
                        continue
                    if tx is None:
                        continue
                    if tx.commit_lsn <= self.last_commit_lsn:
                        continue  # already delivered before a reconnect: the slot replays from its confirmed LSN
                    self.last_commit_lsn = tx.commit_lsn
                    if tx.changes:
                        await self.on_transaction(tx)
            finally:
                self.connected.clear()
                with contextlib.suppress(ProcessLookupError):
                    self._proc.terminate()
                with contextlib.suppress(Exception):
                    await self._proc.wait()
            if self._stopping:
                break
            err = b""
            if self._proc.stderr is not None:
                with contextlib.suppress(Exception):
                    err = await self._proc.stderr.read()
            log.warning("pg_recvlogical exited (%s): %s", self._proc.returncode, err.decode(errors="replace")[-300:])
            backoff = 0.01 if got_any else min(backoff * 2, 0.5)
            await asyncio.sleep(backoff)

    async def _mark_connected_when_streaming(self) -> None:
        """The slot is held by our walsender once pg_stat_replication shows it; wait for that (bounded)."""
        for _ in range(500):  # 500 x 10 ms
            if self._proc is None or self._proc.returncode is not None:
                return
            try:
                async with await connect(self.dsn, autocommit=True, connect_timeout=2) as c:
                    cur = await c.execute("select active from pg_replication_slots where slot_name = %s", (self.slot,))
                    row = await cur.fetchone()
                    if row and row[0]:
                        self.connected.set()
                        return
            except psycopg.Error:
                pass
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stopping = True
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()


class PollingSource:
    """Hosted Supabase's cadence: poll a temporary slot every 100 ms, 500 ms after an empty poll."""

    def __init__(self, dsn: str, slot: str, on_transaction: OnTransaction,
                 interval: float = 0.1, idle_interval: float = 0.5, max_changes: int = 1000,
                 temporary: bool = True) -> None:
        """``temporary``: make the slot, living as long as the polling connection (hosted Realtime); else read
        the permanent slot the server made (``--realtime-resume keep-everything``)."""
        self.temporary = temporary
        self.dsn = dsn
        self.slot = slot
        self.on_transaction = on_transaction
        self.interval = interval
        self.idle_interval = idle_interval
        self.max_changes = max_changes
        self.connected = asyncio.Event()
        self._stopping = False

    async def run(self) -> None:
        opts: list[str] = []
        for k, v in WAL2JSON_OPTIONS.items():
            opts += [k, v]
        query = ("select data from pg_logical_slot_get_changes(%s, null, %s, "
                 + ", ".join(["%s"] * len(opts)) + ")")
        while not self._stopping:
            try:
                async with await connect(self.dsn, autocommit=True) as conn:
                    if self.temporary:
                        await self._create_temporary_slot(conn)
                    self.connected.set()
                    while not self._stopping:
                        cur = await conn.execute(query, (self.slot, self.max_changes, *opts))
                        rows = await cur.fetchall()
                        decoder = WalDecoder()
                        for (data,) in rows:
                            try:
                                tx = decoder.feed(data)
                            except WalFormatError as e:
                                log.warning("%s", e)
                                continue
                            if tx is not None and tx.changes:
                                await self.on_transaction(tx)
                        await asyncio.sleep(self.interval if rows else self.idle_interval)
            except psycopg.Error as e:
                self.connected.clear()
                log.warning("polling source lost the database: %s", str(e).strip().splitlines()[:1])
                await asyncio.sleep(0.1)

    async def _create_temporary_slot(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The slot dies with this connection. One of the same name may still be held by our previous
        connection's backend (a realtime restart) for the moment it takes to exit: wait for that, bounded."""
        for attempt in range(200):  # 200 x 10 ms
            try:
                await conn.execute("select pg_create_logical_replication_slot(%s, 'wal2json', true)", (self.slot,))
                return
            except psycopg.errors.DuplicateObject:
                if attempt == 199:
                    raise
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stopping = True
