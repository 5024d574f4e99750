"""Our logical replication slots: how they are named, and when a leftover one may be dropped.

A slot holds WAL on the database for as long as it exists, so one left behind by a killed
stack fills the disk of a database other people use. Where we can, slots are temporary
(the polling source: PostgreSQL drops a temporary slot with the session that created it,
as hosted Supabase Realtime's poller does). ``pg_recvlogical`` 15 cannot create or use a
temporary slot (a temporary slot belongs to the session that made it, and pg_recvlogical
has no ``--temporary``), so the streaming source keeps a permanent slot, dropped when the
stack stops, and leftovers are dropped at the next start and stop by the rule below.

The name says whose a slot is: ``zora_realtime_<host>_<ns>_<boot>_<pid>_<start>_<seq>``:
``host`` the hostname (letters and digits, at most 16, for people), ``ns`` 6 hex of a hash of
the full hostname and the PID namespace (where a pid means this process), ``boot`` 4 hex of
a hash of the kernel's boot id, ``pid`` and ``start`` (the process's start time in clock
ticks since boot, so a reused pid is told apart) in base 36, ``seq`` one per stack in the
process. The rule (``owner_gone``): a slot is stale, and dropped, only when it is
inactive, not temporary, named this way, its ``host`` and ``ns`` are ours, and either its
``boot`` is not ours (this machine rebooted since) or no live process has that pid with that
start time. An active slot is never dropped. Slots of other hosts (or PID namespaces) and
slots named otherwise are never dropped: we cannot prove their owner is gone; an inactive
one is named in the log at start, with how to drop it by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import psycopg

from stack.db import connect

__all__ = ["PREFIX", "SlotOwner", "drop_slot", "drop_stale_slots", "ensure_slot", "owner_gone", "parse_slot_name",
           "slot_name"]

log = logging.getLogger("stack.realtime.slots")
PREFIX = "zora_realtime_"
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_SEQ = itertools.count()
_NAME = re.compile(r"^zora_realtime_([a-z0-9]{1,16})_([0-9a-f]{6})_([0-9a-f]{4})_([0-9a-z]+)_([0-9a-z]+)_([0-9a-z]+)$")


@dataclass(frozen=True)
class SlotOwner:
    host: str
    ns: str
    boot: str
    pid: int
    start: int


def _b36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


def _hash(text: str, n: int) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:n]


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, field 22 of /proc/PID/stat); None if there is none,
    or it is a zombie (it has exited and only awaits its parent)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] == "Z":
        return None
    return int(fields[19])


def _here() -> tuple[str, str, str]:
    hostname = socket.gethostname()
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    host = re.sub(r"[^a-z0-9]", "", hostname.lower())[:16] or "host"
    return host, _hash(f"{hostname}\0{pidns}", 6), _hash(_read("/proc/sys/kernel/random/boot_id"), 4)


def slot_name() -> str:
    """A new slot name for a stack of this process (unique per call)."""
    host, ns, boot = _here()
    pid = os.getpid()
    return f"{PREFIX}{host}_{ns}_{boot}_{_b36(pid)}_{_b36(process_start(pid) or 0)}_{_b36(next(_SEQ))}"


def parse_slot_name(name: str) -> SlotOwner | None:
    m = _NAME.match(name)
    if m is None:
        return None
    host, ns, boot, pid, start, _seq = m.groups()
    return SlotOwner(host=host, ns=ns, boot=boot, pid=int(pid, 36), start=int(start, 36))


def owner_gone(owner: SlotOwner) -> bool | None:
    """True: the slot's owner has provably exited; False: it is alive; None: not ours to judge (another host)."""
    host, ns, boot = _here()
    if (owner.host, owner.ns) != (host, ns):
        return None
    if owner.boot != boot:
        return True  # this machine has rebooted since: every process of that boot is gone
    return process_start(owner.pid) != owner.start


async def drop_stale_slots(dsn: str, report_foreign: bool = False) -> list[str]:
    """Drop every inactive slot of ours whose owner is gone (one log line each); return their names.

    With ``report_foreign``, also name (not drop) inactive slots we cannot judge, once each.
    """
    dropped: list[str] = []
    try:
        async with await connect(dsn, autocommit=True, connect_timeout=5) as conn:
            cur = await conn.execute(
                "select slot_name, database from pg_replication_slots where slot_type = 'logical'"
                " and not active and not temporary and slot_name like 'zora\\_realtime\\_%'")
            for name, database in await cur.fetchall():
                owner = parse_slot_name(name)
                verdict = owner_gone(owner) if owner is not None else None
                if verdict is None:
                    if report_foreign:
                        whose = f"host {owner.host}" if owner is not None else "an unknown owner"
                        log.warning("replication slot %s (database %s, %s) is inactive and holds WAL; not ours to"
                                    " drop: if its stack is gone, run select pg_drop_replication_slot('%s')",
                                    name, database, whose, name)
                    continue
                if not verdict:
                    continue  # its owner is alive (e.g. reconnecting after a PostgreSQL restart)
                try:
                    await conn.execute("select pg_drop_replication_slot(%s)", (name,))
                except psycopg.Error:
                    continue  # taken meanwhile, or already gone: not stale after all
                assert owner is not None
                log.warning("dropped stale replication slot %s (database %s): its owner, pid %d on this host,"
                            " is gone", name, database, owner.pid)
                dropped.append(name)
    except psycopg.Error as e:
        log.warning("could not check for stale replication slots: %s", str(e).strip().splitlines()[:1])
    return dropped


async def ensure_slot(dsn: str, slot: str, fresh: bool) -> None:
    """Create our permanent slot; with ``fresh`` start it at the current WAL end (changes before now are not
    ours). A slot of that name can only be this process's own (restart of the realtime server)."""
    async with await connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("select active_pid from pg_replication_slots where slot_name = %s", (slot,))
        row = await cur.fetchone()
        if row is not None and fresh:
            if row[0] is not None:
                await conn.execute("select pg_terminate_backend(%s)", (row[0],))
                for _ in range(100):  # bounded: 100 x 10 ms
                    cur = await conn.execute("select active from pg_replication_slots where slot_name = %s", (slot,))
                    r = await cur.fetchone()
                    if not r or not r[0]:
                        break
                    await asyncio.sleep(0.01)
            await conn.execute("select pg_drop_replication_slot(%s)", (slot,))
            row = None
        if row is None:
            await conn.execute("select pg_create_logical_replication_slot(%s, 'wal2json')", (slot,))


async def drop_slot(dsn: str, slot: str, timeout: float = 5.0) -> None:
    """Drop our slot once its walsender has let go of it (pg_recvlogical was just stopped), bounded."""
    with contextlib.suppress(psycopg.Error):
        async with await connect(dsn, autocommit=True, connect_timeout=5) as conn:
            for _ in range(max(1, int(timeout / 0.01))):
                cur = await conn.execute("select active from pg_replication_slots where slot_name = %s", (slot,))
                row = await cur.fetchone()
                if row is None:
                    return
                if not row[0]:
                    await conn.execute("select pg_drop_replication_slot(%s)", (slot,))
                    return
                await asyncio.sleep(0.01)
            log.warning("replication slot %s is still in use; not dropped", slot)
