"""The client side of Phoenix channels as Supabase Realtime speaks them, without I/O.

Feed it what the socket received (``receive``), act on the events it returns, send
what its methods return. Transports (``aio.py``) only move bytes and keep time, so
the protocol is tested with two peers in memory (h11 / wsproto style).

Reconnect policy modelled on supabase-js: heartbeat every 25 s, a heartbeat with no
reply by the next beat means the connection is dead, rejoin backoff 1, 2, 5, 10 s.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from harness.phoenix.codec import VSN1, Frame, FrameError, decode, encode

__all__ = ["SUPABASE_JS_POLICY", "ChannelState", "Closed", "Message", "PhoenixProtocol", "ReconnectPolicy", "Reply"]


@dataclass(frozen=True)
class ReconnectPolicy:
    heartbeat_s: float = 25.0
    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    push_timeout_s: float = 10.0
    # how long one connection attempt may take: phoenix-js sets none (an attempt made during a partition
    # completes the moment the network returns); ours is long but bounded
    open_timeout_s: float = 120.0

    def backoff(self, tries: int) -> float:
        return self.backoff_s[min(max(tries, 1), len(self.backoff_s)) - 1]


SUPABASE_JS_POLICY = ReconnectPolicy()


class ChannelState:
    CLOSED = "closed"
    JOINING = "joining"
    JOINED = "joined"
    ERRORED = "errored"
    LEAVING = "leaving"


@dataclass(frozen=True)
class Reply:
    topic: str
    ref: str | None
    status: str
    response: dict[str, Any]
    kind: str  # "join", "leave", "heartbeat", "push"


@dataclass(frozen=True)
class Message:
    topic: str
    event: str
    payload: Any


@dataclass(frozen=True)
class Closed:
    topic: str
    reason: str


@dataclass
class _Channel:
    topic: str
    join_payload: dict[str, Any]
    state: str = ChannelState.CLOSED
    join_ref: str | None = None
    binding_ids: list[int] = field(default_factory=list)


class PhoenixProtocol:
    def __init__(self, vsn: str = VSN1) -> None:
        self.vsn = vsn
        self._refs = itertools.count(1)
        self.channels: dict[str, _Channel] = {}
        self._pending: dict[str, tuple[str, str]] = {}  # ref -> (topic, kind)
        self.pending_heartbeat: str | None = None

    def _ref(self) -> str:
        return str(next(self._refs))

    def _out(self, topic: str, event: str, payload: Any, ref: str, join_ref: str | None) -> str | bytes:
        return encode(Frame(topic=topic, event=event, payload=payload, ref=ref, join_ref=join_ref), self.vsn)

    # -- what to send ---------------------------------------------------------------------------
    def join(self, topic: str, payload: dict[str, Any]) -> str | bytes:
        ch = self.channels.get(topic) or _Channel(topic, payload)
        ch.join_payload = payload
        ch.state = ChannelState.JOINING
        ref = self._ref()
        ch.join_ref = ref
        self.channels[topic] = ch
        self._pending[ref] = (topic, "join")
        return self._out(topic, "phx_join", payload, ref, ref)

    def rejoin_all(self) -> list[str | bytes]:
        """After a reconnect: join every channel that was not deliberately closed, with its last payload."""
        return [self.join(t, ch.join_payload) for t, ch in list(self.channels.items())
                if ch.state != ChannelState.CLOSED]

    def leave(self, topic: str) -> str | bytes | None:
        ch = self.channels.get(topic)
        if ch is None:
            return None
        ch.state = ChannelState.LEAVING
        ref = self._ref()
        self._pending[ref] = (topic, "leave")
        return self._out(topic, "phx_leave", {}, ref, ch.join_ref)

    def push(self, topic: str, event: str, payload: Any) -> tuple[str, str | bytes]:
        ch = self.channels.get(topic)
        ref = self._ref()
        self._pending[ref] = (topic, "push")
        return ref, self._out(topic, event, payload, ref, ch.join_ref if ch else None)

    def heartbeat(self) -> str | bytes | None:
        """The next heartbeat, or None when the previous one was never answered: the connection is dead."""
        if self.pending_heartbeat is not None:
            return None
        ref = self._ref()
        self.pending_heartbeat = ref
        self._pending[ref] = ("phoenix", "heartbeat")
        return self._out("phoenix", "heartbeat", {}, ref, None)

    def connection_lost(self) -> None:
        """The socket went away: joined channels become errored (to be rejoined), replies are void."""
        self._pending.clear()
        self.pending_heartbeat = None
        for ch in self.channels.values():
            if ch.state in (ChannelState.JOINED, ChannelState.JOINING):
                ch.state = ChannelState.ERRORED

    # -- what came in ------------------------------------------------------------------------------
    def receive(self, data: str | bytes) -> list[Reply | Message | Closed]:
        try:
            f = decode(data, self.vsn)
        except FrameError:
            return []
        if f.event == "phx_reply":
            topic, kind = self._pending.pop(f.ref or "", (f.topic, "push"))
            payload = f.payload if isinstance(f.payload, dict) else {}
            status = str(payload.get("status", ""))
            response = payload.get("response") if isinstance(payload.get("response"), dict) else {}
            assert isinstance(response, dict)
            if kind == "heartbeat":
                self.pending_heartbeat = None
            ch = self.channels.get(topic)
            if ch is not None and kind == "join" and f.ref == ch.join_ref:
                if status == "ok":
                    ch.state = ChannelState.JOINED
                    ch.binding_ids = [int(b.get("id", 0)) for b in response.get("postgres_changes") or ()
                                      if isinstance(b, dict)]
                else:
                    ch.state = ChannelState.ERRORED
            elif ch is not None and kind == "leave":
                ch.state = ChannelState.CLOSED
            return [Reply(topic, f.ref, status, response, kind)]
        ch = self.channels.get(f.topic)
        if f.event in ("phx_close", "phx_error"):
            if ch is not None and (f.ref is None or f.ref == ch.join_ref):
                ch.state = ChannelState.CLOSED if f.event == "phx_close" else ChannelState.ERRORED
                return [Closed(f.topic, f.event)]
            return []
        return [Message(f.topic, f.event, f.payload)]
