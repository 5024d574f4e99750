"""Private channels (RLS on realtime.messages), broadcast from the database, replay and binary broadcasts,
through supabase-py (vsn 1.0.0), supabase-js (vsn 2.0.0) and raw frames; each rule with its refusal."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from supabase import acreate_client

from stack import jwt
from stack.server import EmbeddedStack
from tests.stack.js_peer import JsPeer
from tests.stack.rt_support import RawClient, until, write, ws_url

# Policies for topics rtp-*: a user may read (receive) the topics its JWT lists in rtp_read, send on those in
# rtp_write, and see / track presence on those in rtp_presence. Nothing else is allowed on those topics.
POLICIES_SQL = """
drop policy if exists rtp_read on realtime.messages;
drop policy if exists rtp_write on realtime.messages;
create policy rtp_read on realtime.messages for select to authenticated using (
    realtime.topic() like 'rtp-%' and (
        (extension = 'broadcast' and coalesce(auth.jwt() -> 'rtp_read', '[]') ? realtime.topic())
        or (extension = 'presence' and coalesce(auth.jwt() -> 'rtp_presence', '[]') ? realtime.topic())));
create policy rtp_write on realtime.messages for insert to authenticated with check (
    realtime.topic() like 'rtp-%' and (
        (extension = 'broadcast' and coalesce(auth.jwt() -> 'rtp_write', '[]') ? realtime.topic())
        or (extension = 'presence' and coalesce(auth.jwt() -> 'rtp_presence', '[]') ? realtime.topic())));
