"""The server's sans-IO ``Connection`` against the client ``PhoenixProtocol``, linked in memory (h11 style).

No Postgres, no sockets, no event loop: the publication is a fake ``Subscriptions``, tokens are checked by the
real ``TokenVerifier`` on an injected clock, and what the server sends is fed to the client protocol as bytes.
"""

from __future__ import annotations

import json
import struct
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.phoenix import ChannelState, Closed, Message, PhoenixProtocol, Reply
from harness.phoenix.codec import VSN1, VSN2, Frame
from stack import jwt
from stack.realtime.connection import CONFIRM_TOKEN_MAX_S, LIVE_WAIT_S, Connection
from stack.realtime.filters import Subscription
from stack.realtime.hub import Hub
from stack.realtime.tokens import TokenVerifier
from stack.realtime.wal import Change

SECRET = "unit-test-secret-" + "x" * 32
AUTH = TokenVerifier(SECRET)
ITEMS = {"postgres_changes": [{"event": "*", "schema": "public", "table": "items"}]}
Event = Reply | Message | Closed


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that never suspends (the fakes never wait) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the connection waited on something the fakes do not provide")


class Clock:
    def __init__(self) -> None:
        self.t = float(int(time.time()))  # whole seconds: "expired N seconds ago" is exact

    def __call__(self) -> float:
        return self.t


class FakeSubscriptions:
    """The publication: ``public.items`` (id, owner, kind) is published; streaming is a switch."""

    def __init__(self, live: bool = True) -> None:
        self.live = live
        self.tables = {("public", "items"): {"id", "owner", "kind"}}
        self.asked: list[list[Subscription]] = []

    async def validate(self, subs: list[Subscription]) -> str:
        self.asked.append(subs)
        for s in subs:
            cols = self.tables.get((s.schema, s.table))
            if cols is None:
                return f"Unable to subscribe to changes with given parameters: [table: {s.table}]"
            missing = [f.column for f in s.filters if f.column not in cols]
            if missing:
                return f"Unable to subscribe to changes: column {missing[0]!r} does not exist"
        return ""

    def streaming(self) -> bool:
        return self.live


def token(clock: Clock, exp_in: int = 3600, role: str = "authenticated", sub: str | None = None,
          secret: str = SECRET, **extra: Any) -> str:
    claims = {"sub": sub or str(uuid.uuid4()), "role": role, "exp": int(clock()) + exp_in, **extra}
    return jwt.encode(claims, secret)


class Peer:
    """One client linked to one server connection; ``events`` is everything the client protocol reported."""

    def __init__(self, hub: Hub, subs: FakeSubscriptions, clock: Clock, vsn: str = VSN1, api_key: str = "",
                 queue_limit: int = 1000) -> None:
        self.server = Connection(hub=hub, auth=AUTH, subscriptions=subs, vsn=vsn, api_key=api_key, clock=clock,
                                 queue_limit=queue_limit)
        self.client = PhoenixProtocol(vsn)
        self.events: list[Event] = []
        self.raw: list[str | bytes] = []

    def send(self, data: str | bytes) -> list[Event]:
        run(self.server.receive(data))
        return self.pump()

    def pump(self) -> list[Event]:
        out: list[Event] = []
        for data in self.server.data_to_send():
            self.raw.append(data)
            out += self.client.receive(data)
        self.events += out
        return out

    def join(self, topic: str, config: dict[str, Any] | None = None, tok: str | None = None) -> list[Event]:
        payload: dict[str, Any] = {"config": config or {}}
        if tok is not None:
            payload["access_token"] = tok
        return self.send(self.client.join(topic, payload))

    def push(self, topic: str, event: str, payload: Any) -> list[Event]:
        return self.send(self.client.push(topic, event, payload)[1])

    def messages(self, event: str) -> list[Message]:
        return [e for e in self.events if isinstance(e, Message) and e.event == event]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub() -> Hub:
    return Hub()


@pytest.fixture
def subs() -> FakeSubscriptions:
    return FakeSubscriptions()


@pytest.fixture
def peer(hub: Hub, subs: FakeSubscriptions, clock: Clock) -> Peer:
    return Peer(hub, subs, clock, api_key=token(clock, role="anon"))


def change(**record: Any) -> Change:
    return Change(schema="public", table="items", action="INSERT", types={"id": "bigint", "owner": "uuid"},
                  record=record, identity={}, pk=("id",))


