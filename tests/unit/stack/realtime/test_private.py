"""Private channels in the sans-IO ``Connection``, against a fake ``Private`` (the policies as a table): who may
join, receive, send and track; replay; the private room apart from the public one; binary only to vsn 2."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.phoenix import Message, PhoenixProtocol, Reply
from harness.phoenix.codec import VSN1, VSN2
from stack.realtime.connection import Connection
from stack.realtime.hub import Hub
from stack.realtime.policies import PrivateError, replay_params
from tests.unit.stack.realtime.test_connection import AUTH, Clock, FakeSubscriptions, run, token


@pytest.fixture
def clock() -> Clock:
    return Clock()


class FakePrivate:
    """Claims name what they may do: ``can`` = {"read", "presence", "send"}; ``boom`` makes every check fail."""

    def __init__(self, stored: list[dict[str, Any]] | None = None) -> None:
        self.stored = stored or []
        self.asked: list[tuple[str, str]] = []

    async def read(self, topic: str, claims: dict[str, Any], presence: bool = True) -> tuple[bool, bool]:
        if claims.get("boom"):
            raise PrivateError("policy raised")
        self.asked.append(("read", topic))
        can = claims.get("can", [])
        return "read" in can, presence and "presence" in can

    async def write(self, topic: str, claims: dict[str, Any], extension: str) -> bool:
        self.asked.append(("write:" + extension, topic))
        return ("send" if extension == "broadcast" else "presence") in claims.get("can", [])

    async def replay(self, topic: str, since_ms: int, limit: int) -> list[dict[str, Any]]:
        self.asked.append((f"replay:{since_ms}:{limit}", topic))
        return self.stored[-limit:]


class Peer:
    def __init__(self, hub: Hub, private: FakePrivate, clock: Clock, vsn: str = VSN1) -> None:
        self.server = Connection(hub=hub, auth=AUTH, subscriptions=FakeSubscriptions(), vsn=vsn, clock=clock,
                                 private=private)
        self.client = PhoenixProtocol(vsn)
        self.events: list[Any] = []
        self.raw: list[str | bytes] = []

    def pump(self) -> list[Any]:
        out: list[Any] = []
        for data in self.server.data_to_send():
            self.raw.append(data)
            out += self.client.receive(data)
        self.events += out
        return out

    def send(self, data: str | bytes) -> list[Any]:
        run(self.server.receive(data))
        return self.pump()

    def join(self, topic: str, config: dict[str, Any], tok: str) -> Reply:
        [rep, *_] = [e for e in self.send(self.client.join(topic, {"config": config, "access_token": tok}))
                     if isinstance(e, Reply)]
        return rep

    def broadcasts(self) -> list[Message]:
        self.pump()
        return [e for e in self.events if isinstance(e, Message) and e.event == "broadcast"]


def test_join_needs_a_read_and_errors_are_reported(clock: Clock) -> None:
    hub, priv = Hub(), FakePrivate()
    p = Peer(hub, priv, clock)
    assert p.join("realtime:t", {"private": True}, token(clock, can=["read"])).status == "ok"
    no = p.join("realtime:u", {"private": True}, token(clock, can=[]))
    assert no.status == "error" and no.response["reason"] == ("Unauthorized: You do not have permissions to read"
                                                              " from this Channel topic: u")
    err = p.join("realtime:v", {"private": True}, token(clock, boom=True))
    assert err.response["reason"] == "UnableToSetPolicies: policy raised"
    assert p.join("realtime:w", {}, token(clock)).status == "ok" and ("read", "w") not in priv.asked  # public


def test_sends_need_the_insert_policy_and_rooms_are_apart(clock: Clock) -> None:
    hub, priv = Hub(), FakePrivate()
    rx, sender, reader, public = (Peer(hub, priv, clock) for _ in range(4))
    rx.join("realtime:t", {"private": True}, token(clock, can=["read"]))
    sender.join("realtime:t", {"private": True, "broadcast": {"ack": True}}, token(clock, can=["read", "send"]))
    reader.join("realtime:t", {"private": True, "broadcast": {"ack": True}}, token(clock, can=["read"]))
    public.join("realtime:t", {"broadcast": {"ack": True}}, token(clock))
    refused = reader.send(reader.client.push("realtime:t", "broadcast", {"type": "broadcast", "event": "no",
                                                                          "payload": {}})[1])
    assert refused == []  # dropped, no ack
    acked = sender.send(sender.client.push("realtime:t", "broadcast", {"type": "broadcast", "event": "yes",
                                                                        "payload": {}})[1])
    assert [e.status for e in acked if isinstance(e, Reply)] == ["ok"]
    public.send(public.client.push("realtime:t", "broadcast", {"type": "broadcast", "event": "pub", "payload": {}})[1])
    assert [m.payload["event"] for m in rx.broadcasts()] == ["yes"]  # not the public channel's
    assert [m.payload["event"] for m in reader.broadcasts()] == ["yes"]
    assert public.broadcasts() == [] and sender.broadcasts() == []  # no self
    assert priv.asked.count(("write:broadcast", "t")) == 2  # once per channel, at its first send


def test_presence_needs_its_policies(clock: Clock) -> None:
    hub, priv = Hub(), FakePrivate()
    member, outsider = Peer(hub, priv, clock), Peer(hub, priv, clock)
    member.join("realtime:t", {"private": True, "presence": {"enabled": True, "key": "m"}},
                token(clock, can=["read", "presence"]))
    outsider.join("realtime:t", {"private": True, "presence": {"enabled": True, "key": "o"}}, token(clock, can=["read"]))
    track = {"type": "presence", "event": "track", "payload": {"x": 1}}
    assert [e.status for e in outsider.send(outsider.client.push("realtime:t", "presence", track)[1])
            if isinstance(e, Reply)] == ["error"]
    assert [e.status for e in member.send(member.client.push("realtime:t", "presence", track)[1])
            if isinstance(e, Reply)] == ["ok"]
    outsider.pump()
    assert not [e for e in outsider.events if isinstance(e, Message) and e.event.startswith("presence")]
    assert [e for e in member.events if isinstance(e, Message) and e.event == "presence_diff"]


def test_replay_after_the_join_marked_replayed_and_not_sent_twice(clock: Clock) -> None:
    hub = Hub()
    stored: list[dict[str, Any]] = [{"id": f"m{i}", "event": "ev", "payload": {"n": i}, "binary": None}
                                    for i in range(3)]
    stored.append({"id": "b", "event": "ev", "payload": None, "binary": b"\x00\x01"})
    priv = FakePrivate(stored)
    v1, v2 = Peer(hub, priv, clock), Peer(hub, priv, clock, vsn=VSN2)
    cfg = {"private": True, "broadcast": {"replay": {"since": 5, "limit": 100}}}
    assert v1.join("realtime:t", cfg, token(clock, can=["read"])).status == "ok"
    assert v2.join("realtime:t", cfg, token(clock, can=["read"])).status == "ok"
    assert ("replay:5:25", "t") in priv.asked  # the limit is clamped to 25
    got = v1.broadcasts()
    assert [m.payload["payload"]["n"] for m in got] == [0, 1, 2]  # the binary one: not to vsn 1
    assert all(m.payload["meta"] == {"replayed": True, "id": f"m{i}"} for i, m in enumerate(got))
    assert any(isinstance(r, bytes) and r.endswith(b"\x00\x01") for r in v2.raw)  # a kind-4 binary frame
    # the same message arriving live from the WAL is not sent again to those that had it replayed
    n = hub.fan_out("private:realtime:t", "broadcast", {"type": "broadcast", "event": "ev", "payload": {},
                                                        "meta": {"id": "m1"}}, skip_id="m1")
    assert n == 0


def test_replay_refusals(clock: Clock) -> None:
    p = Peer(Hub(), FakePrivate(), clock)
    pub = p.join("realtime:a", {"broadcast": {"replay": {"since": 0}}}, token(clock, can=["read"]))
    assert pub.response["reason"] == "UnableToReplayMessages: Replay is not allowed for public channels"
    bad = p.join("realtime:b", {"private": True, "broadcast": {"replay": {"since": "x"}}}, token(clock, can=["read"]))
    assert bad.response["reason"] == "UnableToReplayMessages: Replay params are not valid"
    no_read = p.join("realtime:c", {"private": True, "presence": {"enabled": True},
                                    "broadcast": {"replay": {"since": 0}}}, token(clock, can=["presence"]))
    assert no_read.response["reason"].startswith("Unauthorized")
    assert replay_params({"since": 1, "limit": 0}) == (1, 1) and replay_params({"since": True}) is None
    assert replay_params({}) == (0, 25) and replay_params({"since": -1}) is None


def test_a_new_token_that_revokes_the_read_closes_the_channel(clock: Clock) -> None:
    p = Peer(Hub(), FakePrivate(), clock)
    p.join("realtime:t", {"private": True}, token(clock, can=["read"]))
    p.send(json.dumps({"topic": "realtime:t", "event": "access_token", "payload": {"access_token":
                       token(clock, can=[])}, "ref": "9", "join_ref": p.client.channels["realtime:t"].join_ref}))
    sys = [e for e in p.events if isinstance(e, Message) and e.event == "system"]
    assert sys and "no longer have permission to read from this Channel topic: t" in sys[-1].payload["message"]
    assert "realtime:t" not in p.server.channels