create table if not exists public.rtp_orders (id bigserial primary key, note text);
create or replace function public.rtp_orders_broadcast() returns trigger language plpgsql security definer
set search_path = '' as $$
begin
    perform realtime.broadcast_changes('rtp-orders', tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
    return null;
end $$;
drop trigger if exists rtp_orders_broadcast on public.rtp_orders;
create trigger rtp_orders_broadcast after insert or update or delete on public.rtp_orders
    for each row execute function public.rtp_orders_broadcast();
"""


@pytest.fixture(scope="module", autouse=True)
def policies(stack: EmbeddedStack) -> None:
    write(stack, POLICIES_SQL)


def token(stack: EmbeddedStack, read: tuple[str, ...] = (), send: tuple[str, ...] = (),
          presence: tuple[str, ...] = ()) -> str:
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "role": "authenticated", "aud": "authenticated", "iat": now,
              "exp": now + 3600, "rtp_read": list(read), "rtp_write": list(send), "rtp_presence": list(presence)}
    return jwt.encode(claims, stack.settings.jwt_secret)  # type: ignore[union-attr]


def topic() -> str:
    return f"rtp-{uuid.uuid4().hex[:8]}"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def js(stack: EmbeddedStack) -> Iterator[JsPeer]:
    peer = JsPeer(stack.api_url, stack.anon_key)
    yield peer
    peer.close()


def js_status(js: JsPeer, name: str) -> dict[str, Any]:
    return js.wait(lambda e: e["ev"] == "status" and e["name"] == name and e["status"] != "CLOSED")


# -- joins ----------------------------------------------------------------------------------------------------
def test_private_join_is_allowed_or_refused_by_the_select_policy(stack: EmbeddedStack) -> None:
    t = topic()

    async def go() -> None:
        c = await RawClient.connect(ws_url(stack))
        ok = await c.join(f"realtime:{t}", {"private": True}, token=token(stack, read=(t,)))
        assert ok.payload["status"] == "ok", ok.payload
        no = await c.join(f"realtime:{t}x", {"private": True}, token=token(stack, read=(t,)))
        assert no.payload == {"status": "error", "response": {
            "reason": f"Unauthorized: You do not have permissions to read from this Channel topic: {t}x"}}
        anon = await c.join(f"realtime:{t}", {"private": True})  # the anon key: no policy for anon
        assert anon.payload["status"] == "error" and "Unauthorized" in anon.payload["response"]["reason"]
        pub = await c.join(f"realtime:{t}", {"private": False})  # the public channel of the same name: no policy
        assert pub.payload["status"] == "ok"
        await c.close()

    run(go())


def test_supabase_py_private_join_subscribes_or_fails(stack: EmbeddedStack) -> None:
    t = topic()

    async def go() -> None:
        client = await acreate_client(stack.api_url, stack.anon_key)
        await client.realtime.set_auth(token(stack, read=(t,)))
        states: list[tuple[str, str]] = []
        got: list[Any] = []
        ch = client.channel(t, {"config": {"private": True, "broadcast": None, "presence": None}})
        ch.on_broadcast("ev", got.append)
        await ch.subscribe(lambda st, err: states.append((str(st), str(err))))
        denied = client.channel(t + "-other", {"config": {"private": True, "broadcast": None, "presence": None}})
        await denied.subscribe(lambda st, err: states.append((str(st), str(err))))
        await until(lambda: len(states) >= 2)
        assert any("SUBSCRIBED" in s for s, _ in states), states
        assert any("CHANNEL_ERROR" in s and "Unauthorized" in e for s, e in states), states
        write(stack, "select realtime.send('{\"n\": 1}'::jsonb, 'ev', %s, true)", (t,))
        await until(lambda: len(got) == 1)
        assert got[0]["payload"]["n"] == 1 and got[0]["event"] == "ev"
        await client.realtime.close()

    run(go())


def test_supabase_js_private_join_subscribes_or_fails(js: JsPeer, stack: EmbeddedStack) -> None:
    t = topic()
    js.send(op="setAuth", token=token(stack, read=(t,)))
    js.wait(lambda e: e.get("op") == "setAuth")
    js.send(op="channel", name="ok", topic=t, config={"private": True}, broadcast=["ev"])
    js.send(op="channel", name="no", topic=t + "-other", config={"private": True}, broadcast=["ev"])
    assert js_status(js, "ok")["status"] == "SUBSCRIBED"
    no = js_status(js, "no")
    assert no["status"] == "CHANNEL_ERROR" and "Unauthorized" in (no["error"] or ""), no


# -- broadcast from the database ------------------------------------------------------------------------------
def test_trigger_broadcast_reaches_private_subscribers_and_nobody_else(stack: EmbeddedStack) -> None:
    """realtime.broadcast_changes from a row trigger: the private channel of 'rtp-orders' gets it; the public
    channel of the same name, and a private channel whose policies refuse it, get nothing."""

    async def go() -> None:
        reader = await RawClient.connect(ws_url(stack))
        public = await RawClient.connect(ws_url(stack))
        assert (await reader.join("realtime:rtp-orders", {"private": True},
                                  token=token(stack, read=("rtp-orders",)))).payload["status"] == "ok"
        assert (await public.join("realtime:rtp-orders", {})).payload["status"] == "ok"
        rid = write(stack, "insert into public.rtp_orders (note) values ('first') returning id")[0][0]
        write(stack, "update public.rtp_orders set note = 'second' where id = %s", (rid,))
        await until(lambda: len([f for f in reader.inbox if f.event == "broadcast"]) >= 2)
        ins, upd = (f.payload for f in reader.inbox if f.event == "broadcast")
        assert ins["type"] == "broadcast" and ins["payload"]["record"]["note"] == "first"
        assert ins["payload"]["old_record"] is None and ins["payload"]["table"] == "rtp_orders"
        assert upd["payload"]["old_record"]["note"] == "first" and upd["payload"]["record"]["note"] == "second"
        assert isinstance(ins["meta"]["id"], str) and "replayed" not in ins["meta"]
        write(stack, "select realtime.send('{\"p\": 1}'::jsonb, 'public-one', 'rtp-orders', false)")
        await public.wait(lambda f: f.event == "broadcast" and f.payload["event"] == "public-one")
        await asyncio.sleep(0.3)  # anything misrouted would have arrived by now
        assert [f.payload["event"] for f in public.inbox if f.event == "broadcast"] == ["public-one"]
        assert [f.payload["event"] for f in reader.inbox if f.event == "broadcast"] == ["INSERT", "UPDATE"]
        await reader.close()
        await public.close()

    run(go())


def test_supabase_js_receives_trigger_broadcast_only_when_allowed(js: JsPeer, stack: EmbeddedStack) -> None:
    """One supabase-js client on the private channel, another (signed out) on the public one of that name."""
    other = JsPeer(stack.api_url, stack.anon_key)
    try:
        js.send(op="setAuth", token=token(stack, read=("rtp-orders",)))
        js.wait(lambda e: e.get("op") == "setAuth")
        js.send(op="channel", name="priv", topic="rtp-orders", config={"private": True}, broadcast=["INSERT"])
        other.send(op="channel", name="pub", topic="rtp-orders", config={"private": False}, broadcast=["INSERT"])
        assert js_status(js, "priv")["status"] == "SUBSCRIBED" and js_status(other, "pub")["status"] == "SUBSCRIBED"
        write(stack, "insert into public.rtp_orders (note) values ('from js')")
        got = js.wait(lambda e: e["ev"] == "broadcast" and e["name"] == "priv")
        assert got["payload"]["payload"]["record"]["note"] == "from js"
        write(stack, "select realtime.send('{\"p\": 1}'::jsonb, 'INSERT', 'rtp-orders', false)")
        pub = other.wait(lambda e: e["ev"] == "broadcast" and e["name"] == "pub")
        assert pub["payload"]["payload"]["p"] == 1  # the public channel gets public messages only
        time.sleep(0.3)
        assert len(other.of("broadcast", "pub")) == 1 and len(js.of("broadcast", "priv")) == 1
    finally:
        other.close()


def test_send_refused_by_policy_is_a_warning_and_reaches_nobody(stack: EmbeddedStack) -> None:
    """realtime.send under a role whose INSERT policy refuses it: a warning, no message (as upstream)."""
    t = topic()

    async def go() -> None:
        c = await RawClient.connect(ws_url(stack))
        await c.join(f"realtime:{t}", {"private": True}, token=token(stack, read=(t,)))
        assert send_as_user(stack, [], "spoof", t) == ["WarnSendingBroadcastMessage"]
        assert send_as_user(stack, [t], "allowed", t) == []
        await c.wait(lambda f: f.event == "broadcast" and f.payload["event"] == "allowed")
        assert [f.payload["event"] for f in c.inbox if f.event == "broadcast"] == ["allowed"]
        await c.close()

    run(go())


def send_as_user(stack: EmbeddedStack, may_write: list[str], event: str, t: str) -> list[str]:
    """realtime.send as an authenticated user whose claims list ``may_write``; the warnings' prefixes."""
    notices: list[str] = []
    with psycopg.connect(stack.superuser_dsn) as conn:
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary or "").split(":")[0]))
        with conn.transaction():
            conn.execute("set local role authenticated")
            conn.execute("select set_config('request.jwt.claims', %s, true)",
                         (json.dumps({"sub": str(uuid.uuid4()), "role": "authenticated", "rtp_write": may_write}),))
            conn.execute("select realtime.send('{}'::jsonb, %s, %s, true)", (event, t))
    return notices