# -- join ----------------------------------------------------------------------------------------

def test_join_ok_reply_ids_then_system_ok(peer: Peer, hub: Hub, subs: FakeSubscriptions, clock: Clock) -> None:
    cfg = {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "items", "filter": "id=eq.7"},
                                {"event": "DELETE", "schema": "public", "table": "items"}]}
    rep, system = peer.join("realtime:room", cfg, token(clock))
    assert isinstance(rep, Reply) and rep.kind == "join" and rep.status == "ok"
    b1, b2 = rep.response["postgres_changes"]
    assert {k: b1[k] for k in ("event", "schema", "table", "filter")} == cfg["postgres_changes"][0]
    assert isinstance(b1["id"], int) and isinstance(b2["id"], int) and b1["id"] != b2["id"]
    assert peer.client.channels["realtime:room"].state == ChannelState.JOINED
    assert peer.client.channels["realtime:room"].binding_ids == [b1["id"], b2["id"]]
    assert isinstance(system, Message) and system.event == "system"
    assert system.payload == {"extension": "postgres_changes", "status": "ok", "message": "Subscribed to PostgreSQL",
                              "channel": "room"}
    assert [[s.table for s in asked] for asked in subs.asked] == [["items", "items"]]
    assert [b.id for b in hub.candidates(change(id=7))] == [b1["id"]]
    assert hub.candidates(change(id=8)) == []


def test_join_without_postgres_changes_sends_no_system_message(peer: Peer, subs: FakeSubscriptions) -> None:
    [rep] = peer.join("realtime:plain")
    assert isinstance(rep, Reply) and rep.status == "ok" and rep.response == {"postgres_changes": []}
    assert subs.asked == []


def test_join_uses_the_socket_key_without_access_token(hub: Hub, subs: FakeSubscriptions, clock: Clock) -> None:
    p = Peer(hub, subs, clock, api_key="not-a-jwt")
    [rep] = p.join("realtime:x")
    assert isinstance(rep, Reply) and rep.status == "error"
    assert rep.response["reason"].startswith("MalformedJWT")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda c: "not-a-jwt", "MalformedJWT: invalid JWT: unable to parse or verify signature, token is malformed"),
        (lambda c: token(c, secret="y" * 40), "JwtSignatureError: Failed to validate JWT signature"),
        (lambda c: token(c, exp_in=-30), "InvalidJWTToken: Token has expired 30 seconds ago"),
        (lambda c: jwt.encode({"role": "authenticated"}, SECRET),
         "InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
        (lambda c: token(c, role="postgres"), "Unauthorized: role 'postgres' is not an API role"),
    ],
    ids=["garbage", "wrong-signature", "expired", "no-exp", "not-an-api-role"],
)
def test_join_refused_for_bad_tokens(peer: Peer, hub: Hub, clock: Clock, make: Any, reason: str) -> None:
    [rep] = peer.join("realtime:room", ITEMS, make(clock))
    assert isinstance(rep, Reply) and rep.status == "error" and rep.response == {"reason": reason}
    assert peer.client.channels["realtime:room"].state == ChannelState.ERRORED
    assert not hub.topics and peer.server.channels == {}


def test_join_refused_private_channel_and_topic_without_name(peer: Peer, clock: Clock, hub: Hub) -> None:
    [rep] = peer.join("realtime:secret", {"private": True}, token(clock))
    assert isinstance(rep, Reply) and rep.status == "error"
    assert rep.response["reason"].startswith("PrivateChannelsUnsupported")
    [rep] = peer.join("realtime:", {}, token(clock))
    assert isinstance(rep, Reply) and rep.response == {"reason": "TopicNameRequired: You must provide a topic name"}
    [rep] = peer.join("room", {}, token(clock))
    assert isinstance(rep, Reply) and rep.status == "error"
    assert not hub.topics


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"event": "*", "schema": "public", "table": "items", "filter": "id=zz.1"}, "Error parsing `filter` params"),
        ({"event": "*", "schema": "public", "table": "nope"}, "Unable to subscribe to changes with given parameters"),
        ({"event": "*", "schema": "public", "table": "items", "filter": "ghost=eq.1"}, "column 'ghost' does not exist"),
    ],
    ids=["bad-filter", "unknown-table", "unknown-column"],
)
def test_bad_subscription_ok_reply_then_system_error(peer: Peer, hub: Hub, clock: Clock, params: dict[str, Any],
                                                     message: str) -> None:
    rep, system = peer.join("realtime:bad", {"postgres_changes": [params]}, token(clock))
    assert isinstance(rep, Reply) and rep.status == "ok"
    assert rep.response["postgres_changes"] == [{**params, "id": 0}]
    assert isinstance(system, Message) and system.event == "system"
    assert system.payload["extension"] == "postgres_changes" and system.payload["status"] == "error"
    assert message in system.payload["message"]
    assert hub.binding_count() == 0 and "realtime:bad" in hub.topics  # joined, but no bindings


