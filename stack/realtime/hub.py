"""Who is subscribed to what: channels by topic, postgres_changes bindings by table, presence.

The hub is plain data with no I/O; the connections and the change dispatcher read and
write it from the one event loop, so it needs no locks. A channel reaches its client
through an ``Outbox`` (anything with ``send(frame)``: the sans-IO ``Connection``, or a
list in a test), so this module knows nothing of connections, sockets or the server.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from harness.phoenix.codec import VSN2, Frame
from stack.realtime.filters import Subscription, matches
from stack.realtime.policies import Policies

if TYPE_CHECKING:
    from stack.realtime.wal import Change

__all__ = ["Binding", "Channel", "Hub", "Outbox"]


class Outbox(Protocol):
    """Where a channel's frames go: its connection's queue to the client."""

    def send(self, frame: Frame) -> None: ...

_binding_ids = itertools.count(1)


@dataclass(eq=False)
class Binding:
    """One postgres_changes listener of a channel; ``id`` is what frames carry in ``ids``."""

    channel: Channel
    sub: Subscription
    id: int = field(default_factory=lambda: next(_binding_ids))

    def wants(self, change: Change) -> bool:
        s = self.sub
        if s.event != "*" and s.event != change.action:
            return False
        if s.schema not in ("*", change.schema) or s.table not in ("*", change.table):
            return False
        if not s.filters:
            return True
        row = change.identity if change.action == "DELETE" else change.record
        return matches(s.filters, row, change.types)


@dataclass(eq=False)
class Channel:
    """A topic joined on one connection (Phoenix's channel process)."""

    outbox: Outbox
    topic: str
    join_ref: str | None
    claims: dict[str, Any]
    token: str
    self_broadcast: bool = False
    ack_broadcast: bool = False
    presence_key: str = ""
    presence_enabled: bool = False
    bindings: list[Binding] = field(default_factory=list)
    closed: bool = False
    private: bool = False  # authorized by realtime.messages' policies (``policies``); a room apart from public ones
    policies: Policies | None = None
    replayed: set[str] = field(default_factory=set)  # ids of realtime.messages replayed at join: not sent twice
    _identity: tuple[str, str] = ("", "")
    _role: str = "anon"

    def __post_init__(self) -> None:
        self.set_claims(self.token, self.claims)

    def set_claims(self, token: str, claims: dict[str, Any]) -> None:
        self.token, self.claims = token, claims
        self._role = str(claims.get("role", "anon"))
        self._identity = (self._role,
                          json.dumps(claims, sort_keys=True, separators=(",", ":")))

    @property
    def room(self) -> str:
        """The hub's key: a private channel never shares a room with the public channel of the same topic."""
        return f"private:{self.topic}" if self.private else self.topic

    def receives(self, event: str) -> bool:
        """A private channel gets broadcasts only with broadcast read, presence only with presence read."""
        if self.policies is None:
            return True
        if event == "broadcast":
            return self.policies.broadcast_read is True
        if event in ("presence_diff", "presence_state"):
            return self.policies.presence_read is True
        return True

    @property
    def sub_topic(self) -> str:
        return self.topic.removeprefix("realtime:")

    @property
    def role(self) -> str:
        return self._role  # read per change per channel: kept with the claims (set_claims), not looked up

    def identity(self) -> tuple[str, str]:
        """(role, claims as JSON): channels with equal identities share one RLS check per change."""
        return self._identity


class Hub:
    def __init__(self) -> None:
        self.topics: dict[str, set[Channel]] = defaultdict(set)
        self._by_table: dict[tuple[str, str], list[Binding]] = defaultdict(list)
        # presence: topic -> key -> {channel: meta}
        self.presence: dict[str, dict[str, dict[Channel, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))

    # -- channels ------------------------------------------------------------------
    def add(self, ch: Channel) -> None:
        self.topics[ch.room].add(ch)
        for b in ch.bindings:
            self._by_table[(b.sub.schema, b.sub.table)].append(b)

    def remove(self, ch: Channel) -> None:
        ch.closed = True
        members = self.topics.get(ch.room)
        if members is not None:
            members.discard(ch)
            if not members:
                del self.topics[ch.room]
        for b in ch.bindings:
            lst = self._by_table.get((b.sub.schema, b.sub.table))
            if lst is not None:
                lst[:] = [x for x in lst if x is not b]
                if not lst:
                    del self._by_table[(b.sub.schema, b.sub.table)]

    def candidates(self, change: Change) -> list[Binding]:
        """Bindings whose event, table and filter accept the change (RLS not yet applied)."""
        out: list[Binding] = []
        for key in ((change.schema, change.table), (change.schema, "*"), ("*", "*")):
            for b in self._by_table.get(key, ()):
                if not b.channel.closed and b.wants(change):
                    out.append(b)
        return out

    def binding_count(self) -> int:
        return sum(len(v) for v in self._by_table.values())

    # -- fan-out -------------------------------------------------------------------
    def fan_out(self, room: str, event: str, payload: Any, skip: Channel | None = None, vsn2_only: bool = False,
                skip_id: str | None = None) -> int:
        """One frame to every channel in ``room`` (a public topic, or a private channel's ``room``) but ``skip``
        and those its policies keep from receiving ``event`` (``vsn2_only``: a binary payload, which a vsn 1.0.0
        client cannot read; ``skip_id``: a message already replayed to a channel), each under its own join_ref;
        how many got it."""
        n = 0
        for ch in list(self.topics.get(room, ())):
            if ch is skip or not ch.receives(event) or (skip_id is not None and skip_id in ch.replayed):
                continue
            if vsn2_only and getattr(ch.outbox, "vsn", VSN2) != VSN2:
                continue
            ch.outbox.send(Frame(topic=ch.topic, event=event, payload=payload, join_ref=ch.join_ref))
            n += 1
        return n

    def broadcast_from_api(self, topic: str, event: str, payload: Any, private: bool = False) -> int:
        """The REST broadcast endpoint's delivery: every channel on the topic (private or public) gets it."""
        full = topic if topic.startswith("realtime:") else f"realtime:{topic}"
        return self.fan_out(f"private:{full}" if private else full, "broadcast",
                            {"type": "broadcast", "event": event, "payload": payload})

    # -- presence ------------------------------------------------------------------
    def presence_state(self, topic: str) -> dict[str, Any]:
        return {key: {"metas": list(metas.values())} for key, metas in self.presence.get(topic, {}).items() if metas}

    def track(self, ch: Channel, meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Set this channel's presence; return (joins, leaves) for the diff."""
        key = ch.presence_key
        entry = self.presence[ch.room][key]
        previous = entry.get(ch)
        new_meta = {**meta, "phx_ref": uuid.uuid4().hex[:20]}
        if previous is not None:
            new_meta["phx_ref_prev"] = previous["phx_ref"]
        entry[ch] = new_meta
        leaves = {key: {"metas": [previous]}} if previous is not None else {}
        return {key: {"metas": [new_meta]}}, leaves

    def untrack(self, ch: Channel) -> dict[str, Any]:
        """Remove this channel's presence; return the leaves of the diff (empty if it had none)."""
        topic_state = self.presence.get(ch.room)
        if topic_state is None:
            return {}
        entry = topic_state.get(ch.presence_key)
        if not entry or ch not in entry:
            return {}
        meta = entry.pop(ch)
        if not entry:
            del topic_state[ch.presence_key]
        if not topic_state:
            del self.presence[ch.room]
        return {ch.presence_key: {"metas": [meta]}}
