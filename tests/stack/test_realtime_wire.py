"""The realtime endpoint at the frame level: joins, replies, system messages, tokens, RLS, bad input."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Coroutine
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.server import EmbeddedStack
from tests.stack.rt_support import RawClient, ensure_rt_table, user_token, write, ws_url

PG = {"postgres_changes": [{"event": "*", "schema": "public", "table": "rt_items"}]}


@pytest.fixture(scope="module", autouse=True)
def rt_table(stack: EmbeddedStack) -> None:
    ensure_rt_table(stack)


def run(coro: Coroutine[Any, Any, None]) -> None:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_heartbeat_and_unmatched_topic(stack: EmbeddedStack) -> None:
    async def go() -> None:
        c = await RawClient.connect(ws_url(stack))
        rep = await c.reply(await c.push("phoenix", "heartbeat", {}))
        assert rep.payload == {"status": "ok", "response": {}}
        rep = await c.reply(await c.push("realtime:nobody", "broadcast", {"event": "x"}))
        assert rep.payload["status"] == "error" and rep.payload["response"]["reason"] == "unmatched topic"
        await c.close()
    run(go())


def test_missing_or_wrong_api_key_refused(stack: EmbeddedStack) -> None:
    async def go() -> None:
        for url in (ws_url(stack).replace(f"apikey={stack.anon_key}", "apikey=nope"),
                    f"ws://127.0.0.1:{stack.port}/realtime/v1/websocket?vsn=1.0.0"):
            with pytest.raises(websockets.InvalidStatus) as e:
                await websockets.connect(url)
            assert e.value.response.status_code == 403
    run(go())


def test_compression_offered_is_declined_as_supabase_does(stack: EmbeddedStack) -> None:
    """Supabase Realtime's endpoint leaves Phoenix's websocket ``compress: false``: a client offering
    permessage-deflate (browsers, supabase-js on Node, websockets by default) gets plain frames."""
    async def go() -> None:
        async with websockets.connect(ws_url(stack), compression="deflate") as ws:
            assert ws.request is not None and "permessage-deflate" in str(ws.request.headers)
            assert ws.response is not None and "Sec-WebSocket-Extensions" not in ws.response.headers
            assert ws.protocol.extensions == []
    run(go())


def test_join_reply_ids_then_system_then_changes(stack: EmbeddedStack) -> None:
    async def go() -> None:
        owner = str(uuid.uuid4())
        c = await RawClient.connect(ws_url(stack))
        cfg = {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "rt_items",
                                     "filter": f"owner=eq.{owner}"}]}
        rep = await c.join("realtime:wire1", cfg, token=user_token(stack, owner), wait_system=False)
        assert rep.payload["status"] == "ok"
        [binding] = rep.payload["response"]["postgres_changes"]
        assert isinstance(binding["id"], int) and binding["filter"] == f"owner=eq.{owner}"
        system = await c.wait(lambda f: f.event == "system")
        assert system.payload == {"extension": "postgres_changes", "status": "ok",
                                  "message": "Subscribed to PostgreSQL", "channel": "wire1"}
        # a write right after the system message is never missed
        write(stack, "insert into rt_items (owner, note) values (%s, 'first')", (owner,))
        write(stack, "insert into rt_items (owner, note) values (%s, 'other')", (str(uuid.uuid4()),))
        f = await c.wait(lambda f: f.event == "postgres_changes")
        data = f.payload["data"]
        assert f.payload["ids"] == [binding["id"]]
        assert data["type"] == "INSERT" and data["record"]["note"] == "first" and data["record"]["owner"] == owner
        assert {"name": "n", "type": "numeric"} in data["columns"]
        assert data["commit_timestamp"].endswith("Z") and len(data["commit_timestamp"].split(".")[1]) == 7
        await asyncio.sleep(0.2)
        assert len(c.changes()) == 1  # the other owner's row did not match the filter
        await c.close()
    run(go())


def test_numeric_digits_survive(stack: EmbeddedStack) -> None:
    async def go() -> None:
        owner = str(uuid.uuid4())
        c = await RawClient.connect(ws_url(stack))
        await c.join("realtime:num", PG, token=user_token(stack, owner))
        write(stack, "insert into rt_items (owner, n) values (%s, 12.50)", (owner,))
        await c.wait(lambda f: f.event == "postgres_changes")
        raw = next(m for m in c.inbox if m.event == "postgres_changes")
        assert str(raw.payload["data"]["record"]["n"]) in ("12.5", "12.50")
        await c.close()
    run(go())


def test_rls_each_subscriber_sees_only_own_rows(stack: EmbeddedStack) -> None:
    async def go() -> None:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        ca, cb, anon, svc = (await RawClient.connect(ws_url(stack)) for _ in range(4)) if False else (
            await RawClient.connect(ws_url(stack)), await RawClient.connect(ws_url(stack)),
            await RawClient.connect(ws_url(stack)), await RawClient.connect(ws_url(stack)))
        await ca.join("realtime:rls", PG, token=user_token(stack, a))
        await cb.join("realtime:rls", PG, token=user_token(stack, b))
        await anon.join("realtime:rls", PG)  # the anon key itself
        await svc.join("realtime:rls", PG, token=stack.service_role_key)
        write(stack, "insert into rt_items (owner, note) values (%s, 'a1'), (%s, 'b1')", (a, b))
        await ca.wait(lambda f: f.event == "postgres_changes")
        await cb.wait(lambda f: f.event == "postgres_changes")
        await svc.wait(lambda f: len([x for x in svc.changes()]) >= 2 or False)
        await asyncio.sleep(0.3)
        assert [f.payload["data"]["record"]["note"] for f in ca.changes()] == ["a1"]
        assert [f.payload["data"]["record"]["note"] for f in cb.changes()] == ["b1"]
        assert anon.changes() == []
        assert sorted(f.payload["data"]["record"]["note"] for f in svc.changes()) == ["a1", "b1"]
        # UPDATE: old_record carries only the primary key when RLS is on
        write(stack, "update rt_items set note = 'a2' where owner = %s", (a,))
        f = await ca.wait(lambda f: f.event == "postgres_changes" and f.payload["data"]["type"] == "UPDATE")
        assert set(f.payload["data"]["old_record"]) == {"id"}
        for c in (ca, cb, anon, svc):
            await c.close()
    run(go())


def test_overlapping_filters_on_two_channels_each_receive(stack: EmbeddedStack) -> None:
    """supabase/realtime#1524: with overlapping filters only the newest subscription got the row."""
    async def go() -> None:
        owner = str(uuid.uuid4())
        c = await RawClient.connect(ws_url(stack))
        tok = user_token(stack, owner)
        await c.join("realtime:ov1", {"postgres_changes": [{"event": "*", "schema": "public", "table": "rt_items",
                                                           "filter": f"owner=eq.{owner}"}]}, token=tok)
        await c.join("realtime:ov2", {"postgres_changes": [{"event": "INSERT", "schema": "public",
                                                           "table": "rt_items", "filter": "kind=eq.z"}]}, token=tok)
        write(stack, "insert into rt_items (owner, kind) values (%s, 'z')", (owner,))
        await c.wait(lambda f: len(c.changes("realtime:ov1")) == 1 and len(c.changes("realtime:ov2")) == 1)
        await c.close()
    run(go())