def test_system_ok_waits_for_the_wal_stream(peer: Peer, subs: FakeSubscriptions, clock: Clock) -> None:
    subs.live = False
    [rep] = peer.join("realtime:room", ITEMS, token(clock))
    assert isinstance(rep, Reply) and rep.status == "ok"
    assert peer.server.awaiting_streaming and peer.server.next_deadline() == clock() + LIVE_WAIT_S
    clock.t += LIVE_WAIT_S / 2
    peer.server.tick()
    assert peer.pump() == []
    subs.live = True
    peer.server.tick()
    [system] = peer.pump()
    assert isinstance(system, Message) and system.payload["status"] == "ok"
    assert not peer.server.awaiting_streaming


def test_system_error_when_the_wal_stream_never_comes(peer: Peer, subs: FakeSubscriptions, clock: Clock) -> None:
    subs.live = False
    peer.join("realtime:room", ITEMS, token(clock))
    clock.t += LIVE_WAIT_S
    peer.server.tick()
    [system] = peer.pump()
    assert isinstance(system, Message) and system.payload == {
        "extension": "postgres_changes", "status": "error", "channel": "room",
        "message": "Realtime was unable to connect to the project database"}
    subs.live = True
    peer.server.tick()
    assert peer.pump() == []  # given up: no late "ok"


def test_leaving_while_waiting_for_the_stream_cancels_the_wait(peer: Peer, subs: FakeSubscriptions,
                                                                clock: Clock) -> None:
    subs.live = False
    peer.join("realtime:room", ITEMS, token(clock))
    peer.send(peer.client.leave("realtime:room") or "")
    assert not peer.server.awaiting_streaming and peer.server.next_deadline() is None
    subs.live = True
    peer.server.tick()
    assert peer.pump() == []


class _Suspend:
    def __await__(self):  # type: ignore[no-untyped-def]
        yield


def test_join_finishes_after_validation_unless_the_socket_closed(clock: Clock) -> None:
    """The one async step: a join awaits the publication; a socket closed meanwhile joins nothing."""
    class SlowSubscriptions(FakeSubscriptions):
        async def validate(self, subs: list[Subscription]) -> str:
            await _Suspend()
            return await super().validate(subs)

    for close_meanwhile in (False, True):
        hub = Hub()
        p = Peer(hub, SlowSubscriptions(), clock, api_key=token(clock, role="anon"))
        pending = p.server.receive(p.client.join("realtime:slow", {"config": ITEMS}))
        pending.send(None)  # suspended in validate: nothing answered yet
        assert p.server.queued == 0
        if close_meanwhile:
            p.server.close()
        with pytest.raises(StopIteration):
            pending.send(None)
        assert ("realtime:slow" in hub.topics) is not close_meanwhile
        assert (p.server.queued == 2) is not close_meanwhile  # reply + system ok


def test_duplicate_join_closes_the_old_channel_first(peer: Peer, hub: Hub, clock: Clock) -> None:
    peer.join("realtime:dup", ITEMS, token(clock))
    first_ref = peer.client.channels["realtime:dup"].join_ref
    peer.raw.clear()
    peer.join("realtime:dup", ITEMS, token(clock))
    close, reply = (json.loads(d) for d in peer.raw[:2])
    assert close["event"] == "phx_close" and close["ref"] == first_ref and close["join_ref"] == first_ref
    assert reply["event"] == "phx_reply" and reply["payload"]["status"] == "ok"
    assert len(hub.topics["realtime:dup"]) == 1 and hub.binding_count() == 1
    # the client ignores the close of its previous join: its channel is the new one, joined
    assert peer.client.channels["realtime:dup"].state == ChannelState.JOINED


