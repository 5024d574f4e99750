"""The client protocol against the server's own frame handling, in memory, then over a real socket."""

from __future__ import annotations

import asyncio
import json
import uuid

from harness.phoenix import AsyncPhoenix, ChannelState, Closed, Message, PhoenixProtocol, ReconnectPolicy, Reply
from stack.server import EmbeddedStack
from tests.stack.rt_support import ensure_rt_table, user_token, write, ws_url


def test_join_reply_heartbeat_and_close_in_memory() -> None:
    p = PhoenixProtocol()
    data = json.loads(p.join("realtime:x", {"config": {}}))
    assert data["event"] == "phx_join" and data["ref"] == data["join_ref"]
    [rep] = p.receive(json.dumps({"topic": "realtime:x", "event": "phx_reply", "ref": data["ref"],
                                  "payload": {"status": "ok", "response": {"postgres_changes": [{"id": 7}]}}}))
    assert isinstance(rep, Reply) and rep.kind == "join" and rep.status == "ok"
    assert p.channels["realtime:x"].state == ChannelState.JOINED and p.channels["realtime:x"].binding_ids == [7]
    beat = p.heartbeat()
    assert beat is not None
    hb = json.loads(beat)
    assert p.heartbeat() is None  # unanswered: the transport must treat the socket as dead
    p.receive(json.dumps({"topic": "phoenix", "event": "phx_reply", "ref": hb["ref"],
                          "payload": {"status": "ok", "response": {}}}))
    assert p.heartbeat() is not None
    [msg] = p.receive(json.dumps({"topic": "realtime:x", "event": "postgres_changes", "payload": {"ids": [7]}}))
    assert isinstance(msg, Message)
    # a close for an old join_ref is ignored; for the current one the channel closes
    assert p.receive(json.dumps({"topic": "realtime:x", "event": "phx_close", "ref": "999", "payload": {}})) == []
    [c] = p.receive(json.dumps({"topic": "realtime:x", "event": "phx_close", "ref": data["ref"], "payload": {}}))
    assert isinstance(c, Closed) and p.channels["realtime:x"].state == ChannelState.CLOSED
    assert p.receive("garbage") == []


def test_connection_lost_then_rejoin_all() -> None:
    p = PhoenixProtocol()
    p.join("realtime:a", {"config": {"x": 1}})
    p.join("realtime:b", {"config": {}})
    p.connection_lost()
    assert all(ch.state == ChannelState.ERRORED for ch in p.channels.values())
    frames = [json.loads(f) for f in p.rejoin_all()]
    assert [f["topic"] for f in frames] == ["realtime:a", "realtime:b"]
    assert frames[0]["payload"] == {"config": {"x": 1}}
    assert PhoenixProtocol().rejoin_all() == []
    assert ReconnectPolicy().backoff(1) == 1 and ReconnectPolicy().backoff(9) == 10


def test_async_client_against_the_stack_rejoins_after_restart(stack: EmbeddedStack) -> None:
    ensure_rt_table(stack)
    owner = str(uuid.uuid4())

    async def go() -> None:
        events: list[tuple[object, int]] = []
        states: list[str] = []
        c = AsyncPhoenix(ws_url(stack), policy=ReconnectPolicy(heartbeat_s=0.2, backoff_s=(0.05, 0.1)),
                         on_event=lambda e, t: events.append((e, t)), on_state=lambda s, t: states.append(s))
        await c.connect()
        cfg = {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "rt_items",
                                                "filter": f"owner=eq.{owner}"}]},
               "access_token": user_token(stack, owner)}
        rep = await c.join("realtime:probe", cfg)
        assert rep.status == "ok"

        def systems() -> int:
            return sum(1 for e, _ in events if isinstance(e, Message) and e.event == "system")

        for _ in range(100):
            if systems():
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # heartbeats are answered: no timeout
        assert "heartbeat_timeout" not in states
        await asyncio.to_thread(stack.restart_realtime)
        for _ in range(200):
            if systems() >= 2:
                break
            await asyncio.sleep(0.02)
        assert systems() >= 2 and states.count("open") >= 2
        write(stack, "insert into rt_items (owner, note) values (%s, 'via-probe')", (owner,))
        for _ in range(100):
            if any(isinstance(e, Message) and e.event == "postgres_changes" for e, _ in events):
                break
            await asyncio.sleep(0.02)
        changes = [e for e, _ in events if isinstance(e, Message) and e.event == "postgres_changes"]
        assert changes and changes[0].payload["data"]["record"]["note"] == "via-probe"
        await c.close()

    asyncio.run(asyncio.wait_for(go(), 60))