def test_table_not_in_publication_gives_system_error(stack: EmbeddedStack) -> None:
    write(stack, "create table if not exists rt_unpublished (id int primary key)")

    async def go() -> None:
        c = await RawClient.connect(ws_url(stack))
        rep = await c.join("realtime:nopub", {"postgres_changes": [{"event": "*", "schema": "public",
                                                                   "table": "rt_unpublished"}]}, wait_system=False)
        assert rep.payload["status"] == "ok"
        f = await c.wait(lambda f: f.event == "system")
        assert f.payload["status"] == "error" and "Unable to subscribe" in f.payload["message"]
        bad = await c.join("realtime:badfilter", {"postgres_changes": [{"event": "*", "schema": "public",
                                                                       "table": "rt_items", "filter": "owner=zz.1"}]},
                           wait_system=False)
        assert bad.payload["status"] == "ok"
        f = await c.wait(lambda f: f.event == "system" and f.topic == "realtime:badfilter")
        assert f.payload["status"] == "error" and "filter" in f.payload["message"]
        await c.close()
    run(go())


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("not-a-jwt", "MalformedJWT"),
        ("WRONGSIG", "JwtSignatureError"),
        ("EXPIRED", "Token has expired"),
        ("NONE", "MalformedJWT"),
    ],
)
def test_bad_tokens_refused_at_join(stack: EmbeddedStack, token: str, reason: str) -> None:
    from stack import jwt as sjwt

    if token == "WRONGSIG":
        token = sjwt.encode({"role": "authenticated", "exp": 9999999999}, "y" * 40)
    elif token == "EXPIRED":
        token = user_token(stack, exp_in=-30)
    elif token == "NONE":
        import base64

        def b64(d: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
        token = b64({"alg": "none", "typ": "JWT"}) + "." + b64({"role": "service_role", "exp": 9999999999}) + "."

    async def go() -> None:
        c = await RawClient.connect(ws_url(stack))
        rep = await c.join("realtime:badtok", PG, token=token, wait_system=False)
        assert rep.payload["status"] == "error"
        assert reason in rep.payload["response"]["reason"]
        await c.close()
    run(go())


def test_expired_token_closes_channel_with_system_message(stack: EmbeddedStack) -> None:
    async def go() -> None:
        c = await RawClient.connect(ws_url(stack))
        await c.join("realtime:exp", PG, token=user_token(stack, exp_in=1))
        sysmsg = await c.wait(lambda f: f.event == "system" and f.payload.get("status") == "error", timeout=5)
        assert sysmsg.payload["extension"] == "system" and "Token has expired" in sysmsg.payload["message"]
        close = await c.wait(lambda f: f.event == "phx_close")
        assert close.topic == "realtime:exp"
        rep = await c.reply(await c.push("phoenix", "heartbeat", {}))  # the socket itself stays up
        assert rep.payload["status"] == "ok"
        await c.close()
    run(go())


def test_access_token_push_swaps_claims(stack: EmbeddedStack) -> None:
    async def go() -> None:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        c = await RawClient.connect(ws_url(stack))
        rep = await c.join("realtime:swap", PG, token=user_token(stack, a, exp_in=2))
        join_ref = rep.ref
        await c.push("realtime:swap", "access_token", {"access_token": user_token(stack, b)}, join_ref=join_ref)
        await c.reply(await c.push("phoenix", "heartbeat", {}))  # the token push has been handled
        write(stack, "insert into rt_items (owner, note) values (%s, 'for-a'), (%s, 'for-b')", (a, b))
        await c.wait(lambda f: f.event == "postgres_changes")
        await asyncio.sleep(2.5)  # past the first token's expiry: the channel must still be open
        assert [f.payload["data"]["record"]["note"] for f in c.changes()] == ["for-b"]
        assert not [f for f in c.inbox if f.event == "phx_close"]
        await c.close()
    run(go())


def test_broadcast_self_ack_and_rest_endpoint(stack: EmbeddedStack) -> None:
    import httpx

    async def go() -> None:
        s1, s2 = await RawClient.connect(ws_url(stack)), await RawClient.connect(ws_url(stack))
        await s1.join("realtime:room", {"broadcast": {"self": True, "ack": True}})
        await s2.join("realtime:room", {"broadcast": {"self": False}})
        ref = await s1.push("realtime:room", "broadcast", {"type": "broadcast", "event": "hi", "payload": {"x": 1}})
        assert (await s1.reply(ref)).payload["status"] == "ok"  # ack
        for c in (s1, s2):
            f = await c.wait(lambda f: f.event == "broadcast")
            assert f.payload == {"type": "broadcast", "event": "hi", "payload": {"x": 1}}
        await s2.push("realtime:room", "broadcast", {"type": "broadcast", "event": "back", "payload": {}})
        await s1.wait(lambda f: f.event == "broadcast" and f.payload["event"] == "back")
        await asyncio.sleep(0.1)
        assert not [f for f in s2.inbox if f.event == "broadcast" and f.payload["event"] == "back"]  # self: false
        async with httpx.AsyncClient() as h:
            r = await h.post(f"{stack.api_url}/realtime/v1/api/broadcast", headers={"apikey": stack.anon_key},
                             json={"messages": [{"topic": "room", "event": "announce", "payload": {"m": "hello"}}]})
            assert r.status_code == 202
            bad = await h.post(f"{stack.api_url}/realtime/v1/api/broadcast", headers={"apikey": stack.anon_key},
                               json={"messages": "nope"})
            assert bad.status_code == 422
        for c in (s1, s2):
            await c.wait(lambda f: f.event == "broadcast" and f.payload["event"] == "announce")
            await c.close()
    run(go())


def test_presence_state_and_diffs(stack: EmbeddedStack) -> None:
    async def go() -> None:
        a, b = await RawClient.connect(ws_url(stack)), await RawClient.connect(ws_url(stack))
        rep = await a.join("realtime:lobby", {"presence": {"key": "alice", "enabled": True}})
        await a.wait(lambda f: f.event == "presence_state")
        ref = await a.push("realtime:lobby", "presence", {"type": "presence", "event": "track",
                                                          "payload": {"status": "online"}}, join_ref=rep.ref)
        assert (await a.reply(ref)).payload["status"] == "ok"
        await b.join("realtime:lobby", {"presence": {"key": "bob", "enabled": True}})
        state = await b.wait(lambda f: f.event == "presence_state")
        assert list(state.payload) == ["alice"] and state.payload["alice"]["metas"][0]["status"] == "online"
        await b.close()  # leaving the socket without untrack: the others see the leave only if tracked
        await a.push("realtime:lobby", "presence", {"type": "presence", "event": "untrack"}, join_ref=rep.ref)
        diff = await a.wait(lambda f: f.event == "presence_diff" and f.payload["leaves"])
        assert list(diff.payload["leaves"]) == ["alice"]
        await a.close()
    run(go())


FRAMES = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=8), st.dictionaries(st.text(max_size=5),
             st.integers(), max_size=3)), max_size=6).map(json.dumps),
    st.fixed_dictionaries({"topic": st.sampled_from(["realtime:f", "phoenix", "", "x"]),
                           "event": st.sampled_from(["phx_join", "heartbeat", "broadcast", "presence",
                                                     "access_token", "phx_leave", "zzz"]),
                           "payload": st.one_of(st.none(), st.integers(), st.text(max_size=8),
                                                st.dictionaries(st.sampled_from(["config", "access_token", "event",
                                                                                 "payload", "type"]),
                                                                st.one_of(st.none(), st.integers(), st.text(max_size=8),
                                                                          st.lists(st.integers(), max_size=2),
                                                                          st.dictionaries(st.text(max_size=4),
                                                                                          st.text(max_size=4),
                                                                                          max_size=2)),
                                                                max_size=4)),
                           "ref": st.one_of(st.none(), st.text(max_size=3), st.integers())}).map(json.dumps),
)