def test_leave(peer: Peer, hub: Hub, clock: Clock) -> None:
    peer.join("realtime:room", ITEMS, token(clock))
    [rep] = peer.send(peer.client.leave("realtime:room") or "")
    assert isinstance(rep, Reply) and rep.kind == "leave" and rep.status == "ok"
    assert peer.client.channels["realtime:room"].state == ChannelState.CLOSED
    assert not hub.topics and hub.binding_count() == 0 and peer.server.next_deadline() is None


# -- heartbeat, unmatched topics, bad frames --------------------------------------------------------

def test_heartbeat(peer: Peer) -> None:
    hb = peer.client.heartbeat()
    assert hb is not None and peer.client.heartbeat() is None  # one outstanding
    [rep] = peer.send(hb)
    assert isinstance(rep, Reply) and rep.kind == "heartbeat" and rep.status == "ok" and rep.response == {}
    assert peer.client.heartbeat() is not None  # answered: the next one may go


def test_unmatched_topic_stale_join_ref_and_unknown_event(peer: Peer, clock: Clock) -> None:
    [rep] = peer.push("realtime:nobody", "broadcast", {"event": "x"})
    assert isinstance(rep, Reply) and rep.status == "error" and rep.response == {"reason": "unmatched topic"}
    peer.join("realtime:room", {}, token(clock))
    stale = json.dumps({"topic": "realtime:room", "event": "broadcast", "payload": {"event": "x"}, "ref": "99",
                        "join_ref": "12345"})
    [rep] = peer.send(stale)
    assert isinstance(rep, Reply) and rep.response == {"reason": "unmatched topic"}
    [rep] = peer.push("realtime:room", "zzz", {})
    assert isinstance(rep, Reply) and rep.response == {"reason": "unknown event 'zzz'"}


def test_bad_frames_are_ignored(peer: Peer) -> None:
    for bad in ("garbage", "[1,2]", '{"topic": 1}', b"\x09\x00", "null"):
        assert peer.send(bad) == []
    [rep] = peer.send(peer.client.heartbeat() or "")
    assert isinstance(rep, Reply) and rep.status == "ok"


FRAMES = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40),
    st.fixed_dictionaries({
        "topic": st.sampled_from(["realtime:f", "phoenix", "", "realtime:"]),
        "event": st.sampled_from(["phx_join", "heartbeat", "broadcast", "presence", "access_token", "phx_leave", "zz"]),
        "payload": st.one_of(st.none(), st.integers(), st.text(max_size=6), st.dictionaries(
            st.sampled_from(["config", "access_token", "event", "payload", "type"]),
            st.one_of(st.none(), st.integers(), st.text(max_size=6), st.lists(st.integers(), max_size=2),
                      st.dictionaries(st.sampled_from(["broadcast", "presence", "postgres_changes", "private",
                                                       "self", "key", "enabled", "track"]),
                                      st.one_of(st.booleans(), st.text(max_size=4), st.none()), max_size=3)),
            max_size=4)),
        "ref": st.one_of(st.none(), st.text(max_size=3), st.integers()),
        "join_ref": st.one_of(st.none(), st.text(max_size=3))}).map(json.dumps),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(FRAMES, min_size=1, max_size=10))
def test_fuzzed_frames_never_raise_and_leave_others_served(batch: list[str | bytes]) -> None:
    """What the socket fuzz checks, on the state machine directly: no input escapes as an exception."""
    clock, hub, subs = Clock(), Hub(), FakeSubscriptions()
    bystander = Peer(hub, subs, clock, api_key=token(clock, role="anon"))
    bystander.join("realtime:f", {"broadcast": {"self": False}})
    evil = Peer(hub, subs, clock, api_key=token(clock, role="anon"))
    for data in batch:
        evil.send(data)
    clock.t += CONFIRM_TOKEN_MAX_S + 1
    evil.server.tick()
    evil.pump()
    assert hub.fan_out("realtime:f", "broadcast", {"event": "still-here"}) >= 1
    assert bystander.pump()[-1] == Message("realtime:f", "broadcast", {"event": "still-here"})
    [rep] = bystander.send(bystander.client.heartbeat() or "")
    assert isinstance(rep, Reply) and rep.status == "ok"


# -- tokens ------------------------------------------------------------------------------------------

