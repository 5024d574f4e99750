"""Faults: PostgreSQL restarts under a stream of writes; the realtime server restarts under clients."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from stack.server import EmbeddedStack
from tests.stack.rt_support import RawClient, ensure_rt_table, user_token, write, ws_url


@pytest.fixture
def own_stack() -> Iterator[EmbeddedStack]:
    """Restarting PostgreSQL would disturb the session stack's other users: this test gets its own."""
    with EmbeddedStack.from_fixtures() as s:
        ensure_rt_table(s)
        yield s


def _writer(stack: EmbeddedStack, owner: str, n: int, stop: threading.Event) -> None:
    """Insert n rows, one per transaction, reconnecting (bounded) across a restart."""
    conn = None
    i = 0
    deadline = time.monotonic() + 60
    while i < n and time.monotonic() < deadline and not stop.is_set():
        try:
            if conn is None:
                conn = psycopg.connect(stack.superuser_dsn, autocommit=True, connect_timeout=2)
            conn.execute("insert into rt_items (owner, note) values (%s, %s)", (owner, f"w{i}"))
            i += 1
            time.sleep(0.003)
        except psycopg.OperationalError:
            conn = None  # outcome of the last insert unknown: the table itself is the ground truth
            time.sleep(0.02)
    if conn is not None:
        conn.close()


def test_no_event_lost_or_duplicated_across_postgres_restart(own_stack: EmbeddedStack) -> None:
    stack = own_stack
    owner = str(uuid.uuid4())

    async def go() -> tuple[list[int], list[int]]:
        c = await RawClient.connect(ws_url(stack))
        await c.join("realtime:restart", {"postgres_changes": [{"event": "INSERT", "schema": "public",
                                                               "table": "rt_items", "filter": f"owner=eq.{owner}"}]},
                     token=user_token(stack, owner))
        stop = threading.Event()
        t = threading.Thread(target=_writer, args=(stack, owner, 400, stop))
        t.start()
        await asyncio.sleep(0.4)
        await asyncio.to_thread(stack.restart_postgres, "fast")
        await asyncio.sleep(0.2)
        await asyncio.to_thread(stack.restart_postgres, "immediate")  # a crash, not a clean shutdown
        await asyncio.to_thread(t.join, 90)
        committed = [r[0] for r in write(stack, "select id from rt_items where owner = %s order by id", (owner,))]
        deadline = time.monotonic() + 30
        while len(c.changes()) < len(committed) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive now
        got = [f.payload["data"]["record"]["id"] for f in c.changes()]
        await c.close()
        return committed, got

    committed, got = asyncio.run(go())
    assert len(committed) > 300
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicated events"
    assert sorted(got) == committed, f"lost {sorted(set(committed) - set(got))[:10]}"


def test_realtime_restart_drops_sockets_and_refuses_then_accepts(own_stack: EmbeddedStack) -> None:
    stack = own_stack

    async def go() -> None:
        owner = str(uuid.uuid4())
        c = await RawClient.connect(ws_url(stack))
        await c.join("realtime:rr", {"postgres_changes": [{"event": "*", "schema": "public", "table": "rt_items"}]},
                     token=user_token(stack, owner))
        await asyncio.to_thread(stack.restart_realtime)
        await asyncio.wait_for(c._reader, 5)  # the server closed the socket
        assert c.ws.close_code == 1012
        c2 = await RawClient.connect(ws_url(stack))
        await c2.join("realtime:rr", {"postgres_changes": [{"event": "*", "schema": "public",
                                                           "table": "rt_items"}]}, token=user_token(stack, owner))
        write(stack, "insert into rt_items (owner, note) values (%s, 'after')", (owner,))
        f = await c2.wait(lambda f: f.event == "postgres_changes")
        assert f.payload["data"]["record"]["note"] == "after"
        await c2.close()

    asyncio.run(go())


def test_hosted_polling_mode_delivers_the_same_events() -> None:
    with EmbeddedStack.from_fixtures(realtime_mode="hosted-polling") as stack:
        ensure_rt_table(stack)
        owner = str(uuid.uuid4())

        async def go() -> None:
            c = await RawClient.connect(ws_url(stack))
            await c.join("realtime:poll", {"postgres_changes": [{"event": "*", "schema": "public",
                                                                "table": "rt_items"}]}, token=user_token(stack, owner))
            for i in range(5):
                write(stack, "insert into rt_items (owner, note) values (%s, %s)", (owner, f"p{i}"))
            await c.wait(lambda f: len(c.changes()) == 5, timeout=10)
            assert [f.payload["data"]["record"]["note"] for f in c.changes()] == [f"p{i}" for i in range(5)]
            assert type(stack._app.state.realtime.source).__name__ == "PollingSource"
            await c.close()

        asyncio.run(go())


@pytest.mark.parametrize("resume", ["supabase", "keep-everything"])
def test_change_committed_while_realtime_is_down(resume: str) -> None:
    """supabase (default): a change committed while realtime was down is never delivered after the restart, as
    Supabase's temporary slot loses it (the apps must refetch); keep-everything: it is delivered once."""
    with EmbeddedStack.from_fixtures(realtime_resume=resume) as stack:
        ensure_rt_table(stack)
        owner = str(uuid.uuid4())
        sub = {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "rt_items",
                                     "filter": f"owner=eq.{owner}"}]}
        rt = stack._app.state.realtime

        async def go() -> list[str]:
            c = await RawClient.connect(ws_url(stack))
            await c.join("realtime:down", sub, token=user_token(stack, owner))
            write(stack, "insert into rt_items (owner, note) values (%s, 'before')", (owner,))
            await c.wait(lambda f: f.event == "postgres_changes")
            restart = asyncio.ensure_future(asyncio.to_thread(stack.restart_realtime, 1.0))
            await asyncio.wait_for(c._reader, 5)  # the server dropped the socket: realtime is down
            assert not rt.accepting
            write(stack, "insert into rt_items (owner, note) values (%s, 'while down')", (owner,))
            await restart
            c2 = await RawClient.connect(ws_url(stack))
            await c2.join("realtime:down", sub, token=user_token(stack, owner))
            write(stack, "insert into rt_items (owner, note) values (%s, 'after')", (owner,))
            await c2.wait(lambda f: f.event == "postgres_changes" and f.payload["data"]["record"]["note"] == "after")
            await asyncio.sleep(0.3)  # a late or duplicated one would arrive now
            notes = [f.payload["data"]["record"]["note"] for f in c2.changes()]
            await c2.close()
            return notes

        notes = asyncio.run(go())
        assert stack.target().public()["realtime_resume"] == resume
    if resume == "supabase":
        assert notes == ["after"]
    else:
        assert notes == ["while down", "after"]
