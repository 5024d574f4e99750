"""Realtime through supabase-py unchanged (acreate_client -> realtime-py, vsn 1.0.0)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from realtime import AsyncRealtimeClient
from realtime.types import PostgresChangesPayload, RealtimePostgresChangesListenEvent
from supabase import acreate_client

from stack.server import EmbeddedStack
from tests.stack.rt_support import ensure_rt_table, subscribed, until, user_token, write


@pytest.fixture(scope="module", autouse=True)
def rt_table(stack: EmbeddedStack) -> None:
    ensure_rt_table(stack)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 90))


def into(payloads: list[dict[str, Any]]) -> Callable[[PostgresChangesPayload], None]:
    """A postgres_changes callback keeping each payload (a plain dict, as the checks read it) in ``payloads``."""
    return lambda p: payloads.append(dict(p))


def test_insert_update_delete_callbacks_with_and_without_filter(stack: EmbeddedStack) -> None:
    async def go() -> None:
        owner = str(uuid.uuid4())
        client = await acreate_client(stack.api_url, stack.anon_key)
        await client.realtime.set_auth(user_token(stack, owner))
        everything: list[dict[str, Any]] = []
        filtered: list[dict[str, Any]] = []
        sys1: list[dict[str, Any]] = []
        sys2: list[dict[str, Any]] = []
        ch1 = client.channel("py-all").on_postgres_changes(RealtimePostgresChangesListenEvent.All, into(everything),
                                                           table="rt_items", schema="public")
        ch2 = client.channel("py-kind").on_postgres_changes(RealtimePostgresChangesListenEvent.Insert, into(filtered),
                                                            table="rt_items", schema="public", filter="kind=eq.b")
        await subscribed(ch1, sys1)
        await subscribed(ch2, sys2)
        rid = write(stack, "insert into rt_items (owner, kind, note) values (%s, 'a', 'one') returning id",
                    (owner,))[0][0]
        write(stack, "insert into rt_items (owner, kind, note) values (%s, 'b', 'two')", (owner,))
        write(stack, "update rt_items set note = 'uno' where id = %s", (rid,))
        write(stack, "delete from rt_items where id = %s", (rid,))
        await until(lambda: len(everything) >= 4 and len(filtered) >= 1)
        types = [p["data"]["type"] for p in everything]
        assert types == ["INSERT", "INSERT", "UPDATE", "DELETE"]
        ins, _, upd, dele = (p["data"] for p in everything)
        assert ins["record"]["note"] == "one" and ins["schema"] == "public" and ins["table"] == "rt_items"
        assert ins["commit_timestamp"].endswith("Z")
        assert {c["name"] for c in ins["columns"]} >= {"id", "owner", "kind", "n", "note"}
        assert upd["record"]["note"] == "uno" and upd["old_record"] == {"id": rid}
        assert dele["old_record"] == {"id": rid} and "record" not in dele
        assert [p["data"]["record"]["note"] for p in filtered] == ["two"]
        await client.realtime.close()
    run(go())


def test_broadcast_ack_self_and_presence(stack: EmbeddedStack) -> None:
    async def go() -> None:
        a = await acreate_client(stack.api_url, stack.anon_key)
        b = await acreate_client(stack.api_url, stack.anon_key)
        got_a: list[Any] = []
        got_b: list[Any] = []
        joins: list[str] = []
        leaves: list[str] = []
        ca = a.channel("py-room", {"config": {"broadcast": {"self": True, "ack": True},
                                              "presence": {"key": "alice", "enabled": True}, "private": False}})
        ca.on_broadcast("chat", got_a.append)
        ca.on_presence_join(lambda key, cur, new: joins.append(key))
        ca.on_presence_leave(lambda key, cur, left: leaves.append(key))
        cb = b.channel("py-room", {"config": {"broadcast": {"self": False}, "presence": {"key": "bob", "enabled": True},
                                              "private": False}})
        cb.on_broadcast("chat", got_b.append)
        await ca.subscribe()
        await cb.subscribe()
        await ca.send_broadcast("chat", {"text": "hello"})
        await until(lambda: bool(got_a and got_b))
        assert got_b[0]["payload"] == {"text": "hello"} and got_a[0]["event"] == "chat"
        await cb.track({"status": "online"})
        await until(lambda: "bob" in joins)
        assert "bob" in ca.presence_state()
        await cb.untrack()
        await until(lambda: "bob" in leaves)
        await a.realtime.close()
        await b.realtime.close()
    run(go())


def test_set_auth_refresh_keeps_channel_and_expiry_closes_it(stack: EmbeddedStack) -> None:
    async def go() -> None:
        owner = str(uuid.uuid4())
        client = AsyncRealtimeClient(f"{stack.api_url}/realtime/v1", stack.anon_key, auto_reconnect=False)
        await client.connect()
        await client.set_auth(user_token(stack, owner, exp_in=2))
        got: list[dict[str, Any]] = []
        system: list[dict[str, Any]] = []
        states: list[Any] = []
        ch = client.channel("py-token").on_postgres_changes(RealtimePostgresChangesListenEvent.Insert, into(got),
                                                            table="rt_items", schema="public")
        await subscribed(ch, system, states)
        await client.set_auth(user_token(stack, owner, exp_in=3600))  # refresh before expiry
        await asyncio.sleep(2.5)
        write(stack, "insert into rt_items (owner, note) values (%s, 'still open')", (owner,))
        await until(lambda: len(got) == 1)
        assert ch.is_joined
        # now let a token expire: the server says so (realtime-py routes a system error to the
        # channel's error state) and closes the channel
        await client.set_auth(user_token(stack, owner, exp_in=1))
        await until(lambda: any("CHANNEL_ERROR" in st for st, _ in states), timeout=5)
        err = next(e for st, e in states if "CHANNEL_ERROR" in st)
        assert "Token has expired" in err
        await until(lambda: ch.is_closed, timeout=5)
        await client.close()
    run(go())


def test_client_rejoins_by_itself_after_realtime_restart(stack: EmbeddedStack) -> None:
    async def go() -> None:
        owner = str(uuid.uuid4())
        client = AsyncRealtimeClient(f"{stack.api_url}/realtime/v1", user_token(stack, owner),
                                     auto_reconnect=True, initial_backoff=0.2, max_retries=10)
        await client.connect()
        got: list[dict[str, Any]] = []
        system: list[dict[str, Any]] = []
        ch = client.channel("py-restart").on_postgres_changes(RealtimePostgresChangesListenEvent.Insert, into(got),
                                                               table="rt_items", schema="public", filter=f"owner=eq.{owner}")
        await subscribed(ch, system)
        await asyncio.to_thread(stack.restart_realtime)
        # the client notices, reconnects, rejoins; the server says 'Subscribed to PostgreSQL' again
        await until(lambda: sum(1 for s in system if s.get("status") == "ok") >= 2, timeout=20)
        write(stack, "insert into rt_items (owner, note) values (%s, 'after restart')", (owner,))
        await until(lambda: len(got) == 1, timeout=10)
        assert got[0]["data"]["record"]["note"] == "after restart"
        await client.close()
    run(go())