def test_expired_token_closes_the_channel(peer: Peer, hub: Hub, clock: Clock) -> None:
    peer.join("realtime:exp", ITEMS, token(clock, exp_in=60))
    join_ref = peer.client.channels["realtime:exp"].join_ref
    assert peer.server.next_deadline() == pytest.approx(clock() + 60.001)
    clock.t += 59
    peer.server.tick()
    assert peer.pump() == []
    clock.t += 2
    peer.server.tick()
    system, closed = peer.pump()
    assert isinstance(system, Message) and system.payload == {
        "extension": "system", "status": "error", "message": "Token has expired 1 seconds ago", "channel": "exp"}
    assert closed == Closed("realtime:exp", "phx_close")
    assert json.loads(peer.raw[-1])["ref"] == join_ref
    assert peer.client.channels["realtime:exp"].state == ChannelState.CLOSED
    assert not hub.topics and peer.server.channels == {}
    [rep] = peer.send(peer.client.heartbeat() or "")  # the socket itself stays up
    assert isinstance(rep, Reply) and rep.status == "ok"


def test_token_rechecked_at_most_every_five_minutes(peer: Peer, clock: Clock) -> None:
    peer.join("realtime:long", {}, token(clock, exp_in=7200))
    assert peer.server.next_deadline() == pytest.approx(clock() + CONFIRM_TOKEN_MAX_S + 0.001)
    clock.t += CONFIRM_TOKEN_MAX_S + 1
    peer.server.tick()
    assert peer.pump() == [] and "realtime:long" in peer.server.channels
    assert peer.server.next_deadline() == pytest.approx(clock() + CONFIRM_TOKEN_MAX_S + 0.001)


def test_access_token_swaps_claims_and_the_expiry(peer: Peer, hub: Hub, clock: Clock) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    peer.join("realtime:swap", ITEMS, token(clock, exp_in=10, sub=a))
    [ch] = hub.topics["realtime:swap"]
    assert ch.claims["sub"] == a
    assert peer.push("realtime:swap", "access_token", {"access_token": token(clock, sub=b)}) == []  # no reply
    assert ch.claims["sub"] == b and ch.identity()[1] == json.dumps(ch.claims, sort_keys=True, separators=(",", ":"))
    clock.t += 20  # past the first token's expiry
    peer.server.tick()
    assert peer.pump() == [] and "realtime:swap" in peer.server.channels
    for ignored in (None, "", "sb_publishable_abc", ch.token):
        assert peer.push("realtime:swap", "access_token", {"access_token": ignored}) == []
        assert ch.claims["sub"] == b and peer.server.channels == {"realtime:swap": ch}


def test_bad_access_token_shuts_the_channel(peer: Peer, hub: Hub, clock: Clock) -> None:
    peer.join("realtime:swap", {}, token(clock))
    system, closed = peer.push("realtime:swap", "access_token", {"access_token": token(clock, exp_in=-5)})
    assert isinstance(system, Message) and system.payload["message"] == "Token has expired 5 seconds ago"
    assert isinstance(closed, Closed) and not hub.topics


# -- broadcast ---------------------------------------------------------------------------------------

def test_broadcast_self_ack_and_fan_out(hub: Hub, subs: FakeSubscriptions, clock: Clock) -> None:
    s1, s2 = (Peer(hub, subs, clock, api_key=token(clock, role="anon")) for _ in range(2))
    s1.join("realtime:room", {"broadcast": {"self": True, "ack": True}})
    s2.join("realtime:room", {"broadcast": {"self": False}})
    msg = {"type": "broadcast", "event": "hi", "payload": {"x": 1}}
    got = s1.push("realtime:room", "broadcast", msg)
    assert Message("realtime:room", "broadcast", msg) in got  # self
    assert [e.status for e in got if isinstance(e, Reply)] == ["ok"]  # ack
    assert s2.pump() == [Message("realtime:room", "broadcast", msg)]
    back = {"type": "broadcast", "event": "back", "payload": {}}
    assert s2.push("realtime:room", "broadcast", back) == []  # no self, no ack
    assert s1.pump() == [Message("realtime:room", "broadcast", back)]
    [rep] = s1.push("realtime:room", "broadcast", {"payload": {}})
    assert isinstance(rep, Reply) and rep.response == {"reason": "broadcast needs an event name"}
    assert hub.broadcast_from_api("room", "announce", {"m": 1}) == 2
    announce = Message("realtime:room", "broadcast", {"type": "broadcast", "event": "announce", "payload": {"m": 1}})
    assert s1.pump() == [announce] and s2.pump() == [announce]