# -- client broadcast and presence on private channels -------------------------------------------------------
def test_client_broadcast_needs_the_insert_policy(stack: EmbeddedStack) -> None:
    t = topic()

    async def go() -> None:
        rx = await RawClient.connect(ws_url(stack))
        writer = await RawClient.connect(ws_url(stack))
        reader_only = await RawClient.connect(ws_url(stack))
        await rx.join(f"realtime:{t}", {"private": True}, token=token(stack, read=(t,)))
        w = await writer.join(f"realtime:{t}", {"private": True, "broadcast": {"ack": True}},
                              token=token(stack, read=(t,), send=(t,)))
        r = await reader_only.join(f"realtime:{t}", {"private": True, "broadcast": {"ack": True}},
                                   token=token(stack, read=(t,)))
        assert w.payload["status"] == r.payload["status"] == "ok"
        denied_ref = await reader_only.push(f"realtime:{t}", "broadcast", {"type": "broadcast", "event": "no",
                                                                          "payload": {}})
        ref = await writer.push(f"realtime:{t}", "broadcast", {"type": "broadcast", "event": "yes", "payload": {}})
        assert (await writer.reply(ref)).payload["status"] == "ok"
        await rx.wait(lambda f: f.event == "broadcast" and f.payload["event"] == "yes")
        await asyncio.sleep(0.3)
        assert [f.payload["event"] for f in rx.inbox if f.event == "broadcast"] == ["yes"]
        assert not [f for f in reader_only.inbox if f.ref == denied_ref]  # dropped without an ack, as upstream
        for c in (rx, writer, reader_only):
            await c.close()

    run(go())