def test_fuzzed_frames_leave_server_and_other_clients_fine(stack: EmbeddedStack) -> None:
    owner = str(uuid.uuid4())

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(FRAMES, min_size=1, max_size=8))
    def fuzz(batch: list) -> None:
        async def go() -> None:
            bystander = await RawClient.connect(ws_url(stack))
            await bystander.join("realtime:bystander", PG, token=user_token(stack, owner))
            evil = await RawClient.connect(ws_url(stack))
            for data in batch:
                try:
                    await evil.send_raw(data)
                except websockets.ConnectionClosed:
                    break
            write(stack, "insert into rt_items (owner, note) values (%s, 'still-here')", (owner,))
            await bystander.wait(lambda f: f.event == "postgres_changes")
            rep = await bystander.reply(await bystander.push("phoenix", "heartbeat", {}))
            assert rep.payload["status"] == "ok"
            await evil.close()
            await bystander.close()
        run(go())

    fuzz()


def test_ddl_takes_effect_publication_and_rls(stack: EmbeddedStack) -> None:
    """Removing a table from the publication stops its events; turning RLS off widens them at once."""
    write(stack, """
        create table if not exists rt_ddl (id bigserial primary key, owner uuid, note text);
        alter table rt_ddl enable row level security;
        drop policy if exists own on rt_ddl;
        create policy own on rt_ddl for select to authenticated using (owner = auth.uid());
        grant select on rt_ddl to authenticated;
    """)
    write(stack, "alter publication supabase_realtime add table rt_ddl")
    me, other = str(uuid.uuid4()), str(uuid.uuid4())

    async def go() -> None:
        c = await RawClient.connect(ws_url(stack))
        await c.join("realtime:ddl", {"postgres_changes": [{"event": "INSERT", "schema": "public",
                                                           "table": "rt_ddl"}]}, token=user_token(stack, me))
        write(stack, "insert into rt_ddl (owner, note) values (%s, 'mine'), (%s, 'theirs')", (me, other))
        await c.wait(lambda f: len(c.changes()) == 1)
        write(stack, "alter table rt_ddl disable row level security")
        await asyncio.sleep(0.2)  # the DDL notification reaches the server
        write(stack, "insert into rt_ddl (owner, note) values (%s, 'theirs-now-visible')", (other,))
        await c.wait(lambda f: len(c.changes()) == 2)
        write(stack, "alter publication supabase_realtime drop table rt_ddl")
        await asyncio.sleep(0.2)
        write(stack, "insert into rt_ddl (owner, note) values (%s, 'unpublished')", (me,))
        await asyncio.sleep(0.5)
        notes = [f.payload["data"]["record"]["note"] for f in c.changes()]
        assert notes == ["mine", "theirs-now-visible"]
        await c.close()
    run(go())


