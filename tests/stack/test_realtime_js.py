"""Realtime through supabase-js unchanged (Node, vsn 2.0.0 frames, binary broadcasts)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from stack.server import EmbeddedStack
from tests.stack.js_peer import JsPeer
from tests.stack.rt_support import ensure_rt_table, user_token, write

pytestmark = pytest.mark.js


@pytest.fixture(scope="module", autouse=True)
def rt_table(stack: EmbeddedStack) -> None:
    ensure_rt_table(stack)


@pytest.fixture
def js(stack: EmbeddedStack) -> Iterator[JsPeer]:
    peer = JsPeer(stack.api_url, stack.anon_key)
    yield peer
    peer.close()


def live(js: JsPeer, name: str) -> None:
    """SUBSCRIBED, then the server's postgres_changes ok (realtime-js#525)."""
    js.wait(lambda e: e["ev"] == "status" and e["name"] == name and e["status"] == "SUBSCRIBED")
    js.wait(lambda e: e["ev"] == "system" and e["name"] == name and e["payload"]["extension"] == "postgres_changes")
    assert js.of("system", name)[-1]["payload"]["status"] == "ok"


def test_changes_with_and_without_filter(js: JsPeer, stack: EmbeddedStack) -> None:
    owner = str(uuid.uuid4())
    js.send(op="setAuth", token=user_token(stack, owner))
    js.wait(lambda e: e.get("op") == "setAuth")
    js.send(op="channel", name="all", topic="js-all", pg=[{"event": "*", "schema": "public", "table": "rt_items"}])
    js.send(op="channel", name="b", topic="js-b",
            pg=[{"event": "INSERT", "schema": "public", "table": "rt_items", "filter": "kind=eq.b"}])
    live(js, "all")
    live(js, "b")
    rid = write(stack, "insert into rt_items (owner, kind, note, n) values (%s, 'a', 'one', 7.25) returning id",
                (owner,))[0][0]
    write(stack, "insert into rt_items (owner, kind, note) values (%s, 'b', 'two')", (owner,))
    write(stack, "update rt_items set note = 'uno' where id = %s", (rid,))
    write(stack, "delete from rt_items where id = %s", (rid,))
    js.wait(lambda e: len(js.of("change", "all")) >= 4)
    payloads = [e["payload"] for e in js.of("change", "all")]
    assert [p["eventType"] for p in payloads] == ["INSERT", "INSERT", "UPDATE", "DELETE"]
    ins, _, upd, dele = payloads
    assert ins["new"]["note"] == "one" and ins["new"]["n"] == 7.25 and ins["old"] == {}
    assert ins["schema"] == "public" and ins["table"] == "rt_items" and ins["commit_timestamp"].endswith("Z")
    assert ins["errors"] is None
    assert upd["new"]["note"] == "uno" and upd["old"] == {"id": rid}
    assert dele["new"] == {} and dele["old"] == {"id": rid}
    assert [e["payload"]["new"]["note"] for e in js.of("change", "b")] == ["two"]


def test_broadcast_ack_self_and_presence(js: JsPeer, stack: EmbeddedStack) -> None:
    js.send(op="channel", name="r1", topic="js-room", config={"broadcast": {"self": True, "ack": True},
                                                              "presence": {"key": "ann"}},
            broadcast=["chat"], presence=True)
    js.send(op="channel", name="r2", topic="js-room2", config={"broadcast": {"self": False}}, broadcast=["chat"])
    js.wait(lambda e: e["ev"] == "status" and e["name"] == "r1" and e["status"] == "SUBSCRIBED")
    js.wait(lambda e: e["ev"] == "status" and e["name"] == "r2" and e["status"] == "SUBSCRIBED")
    js.send(op="send", name="r1", event="chat", payload={"text": "hi"})
    assert js.wait(lambda e: e.get("op") == "send" and e["name"] == "r1")["result"] == "ok"  # acked
    got = js.wait(lambda e: e["ev"] == "broadcast" and e["name"] == "r1")  # self: true
    assert got["payload"]["payload"] == {"text": "hi"} and got["payload"]["event"] == "chat"
    js.send(op="track", name="r1", payload={"online": True})
    assert js.wait(lambda e: e.get("op") == "track")["result"] == "ok"
    js.wait(lambda e: e["ev"] == "presence" and e["kind"] == "join" and e["key"] == "ann")
    sync = js.wait(lambda e: e["ev"] == "presence" and e["kind"] == "sync" and "ann" in e["state"])
    assert sync["state"]["ann"][0]["online"] is True
    js.send(op="untrack", name="r1")
    js.wait(lambda e: e["ev"] == "presence" and e["kind"] == "leave" and e["key"] == "ann")


def test_set_auth_keeps_channel_alive_and_expiry_closes_it(js: JsPeer, stack: EmbeddedStack) -> None:
    owner = str(uuid.uuid4())
    js.send(op="setAuth", token=user_token(stack, owner, exp_in=2))
    js.send(op="channel", name="tok", topic="js-token", pg=[{"event": "INSERT", "schema": "public",
                                                             "table": "rt_items", "filter": f"owner=eq.{owner}"}])
    live(js, "tok")
    js.send(op="setAuth", token=user_token(stack, owner, exp_in=3600))
    time.sleep(2.5)  # past the first token's expiry
    write(stack, "insert into rt_items (owner, note) values (%s, 'still here')", (owner,))
    js.wait(lambda e: e["ev"] == "change" and e["name"] == "tok")
    js.send(op="setAuth", token=user_token(stack, owner, exp_in=1))
    err = js.wait(lambda e: e["ev"] == "system" and e["name"] == "tok" and e["payload"]["status"] == "error", 6)
    assert "Token has expired" in err["payload"]["message"]
    js.wait(lambda e: e["ev"] == "status" and e["name"] == "tok" and e["status"] in ("CLOSED", "CHANNEL_ERROR"), 6)


def test_rejoins_by_itself_after_realtime_restart(js: JsPeer, stack: EmbeddedStack) -> None:
    owner = str(uuid.uuid4())
    js.send(op="setAuth", token=user_token(stack, owner))
    js.send(op="channel", name="rs", topic="js-restart", pg=[{"event": "INSERT", "schema": "public",
                                                              "table": "rt_items", "filter": f"owner=eq.{owner}"}])
    live(js, "rs")
    stack.restart_realtime()
    js.wait(lambda e: len([s for s in js.of("system", "rs") if s["payload"]["status"] == "ok"]) >= 2, 20)
    write(stack, "insert into rt_items (owner, note) values (%s, 'after restart')", (owner,))
    got = js.wait(lambda e: e["ev"] == "change" and e["name"] == "rs", 10)
    assert got["payload"]["new"]["note"] == "after restart"