def test_presence_needs_its_policies(stack: EmbeddedStack) -> None:
    t = topic()

    async def go() -> None:
        member = await RawClient.connect(ws_url(stack))
        outsider = await RawClient.connect(ws_url(stack))
        config = {"private": True, "presence": {"enabled": True, "key": "m"}}
        await member.join(f"realtime:{t}", config, token=token(stack, read=(t,), presence=(t,)))
        await member.wait(lambda f: f.event == "presence_state")
        await outsider.join(f"realtime:{t}", {**config, "presence": {"enabled": True, "key": "o"}},
                            token=token(stack, read=(t,)))  # broadcast read only: joins, sees no presence
        ref = await outsider.push(f"realtime:{t}", "presence", {"type": "presence", "event": "track",
                                                                "payload": {"who": "o"}})
        assert (await outsider.reply(ref)).payload["status"] == "error"
        ref = await member.push(f"realtime:{t}", "presence", {"type": "presence", "event": "track",
                                                              "payload": {"who": "m"}})
        assert (await member.reply(ref)).payload["status"] == "ok"
        await member.wait(lambda f: f.event == "presence_diff" and "m" in f.payload["joins"])
        await asyncio.sleep(0.3)
        assert not [f for f in outsider.inbox if f.event in ("presence_state", "presence_diff")]
        await member.close()
        await outsider.close()

    run(go())


# -- replay ---------------------------------------------------------------------------------------------------
def test_replay_delivers_messages_after_since_marked_replayed(stack: EmbeddedStack) -> None:
    t = topic()
    write(stack, "select realtime.send('{\"n\": 0}'::jsonb, 'old', %s, true)", (t,))
    time.sleep(0.05)
    since = write(stack, "select (extract(epoch from clock_timestamp()) * 1000)::bigint")[0][0]
    time.sleep(0.05)
    for n in (1, 2, 3):
        write(stack, "select realtime.send(jsonb_build_object('n', %s), 'new', %s, true)", (n, t))
    write(stack, "select realtime.send('{\"n\": 9}'::jsonb, 'public', %s, false)", (t,))  # public: never replayed

    async def go() -> None:
        c = await RawClient.connect(ws_url(stack))
        rep = await c.join(f"realtime:{t}", {"private": True, "broadcast": {"replay": {"since": since, "limit": 2}}},
                           token=token(stack, read=(t,)))
        assert rep.payload["status"] == "ok"
        await until(lambda: len([f for f in c.inbox if f.event == "broadcast"]) >= 2)
        await asyncio.sleep(0.3)
        got = [f.payload for f in c.inbox if f.event == "broadcast"]
        assert [p["payload"]["n"] for p in got] == [2, 3]  # the newest 2 after since, oldest first
        assert all(p["meta"]["replayed"] is True and p["meta"]["id"] for p in got)
        c2 = await RawClient.connect(ws_url(stack))
        all_after = await c2.join(f"realtime:{t}", {"private": True, "broadcast": {"replay": {"since": since}}},
                                  token=token(stack, read=(t,)))
        assert all_after.payload["status"] == "ok"
        await until(lambda: len([f for f in c2.inbox if f.event == "broadcast"]) >= 3)
        assert [f.payload["payload"]["n"] for f in c2.inbox if f.event == "broadcast"] == [1, 2, 3]
        write(stack, "select realtime.send('{\"n\": 4}'::jsonb, 'live', %s, true)", (t,))
        live = await c.wait(lambda f: f.event == "broadcast" and f.payload["event"] == "live")
        assert "replayed" not in live.payload["meta"]
        await c.close()
        await c2.close()

    run(go())


def test_replay_is_refused_on_public_channels_bad_params_and_without_read(stack: EmbeddedStack) -> None:
    t = topic()

    async def go() -> None:
        c = await RawClient.connect(ws_url(stack))
        pub = await c.join(f"realtime:{t}", {"broadcast": {"replay": {"since": 0}}})
        assert pub.payload["response"]["reason"] == ("UnableToReplayMessages: Replay is not allowed for public"
                                                     " channels")
        bad = await c.join(f"realtime:{t}", {"private": True, "broadcast": {"replay": {"since": "yesterday"}}},
                           token=token(stack, read=(t,)))
        assert bad.payload["response"]["reason"] == "UnableToReplayMessages: Replay params are not valid"
        no_read = await c.join(f"realtime:{t}", {"private": True, "presence": {"enabled": True},
                                                  "broadcast": {"replay": {"since": 0}}},
                               token=token(stack, presence=(t,)))  # presence read only
        assert "Unauthorized" in no_read.payload["response"]["reason"]
        await c.close()

    run(go())