def test_select_columns_and_delete_payload(stack: EmbeddedStack) -> None:
    async def go() -> None:
        owner = str(uuid.uuid4())
        c = await RawClient.connect(ws_url(stack))
        await c.join("realtime:sel", {"postgres_changes": [
            {"event": "INSERT", "schema": "public", "table": "rt_items", "select": ["id", "note"]},
            {"event": "DELETE", "schema": "public", "table": "rt_items"}]}, token=user_token(stack, owner))
        rid = write(stack, "insert into rt_items (owner, note) values (%s, 'sel') returning id", (owner,))[0][0]
        ins = await c.wait(lambda f: f.event == "postgres_changes")
        assert ins.payload["data"]["record"] == {"id": rid, "note": "sel"}
        assert [col["name"] for col in ins.payload["data"]["columns"]] == ["id", "note"]
        write(stack, "delete from rt_items where id = %s", (rid,))
        dele = await c.wait(lambda f: f.event == "postgres_changes" and f.payload["data"]["type"] == "DELETE")
        assert dele.payload["data"]["old_record"] == {"id": rid} and "record" not in dele.payload["data"]
        await c.close()
    run(go())


def test_vsn2_array_frames(stack: EmbeddedStack) -> None:
    async def go() -> None:
        ws = await websockets.connect(ws_url(stack, vsn="2.0.0"))
        await ws.send(json.dumps(["1", "1", "realtime:v2", "phx_join", {"config": {}}]))
        reply = json.loads(await ws.recv())
        assert reply[:4] == ["1", "1", "realtime:v2", "phx_reply"] and reply[4]["status"] == "ok"
        await ws.close()
    run(go())
