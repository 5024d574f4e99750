"""One websocket client: Phoenix channels, heartbeats, tokens, broadcast and presence.

Behaviour follows supabase/realtime's ``RealtimeChannel`` as the official clients
see it: join replies carrying the server's postgres_changes binding ids, then a
``system`` message once changes really flow; ``access_token`` pushes swap the
claims RLS is checked with; an expired token closes the channel with a
``system`` error and ``phx_close``; unknown topics get "unmatched topic".
Frames are queued per connection and written by one task, so a slow client
never holds up delivery to the others (a client too slow to drain its queue is
disconnected, as Supabase does with slow consumers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from harness.phoenix.codec import Frame, FrameError, decode, encode
from stack import jwt
from stack.db import API_ROLES
from stack.realtime.filters import FilterError, Subscription, parse_params
from stack.realtime.hub import Binding, Channel, Hub

if TYPE_CHECKING:
    from stack.realtime.server import Realtime

__all__ = ["Connection"]

log = logging.getLogger("stack.realtime.connection")
QUEUE_LIMIT = 20_000
CONFIRM_TOKEN_MAX_S = 5 * 60


class Connection:
    def __init__(self, rt: Realtime, send_text: Callable[[str | bytes], Awaitable[None]], vsn: str,
                 api_key: str) -> None:
        self.rt = rt
        self.hub: Hub = rt.hub
        self._send_raw = send_text
        self.vsn = vsn
        self.api_key = api_key
        self.channels: dict[str, Channel] = {}
        self._queue: asyncio.Queue[Frame | None] = asyncio.Queue(QUEUE_LIMIT)
        self._timers: dict[Channel, asyncio.TimerHandle] = {}
        self.closed = asyncio.Event()

    # -- output ---------------------------------------------------------------------
    def send(self, frame: Frame) -> None:
        if self.closed.is_set():
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("client too slow, %d frames queued: disconnecting", QUEUE_LIMIT)
            self.close()

    async def writer(self) -> None:
        while True:
            frame = await self._queue.get()
            if frame is None:
                return
            await self._send_raw(encode(frame, self.vsn))

    def close(self) -> None:
        for ch in list(self.channels.values()):
            self._drop(ch)
        self.channels.clear()
        if not self.closed.is_set():
            self.closed.set()
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)

    def _reply(self, req: Frame, status: str, response: dict[str, Any]) -> None:
        self.send(Frame(topic=req.topic, event="phx_reply", payload={"status": status, "response": response},
                        ref=req.ref, join_ref=req.join_ref))

    def _system(self, ch: Channel, extension: str, status: str, message: str) -> None:
        self.send(Frame(topic=ch.topic, event="system", join_ref=ch.join_ref, ref=None,
                        payload={"extension": extension, "status": status, "message": message,
                                 "channel": ch.sub_topic}))

    # -- input ----------------------------------------------------------------------
    async def receive(self, data: str | bytes) -> None:
        try:
            frame = decode(data, self.vsn)
        except FrameError as e:
            log.info("bad frame ignored: %s", e)
            return
        if frame.topic == "phoenix" and frame.event == "heartbeat":
            self._reply(frame, "ok", {})
            return
        if frame.event == "phx_join":
            await self._join(frame)
            return
        ch = self.channels.get(frame.topic)
        if ch is None or (frame.join_ref is not None and ch.join_ref is not None and frame.join_ref != ch.join_ref):
            self._reply(frame, "error", {"reason": "unmatched topic"})
            return
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        if frame.event == "phx_leave":
            self._reply(frame, "ok", {})
            self._leave(ch)
        elif frame.event == "access_token":
            self._access_token(ch, payload.get("access_token"))
        elif frame.event == "broadcast":
            self._broadcast(ch, frame, payload)
        elif frame.event == "presence":
            self._presence(ch, frame, payload)
        else:
            self._reply(frame, "error", {"reason": f"unknown event {frame.event[:64]!r}"})

    # -- tokens -----------------------------------------------------------------------
    def _verify(self, token: Any) -> tuple[dict[str, Any] | None, str]:
        """Claims, or None and the reason Supabase would give."""
        if not isinstance(token, str) or not token:
            return None, "MalformedJWT: The token provided is not a valid JWT"
        try:
            claims = jwt.decode(token.removeprefix("Bearer ").strip(), self.rt.settings.jwt_secret)
        except jwt.JWTError as e:
            if e.expired:
                with contextlib.suppress(Exception):
                    exp = int(jwt.decode(token, self.rt.settings.jwt_secret, verify_exp=False).get("exp", 0))
                    return None, f"InvalidJWTToken: Token has expired {max(0, int(time.time()) - exp)} seconds ago"
                return None, "InvalidJWTToken: Token has expired"
            if "signature is invalid" in e.reason:
                return None, "JwtSignatureError: Failed to validate JWT signature"
            return None, f"MalformedJWT: {e.reason}"
        if "role" not in claims or "exp" not in claims:
            return None, "InvalidJWTToken: Fields `role` and `exp` are required in JWT"
        if claims["role"] not in API_ROLES:
            return None, f"Unauthorized: role {str(claims['role'])[:64]!r} is not an API role"
        return claims, ""

    def _schedule_expiry(self, ch: Channel) -> None:
        old = self._timers.pop(ch, None)
        if old is not None:
            old.cancel()
        exp = ch.claims.get("exp")
        if not isinstance(exp, int | float):
            return
        delay = min(CONFIRM_TOKEN_MAX_S, max(0.0, float(exp) - time.time()))
        self._timers[ch] = asyncio.get_running_loop().call_later(delay + 0.001, self._confirm_token, ch)

    def _confirm_token(self, ch: Channel) -> None:
        self._timers.pop(ch, None)
        if ch.closed:
            return
        claims, reason = self._verify(ch.token)
        if claims is None:
            self._shutdown(ch, reason.split(": ", 1)[-1])
        else:
            self._schedule_expiry(ch)

    def _shutdown(self, ch: Channel, message: str) -> None:
        """Supabase's shutdown_response: a system error, then the channel closes (phx_close)."""
        self._system(ch, "system", "error", message)
        self.send(Frame(topic=ch.topic, event="phx_close", payload={}, ref=ch.join_ref, join_ref=ch.join_ref))
        self._leave(ch)

    def _access_token(self, ch: Channel, token: Any) -> None:
        if not isinstance(token, str) or not token or token == ch.token or token.startswith("sb_"):
            return
        claims, reason = self._verify(token)
        if claims is None:
            self._shutdown(ch, reason.split(": ", 1)[-1])
            return
        ch.set_claims(token, claims)
        self._schedule_expiry(ch)

    # -- join / leave -------------------------------------------------------------------
    async def _join(self, frame: Frame) -> None:
        topic = frame.topic
        if not topic.startswith("realtime:") or topic == "realtime:":
            self._reply(frame, "error", {"reason": "TopicNameRequired: You must provide a topic name"})
            return
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
        assert isinstance(config, dict)
        if config.get("private") is True:
            self._reply(frame, "error", {"reason": "PrivateChannelsUnsupported: this stack serves public channels"
                                                   " only (no realtime.messages authorization)"})
            return
        token = payload.get("access_token") or self.api_key
        claims, reason = self._verify(token)
        if claims is None:
            self._reply(frame, "error", {"reason": reason})
            return
        existing = self.channels.get(topic)
        if existing is not None:  # Phoenix: a duplicate join closes the old channel first
            self.send(Frame(topic=topic, event="phx_close", payload={}, ref=existing.join_ref,
                            join_ref=existing.join_ref))
            self._leave(existing)
        broadcast = config.get("broadcast") if isinstance(config.get("broadcast"), dict) else {}
        presence = config.get("presence") if isinstance(config.get("presence"), dict) else {}
        assert isinstance(broadcast, dict) and isinstance(presence, dict)
        ch = Channel(conn=self, topic=topic, join_ref=frame.join_ref or frame.ref, claims=claims, token=str(token),
                     self_broadcast=broadcast.get("self") is True, ack_broadcast=broadcast.get("ack") is True,
                     presence_key=str(presence.get("key") or "") or str(uuid.uuid4()),
                     presence_enabled=presence.get("enabled") is True)
        raw = config.get("postgres_changes")
        pg_params = raw if isinstance(raw, list) else []
        subs: list[Subscription] = []
        error = ""
        for p in pg_params:
            try:
                subs.append(parse_params(p))
            except FilterError as e:
                error = str(e)
                break
        if not error and subs:
            error = await self.rt.validate_subscriptions(subs)
        reply_changes = []
        for i, p in enumerate(pg_params):
            b = Binding(channel=ch, sub=subs[i]) if not error else None
            if b is not None:
                ch.bindings.append(b)
            echo = {k: v for k, v in (p.items() if isinstance(p, dict) else ()) if k in
                    ("event", "schema", "table", "filter", "select")}
            echo["id"] = b.id if b is not None else 0
            reply_changes.append(echo)
        self.channels[topic] = ch
        self.hub.add(ch)
        self._reply(frame, "ok", {"postgres_changes": reply_changes})
        self._schedule_expiry(ch)
        if ch.presence_enabled:
            self.send(Frame(topic=topic, event="presence_state", payload=self.hub.presence_state(topic),
                            join_ref=ch.join_ref))
        if pg_params:
            if error:
                self._system(ch, "postgres_changes", "error", error)
            else:
                asyncio.get_running_loop().create_task(self._announce_live(ch))

    async def _announce_live(self, ch: Channel) -> None:
        """The 'Subscribed to PostgreSQL' message goes out only once changes are streaming."""
        ok = await self.rt.wait_streaming(timeout=10.0)
        if ch.closed:
            return
        if ok:
            self._system(ch, "postgres_changes", "ok", "Subscribed to PostgreSQL")
        else:
            self._system(ch, "postgres_changes", "error", "Realtime was unable to connect to the project database")

    def _drop(self, ch: Channel) -> None:
        timer = self._timers.pop(ch, None)
        if timer is not None:
            timer.cancel()
        leaves = self.hub.untrack(ch)
        self.hub.remove(ch)
        if leaves:
            self._fan_out(ch.topic, "presence_diff", {"joins": {}, "leaves": leaves})

    def _leave(self, ch: Channel) -> None:
        if self.channels.get(ch.topic) is ch:
            del self.channels[ch.topic]
        self._drop(ch)

    # -- broadcast and presence -------------------------------------------------------------
    def _fan_out(self, topic: str, event: str, payload: dict[str, Any], skip: Channel | None = None) -> None:
        for other in list(self.hub.topics.get(topic, ())):
            if other is not skip:
                other.conn.send(Frame(topic=topic, event=event, payload=payload, join_ref=other.join_ref))

    def _broadcast(self, ch: Channel, frame: Frame, payload: dict[str, Any]) -> None:
        event = payload.get("event")
        if not isinstance(event, str):
            self._reply(frame, "error", {"reason": "broadcast needs an event name"})
            return
        out = {"type": "broadcast", "event": event, "payload": payload.get("payload", {})}
        self._fan_out(ch.topic, "broadcast", out, skip=None if ch.self_broadcast else ch)
        if ch.ack_broadcast:
            self._reply(frame, "ok", {})

    def _presence(self, ch: Channel, frame: Frame, payload: dict[str, Any]) -> None:
        event = payload.get("event")
        if event == "track":
            meta = payload.get("payload", {})
            if not isinstance(meta, dict):
                self._reply(frame, "error", {"reason": "Presence track payload must be a map"})
                return
            if not ch.presence_enabled:
                ch.presence_enabled = True
            joins, leaves = self.hub.track(ch, meta)
            self._reply(frame, "ok", {})
            self._fan_out(ch.topic, "presence_diff", {"joins": joins, "leaves": leaves})
        elif event == "untrack":
            leaves = self.hub.untrack(ch)
            self._reply(frame, "ok", {})
            if leaves:
                self._fan_out(ch.topic, "presence_diff", {"joins": {}, "leaves": leaves})
        else:
            self._reply(frame, "error", {"reason": "presence event must be track or untrack"})


def broadcast_from_api(hub: Hub, topic: str, event: str, payload: Any) -> int:
    """The REST broadcast endpoint's delivery: every channel on the topic gets it."""
    full = topic if topic.startswith("realtime:") else f"realtime:{topic}"
    n = 0
    for ch in list(hub.topics.get(full, ())):
        ch.conn.send(Frame(topic=full, event="broadcast",
                           payload={"type": "broadcast", "event": event, "payload": payload}, join_ref=ch.join_ref))
        n += 1
    return n