def test_supabase_py_replay_marks_replayed(stack: EmbeddedStack) -> None:
    t = topic()
    since = write(stack, "select (extract(epoch from clock_timestamp()) * 1000)::bigint")[0][0]
    write(stack, "select realtime.send('{\"n\": 1}'::jsonb, 'ev', %s, true)", (t,))

    async def go() -> None:
        client = await acreate_client(stack.api_url, stack.anon_key)
        await client.realtime.set_auth(token(stack, read=(t,)))
        got: list[Any] = []
        ch = client.channel(t, {"config": {"private": True, "presence": None,
                                           "broadcast": {"replay": {"since": since, "limit": 5}}}})
        ch.on_broadcast("ev", got.append)
        await ch.subscribe()
        await until(lambda: len(got) == 1)
        assert got[0]["payload"]["n"] == 1 and got[0]["meta"]["replayed"] is True
        await client.realtime.close()

    run(go())


def test_supabase_js_replay_marks_replayed(js: JsPeer, stack: EmbeddedStack) -> None:
    t = topic()
    since = write(stack, "select (extract(epoch from clock_timestamp()) * 1000)::bigint")[0][0]
    write(stack, "select realtime.send('{\"n\": 1}'::jsonb, 'ev', %s, true)", (t,))
    js.send(op="setAuth", token=token(stack, read=(t,)))
    js.wait(lambda e: e.get("op") == "setAuth")
    js.send(op="channel", name="r", topic=t, config={"private": True, "broadcast": {"replay": {"since": since}}},
            broadcast=["ev"])
    got = js.wait(lambda e: e["ev"] == "broadcast" and e["name"] == "r")
    assert got["payload"]["payload"]["n"] == 1 and got["payload"]["meta"]["replayed"] is True


# -- binary ---------------------------------------------------------------------------------------------------
def test_binary_broadcast_arrives_as_binary_under_vsn2_only(js: JsPeer, stack: EmbeddedStack) -> None:
    t = topic()
    js.send(op="setAuth", token=token(stack, read=(t,)))
    js.wait(lambda e: e.get("op") == "setAuth")
    js.send(op="channel", name="bin", topic=t, config={"private": True}, broadcast=["blob"])
    assert js_status(js, "bin")["status"] == "SUBSCRIBED"

    async def go() -> None:
        v1 = await RawClient.connect(ws_url(stack))
        await v1.join(f"realtime:{t}", {"private": True}, token=token(stack, read=(t,)))
        write(stack, "select realtime.send_binary('\\x00ff10'::bytea, 'blob', %s, true)", (t,))
        write(stack, "select realtime.send('{\"after\": true}'::jsonb, 'blob', %s, true)", (t,))
        await v1.wait(lambda f: f.event == "broadcast" and f.payload["payload"].get("after") is True)
        assert [f.payload["payload"]["after"] for f in v1.inbox if f.event == "broadcast"] == [True]
        await v1.close()

    run(go())
    got = js.wait(lambda e: e["ev"] == "broadcast" and e["name"] == "bin")
    assert got["payload"]["payload"] == {"binary_hex": "00ff10"}, got


# -- REST ----------------------------------------------------------------------------------------------------
def test_rest_broadcast_honours_private(stack: EmbeddedStack) -> None:
    t = topic()
    url = f"{stack.api_url}/realtime/v1/api/broadcast"

    async def go() -> None:
        priv = await RawClient.connect(ws_url(stack))
        pub = await RawClient.connect(ws_url(stack))
        await priv.join(f"realtime:{t}", {"private": True}, token=token(stack, read=(t,)))
        await pub.join(f"realtime:{t}", {})

        def post(key: str, event: str, private: bool) -> int:
            r = httpx.post(url, headers={"apikey": stack.anon_key, "authorization": f"Bearer {key}"},
                           json={"messages": [{"topic": t, "event": event, "payload": {}, "private": private}]})
            return r.status_code

        assert await asyncio.to_thread(post, token(stack, read=(t,)), "user-no-write", True) == 202
        assert await asyncio.to_thread(post, token(stack, send=(t,)), "user-write", True) == 202
        assert await asyncio.to_thread(post, stack.service_role_key, "service", True) == 202
        assert await asyncio.to_thread(post, stack.anon_key, "public", False) == 202
        await priv.wait(lambda f: f.event == "broadcast" and f.payload["event"] == "service")
        await pub.wait(lambda f: f.event == "broadcast" and f.payload["event"] == "public")
        await asyncio.sleep(0.3)
        assert [f.payload["event"] for f in priv.inbox if f.event == "broadcast"] == ["user-write", "service"]
        assert [f.payload["event"] for f in pub.inbox if f.event == "broadcast"] == ["public"]
        await priv.close()
        await pub.close()

    run(go())