def test_other_topics_do_not_hear_a_broadcast(hub: Hub, subs: FakeSubscriptions, clock: Clock) -> None:
    s1, s2 = (Peer(hub, subs, clock, api_key=token(clock, role="anon")) for _ in range(2))
    s1.join("realtime:a", {})
    s2.join("realtime:b", {})
    s1.push("realtime:a", "broadcast", {"event": "x", "payload": {}})
    assert s2.pump() == []


# -- presence ----------------------------------------------------------------------------------------

def test_presence_state_and_diffs(hub: Hub, subs: FakeSubscriptions, clock: Clock) -> None:
    a, b = (Peer(hub, subs, clock, api_key=token(clock, role="anon")) for _ in range(2))
    rep, state = a.join("realtime:lobby", {"presence": {"key": "alice", "enabled": True}})
    assert state == Message("realtime:lobby", "presence_state", {})
    got = a.push("realtime:lobby", "presence", {"type": "presence", "event": "track", "payload": {"status": "on"}})
    [ack] = [e for e in got if isinstance(e, Reply)]
    assert ack.status == "ok"
    [diff] = [e for e in got if isinstance(e, Message)]
    assert diff.event == "presence_diff" and diff.payload["leaves"] == {}
    [meta] = diff.payload["joins"]["alice"]["metas"]
    assert meta["status"] == "on" and isinstance(meta["phx_ref"], str)
    _, state = b.join("realtime:lobby", {"presence": {"key": "bob", "enabled": True}})
    assert isinstance(state, Message) and state.payload == {"alice": {"metas": [meta]}}
    # tracking again replaces the meta: the diff carries the old one as a leave
    a.push("realtime:lobby", "presence", {"type": "presence", "event": "track", "payload": {"status": "away"}})
    [again] = b.pump()
    assert isinstance(again, Message) and again.payload["leaves"] == {"alice": {"metas": [meta]}}
    assert again.payload["joins"]["alice"]["metas"][0]["phx_ref_prev"] == meta["phx_ref"]
    # untrack: everyone sees the leave; a second untrack has nothing to leave
    a.push("realtime:lobby", "presence", {"type": "presence", "event": "untrack"})
    [untracked] = b.pump()
    assert isinstance(untracked, Message) and untracked.event == "presence_diff"
    assert list(untracked.payload["leaves"]) == ["alice"]
    [rep] = a.push("realtime:lobby", "presence", {"type": "presence", "event": "untrack"})
    assert isinstance(rep, Reply) and rep.status == "ok"
    assert b.pump() == []
    [rep] = a.push("realtime:lobby", "presence", {"event": "track", "payload": [1]})
    assert isinstance(rep, Reply) and rep.response == {"reason": "Presence track payload must be a map"}


def test_a_dropped_socket_leaves_its_presence(hub: Hub, subs: FakeSubscriptions, clock: Clock) -> None:
    a, b = (Peer(hub, subs, clock, api_key=token(clock, role="anon")) for _ in range(2))
    a.join("realtime:lobby", {"presence": {"key": "alice"}})
    b.join("realtime:lobby", {"presence": {"key": "bob"}})
    b.push("realtime:lobby", "presence", {"event": "track", "payload": {"n": 1}})
    [joined] = a.pump()
    meta = joined.payload["joins"]["bob"]["metas"][0]  # type: ignore[union-attr]
    b.server.close()
    assert a.pump() == [Message("realtime:lobby", "presence_diff", {"joins": {}, "leaves": {"bob": {"metas": [meta]}}})]
    assert list(hub.topics["realtime:lobby"]) == list(a.server.channels.values())
    assert hub.presence_state("realtime:lobby") == {}


# -- vsn 2.0.0 and binary broadcasts ---------------------------------------------------------------------

def user_broadcast_push(join_ref: str, ref: str, topic: str, event: str, body: bytes, encoding: int) -> bytes:
    """Kind 3, as realtime-js's serializer writes it: kind, five lengths, encoding, the strings, the payload."""
    parts = [join_ref.encode(), ref.encode(), topic.encode(), event.encode(), b""]
    return bytes([3, *map(len, parts), encoding]) + b"".join(parts) + body


