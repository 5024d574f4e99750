"""The hub as plain data: channels by topic, bindings by table, presence, fan-out to outboxes (here lists)."""

from __future__ import annotations

from typing import Any

from harness.phoenix.codec import Frame
from stack.realtime.filters import parse_params
from stack.realtime.hub import Binding, Channel, Hub
from stack.realtime.wal import Change


class Inbox(list[Frame]):
    def send(self, frame: Frame) -> None:
        self.append(frame)


def channel(topic: str = "realtime:t", join_ref: str = "1", **claims: Any) -> Channel:
    return Channel(outbox=Inbox(), topic=topic, join_ref=join_ref, claims={"role": "authenticated", **claims},
                   token="tok")


def bind(hub: Hub, ch: Channel, **params: Any) -> Binding:
    b = Binding(channel=ch, sub=parse_params({"schema": "public", **params}))
    ch.bindings.append(b)
    hub.add(ch)
    return b


def change(action: str = "INSERT", table: str = "orders", record: dict[str, Any] | None = None,
           identity: dict[str, Any] | None = None) -> Change:
    return Change(schema="public", table=table, action=action, types={"id": "int4", "status": "text"},
                  record=record or {}, identity=identity or {}, pk=("id",))


def test_bindings_want_their_event_table_and_filter() -> None:
    hub = Hub()
    every = bind(hub, channel(), table="orders")
    inserts = bind(hub, channel(), table="orders", event="INSERT")
    paid = bind(hub, channel(), table="orders", filter="status=eq.paid")
    schema_wide = bind(hub, channel(), table="*")
    other = bind(hub, channel(), table="products")
    assert len({every.id, inserts.id, paid.id, schema_wide.id, other.id}) == 5
    got = hub.candidates(change(record={"id": 1, "status": "paid"}))
    assert {b.id for b in got} == {every.id, inserts.id, paid.id, schema_wide.id}
    got = hub.candidates(change("UPDATE", record={"id": 1, "status": "new"}, identity={"id": 1}))
    assert {b.id for b in got} == {every.id, schema_wide.id}
    # a DELETE is matched on the old row (its identity), not on the empty new record
    got = hub.candidates(change("DELETE", identity={"id": 1, "status": "paid"}))
    assert {b.id for b in got} == {every.id, paid.id, schema_wide.id}
    assert hub.binding_count() == 5


def test_removed_and_closed_channels_are_no_candidates() -> None:
    hub = Hub()
    a, b = channel(), channel()
    ba, bb = bind(hub, a, table="orders"), bind(hub, b, table="orders")
    b.closed = True
    assert hub.candidates(change()) == [ba]
    hub.remove(a)
    assert a.closed and hub.candidates(change()) == [] and "realtime:t" in hub.topics
    hub.remove(b)
    assert not hub.topics and hub.binding_count() == 0 and bb.channel is b


def test_fan_out_to_outboxes_with_each_join_ref() -> None:
    hub = Hub()
    a, b, elsewhere = channel(join_ref="1"), channel(join_ref="7"), channel("realtime:other")
    for ch in (a, b, elsewhere):
        hub.add(ch)
    assert hub.fan_out("realtime:t", "broadcast", {"x": 1}, skip=a) == 1
    assert a.outbox == [] and b.outbox == [Frame("realtime:t", "broadcast", {"x": 1}, None, "7")]
    assert hub.broadcast_from_api("t", "hello", {"m": 1}) == 2
    assert a.outbox == [Frame("realtime:t", "broadcast", {"type": "broadcast", "event": "hello", "payload": {"m": 1}},
                              None, "1")]
    assert hub.broadcast_from_api("realtime:other", "x", {}) == 1
    assert elsewhere.outbox == [Frame("realtime:other", "broadcast", {"type": "broadcast", "event": "x", "payload": {}},
                                      None, "1")]
    assert hub.fan_out("realtime:nobody", "broadcast", {}) == 0


def test_presence_track_retrack_untrack() -> None:
    hub = Hub()
    a, b = channel(), channel()
    a.presence_key, b.presence_key = "alice", "alice"  # two tabs of one user share a key
    joins, leaves = hub.track(a, {"tab": 1})
    [m1] = joins["alice"]["metas"]
    assert leaves == {} and m1["tab"] == 1 and len(m1["phx_ref"]) == 20
    hub.track(b, {"tab": 2})
    assert [m["tab"] for m in hub.presence_state("realtime:t")["alice"]["metas"]] == [1, 2]
    joins, leaves = hub.track(a, {"tab": 3})
    assert leaves == {"alice": {"metas": [m1]}} and joins["alice"]["metas"][0]["phx_ref_prev"] == m1["phx_ref"]
    assert hub.untrack(a)["alice"]["metas"][0]["tab"] == 3
    assert hub.untrack(a) == {}
    assert [m["tab"] for m in hub.presence_state("realtime:t")["alice"]["metas"]] == [2]
    hub.untrack(b)
    assert hub.presence_state("realtime:t") == {} and not hub.presence


def test_equal_claims_share_one_identity() -> None:
    a, b, c = channel(sub="u1", exp=1), channel(exp=1, sub="u1"), channel(sub="u2", exp=1)
    assert a.identity() == b.identity() != c.identity()
    assert a.role == "authenticated" and a.sub_topic == "t"
    a.set_claims("tok2", {"role": "anon"})
    assert a.identity() == ("anon", '{"role":"anon"}') and a.token == "tok2"
