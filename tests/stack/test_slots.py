"""Replication slots: names that say whose a slot is, the stale-slot rule, temporary slots for polling."""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import replace

import psycopg
import pytest

from stack.realtime import slots
from stack.realtime.slots import SlotOwner, drop_stale_slots, owner_gone, parse_slot_name, slot_name
from stack.realtime.wal import PollingSource
from stack.server import EmbeddedStack


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _name(owner: SlotOwner, seq: int = 0) -> str:
    return (f"{slots.PREFIX}{owner.host}_{owner.ns}_{owner.boot}_{slots._b36(owner.pid)}_{slots._b36(owner.start)}"
            f"_{slots._b36(seq)}")


def test_a_new_name_is_valid_unique_and_names_this_process() -> None:
    a, b = slot_name(), slot_name()
    assert a != b
    for n in (a, b):
        assert len(n) <= 63 and n.replace("_", "").isalnum() and n == n.lower()
    owner = parse_slot_name(a)
    assert owner is not None
    assert owner.pid == os.getpid() and owner.start == slots.process_start(os.getpid())
    assert owner_gone(owner) is False


def test_the_stale_rule() -> None:
    me = parse_slot_name(slot_name())
    assert me is not None
    assert owner_gone(replace(me, pid=_dead_pid())) is True  # this host, that process has exited
    assert owner_gone(replace(me, start=me.start + 1)) is True  # the pid was reused by another process
    assert owner_gone(replace(me, boot="ffff" if me.boot != "ffff" else "0000")) is True  # rebooted since
    assert owner_gone(replace(me, host="elsewhere", pid=_dead_pid())) is None  # another host: not ours to judge
    assert owner_gone(replace(me, ns="000000" if me.ns != "000000" else "111111", pid=_dead_pid())) is None
    assert parse_slot_name("zora_realtime_12345") is None  # named otherwise: never judged
    assert parse_slot_name("supabase_realtime_replication_slot") is None


def test_drop_stale_slots_drops_only_ours_whose_owner_is_gone(stack: EmbeddedStack,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    me = parse_slot_name(slot_name())
    assert me is not None
    stale = _name(replace(me, pid=_dead_pid()), seq=90007)  # far from the seqs of this process's stacks
    alive = _name(me, seq=90008)  # inactive, but its owner (this process) is alive: a reconnect in progress
    foreign = _name(replace(me, host="otherhost", pid=_dead_pid()), seq=90009)
    legacy = "zora_realtime_424242"
    names = [stale, alive, foreign, legacy]
    with psycopg.connect(stack.superuser_dsn, autocommit=True) as c:
        for n in names:
            c.execute("select pg_create_logical_replication_slot(%s, 'wal2json')", (n,))
    try:
        with caplog.at_level("WARNING", logger="stack.realtime.slots"):
            dropped = asyncio.run(drop_stale_slots(stack.superuser_dsn, report_foreign=True))
        assert dropped == [stale]
        with psycopg.connect(stack.superuser_dsn) as c:
            left = {r[0] for r in c.execute("select slot_name from pg_replication_slots")}
        assert stale not in left and {alive, foreign, legacy} <= left
        lines = [r.getMessage() for r in caplog.records]
        assert sum(stale in m and m.startswith("dropped stale") for m in lines) == 1
        assert any(foreign in m and "not ours to drop" in m for m in lines)
        assert any(legacy in m and "not ours to drop" in m for m in lines)
    finally:
        with psycopg.connect(stack.superuser_dsn, autocommit=True) as c:
            for n in names:
                c.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots"
                          " where slot_name = %s", (n,))


def test_polling_source_slot_is_temporary_and_goes_with_it(stack: EmbeddedStack) -> None:
    name = slot_name()

    async def go() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        async def nothing(tx: object) -> None:
            return None

        src = PollingSource(stack.superuser_dsn, name, nothing)
        task = asyncio.get_running_loop().create_task(src.run())
        await asyncio.wait_for(src.connected.wait(), 10)
        with psycopg.connect(stack.superuser_dsn) as c:
            during = c.execute("select temporary, active from pg_replication_slots where slot_name = %s",
                               (name,)).fetchall()
        await src.stop()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after: list[tuple[object, ...]] = []
        for _ in range(200):  # the backend drops it as it exits: bounded wait
            with psycopg.connect(stack.superuser_dsn) as c:
                after = c.execute("select 1 from pg_replication_slots where slot_name = %s", (name,)).fetchall()
            if not after:
                break
            await asyncio.sleep(0.01)
        return during, after

    during, after = asyncio.run(go())
    assert during == [(True, True)]
    assert after == []