def test_vsn2_array_frames(hub: Hub, subs: FakeSubscriptions, clock: Clock) -> None:
    p = Peer(hub, subs, clock, vsn=VSN2, api_key=token(clock, role="anon"))
    rep, system = p.join("realtime:v2", ITEMS)
    assert isinstance(rep, Reply) and rep.status == "ok" and isinstance(system, Message)
    join_ref, ref, topic, event, payload = json.loads(p.raw[0])
    assert (join_ref, ref, topic, event, payload["status"]) == (rep.ref, rep.ref, "realtime:v2", "phx_reply", "ok")
    assert json.loads(p.raw[1])[:4] == [rep.ref, None, "realtime:v2", "system"]


def test_vsn2_binary_broadcast_in_json_and_binary_out(hub: Hub, subs: FakeSubscriptions, clock: Clock) -> None:
    sender, reader = (Peer(hub, subs, clock, vsn=VSN2, api_key=token(clock, role="anon")) for _ in range(2))
    v1 = Peer(hub, subs, clock, vsn=VSN1, api_key=token(clock, role="anon"))
    sender.join("realtime:bin", {})
    reader.join("realtime:bin", {})
    v1.join("realtime:bin", {})
    join_ref = sender.client.channels["realtime:bin"].join_ref or ""
    sender.send(user_broadcast_push(join_ref, "9", "realtime:bin", "moved", b'{"x":1}', encoding=1))
    expected = Message("realtime:bin", "broadcast", {"type": "broadcast", "event": "moved", "payload": {"x": 1}})
    assert reader.pump() == [expected] and v1.pump() == [expected]
    sender.send(user_broadcast_push(join_ref, "10", "realtime:bin", "blob", b"\x00\x01\xff", encoding=0))
    reader.pump()
    frame = reader.raw[-1]
    assert isinstance(frame, bytes)
    kind, topic_len, event_len, meta_len, encoding = struct.unpack_from("5B", frame)
    assert (kind, encoding, meta_len) == (4, 0, 0)
    body = frame[5:]
    assert body[:topic_len] == b"realtime:bin" and body[topic_len:topic_len + event_len] == b"blob"
    assert body[topic_len + event_len:] == b"\x00\x01\xff"


# -- slow consumers and closing ------------------------------------------------------------------------

def test_slow_consumer_is_disconnected(hub: Hub, subs: FakeSubscriptions, clock: Clock) -> None:
    slow = Peer(hub, subs, clock, api_key=token(clock, role="anon"), queue_limit=5)
    fast = Peer(hub, subs, clock, api_key=token(clock, role="anon"))
    slow.join("realtime:firehose", {})
    fast.join("realtime:firehose", {})
    for i in range(5):
        hub.fan_out("realtime:firehose", "broadcast", {"event": "n", "payload": {"i": i}})
    assert slow.server.queued == 5 and not slow.server.closed
    hub.fan_out("realtime:firehose", "broadcast", {"event": "n", "payload": {"i": 5}})
    assert slow.server.closed and slow.server.close_code == 1000
    assert list(hub.topics["realtime:firehose"]) == list(fast.server.channels.values())
    assert len(slow.pump()) == 5  # what was queued before the limit still goes out, then nothing
    assert slow.server.next_data() is None
    assert len(fast.pump()) == 6


def test_close_with_a_code_drops_every_channel_and_ignores_input(peer: Peer, hub: Hub, clock: Clock) -> None:
    peer.join("realtime:a", ITEMS, token(clock))
    peer.join("realtime:b", {}, token(clock))
    woken: list[int] = []
    peer.server.wakeup = lambda: woken.append(1)
    peer.server.close(1012)
    assert peer.server.closed and peer.server.close_code == 1012 and woken == [1]
    assert not hub.topics and hub.binding_count() == 0 and peer.server.next_deadline() is None
    assert peer.send(peer.client.heartbeat() or "") == []
    assert peer.join("realtime:late", {}, token(clock)) == [] and not hub.topics  # nothing joins a closed socket
    peer.server.send(Frame(topic="realtime:a", event="broadcast"))
    assert peer.server.next_data() is None


def test_wakeup_called_for_every_queued_frame(hub: Hub, subs: FakeSubscriptions, clock: Clock) -> None:
    woken: list[int] = []
    conn = Connection(hub=hub, auth=AUTH, subscriptions=subs, api_key=token(clock, role="anon"), clock=clock,
                      wakeup=lambda: woken.append(1))
    run(conn.receive(PhoenixProtocol().heartbeat() or ""))
    assert woken == [1] and conn.queued == 1
