"""One websocket client of the realtime server, as a sans-IO state machine.

Websocket messages in (``receive``), encoded frames out (``next_data`` / ``data_to_send``),
time in (``tick``, at ``next_deadline()``); no sockets, no tasks, no knowledge of the server.
It talks to three narrow interfaces it is given: ``Auth`` (token verification), ``Subscriptions``
(postgres_changes parameters against the publication; is the WAL streaming) and the ``Hub``
(plain data: the registry of channels, presence and fan-out), plus a clock and a ``wakeup``
callback that tells the transport there is output (frames also arrive from other connections'
broadcasts and from the change dispatcher, not only in answer to this client). The websocket
transport (``transport.py``) only moves bytes, keeps time and resolves the one async call.

Behaviour follows supabase/realtime's ``RealtimeChannel`` as the official clients see it: join
replies carrying the server's postgres_changes binding ids, then a ``system`` message once
changes really flow; ``access_token`` pushes swap the claims RLS is checked with; an expired
token closes the channel with a ``system`` error and ``phx_close``; unknown topics get
"unmatched topic". Frames wait in a per-connection queue, so a slow client never holds up
delivery to the others; a client too slow to drain it (``queue_limit`` frames waiting) is
disconnected, as Supabase does with slow consumers.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from harness.phoenix.codec import VSN1, Frame, FrameError, decode, encode
from stack.realtime.filters import FilterError, Subscription, parse_params
from stack.realtime.hub import Binding, Channel, Hub
from stack.realtime.policies import Policies, Private, PrivateError, replay_params

__all__ = ["CONFIRM_TOKEN_MAX_S", "LIVE_WAIT_S", "QUEUE_LIMIT", "Auth", "Connection", "Subscriptions"]

log = logging.getLogger("stack.realtime.connection")
QUEUE_LIMIT = 20_000
CONFIRM_TOKEN_MAX_S = 5 * 60  # the token is re-checked at its expiry, and at least this often
LIVE_WAIT_S = 10.0  # how long a join waits for the WAL stream before "unable to connect to the project database"
CLOSE_NORMAL = 1000


class Auth(Protocol):
    def verify(self, token: Any, now: float) -> tuple[dict[str, Any] | None, str]:
        """Claims and "", or None and the reason a join is refused (``InvalidJWTToken: ...``)."""
        ...


class Subscriptions(Protocol):
    async def validate(self, subs: list[Subscription]) -> str:
        """'' if the publication serves every subscription, else the system error's message."""
        ...

    def streaming(self) -> bool:
        """Changes committed from now on will be delivered (the WAL stream is up)."""
        ...


def _nothing() -> None:
    return None


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


class Connection:
    def __init__(self, *, hub: Hub, auth: Auth, subscriptions: Subscriptions, vsn: str = VSN1, api_key: str = "",
                 clock: Callable[[], float] = time.time, wakeup: Callable[[], None] = _nothing,
                 queue_limit: int = QUEUE_LIMIT, admission: Callable[[], str | None] = lambda: None,
                 private: Private | None = None) -> None:
        """``api_key``: the socket's key, a join's token when its payload has none; ``clock``: epoch seconds;
        ``admission``: why every join is refused right now, or None (a fault knob for negative controls);
        ``private``: the policies of realtime.messages and its replay (None: private joins are refused)."""
        self.hub = hub
        self.auth = auth
        self.subscriptions = subscriptions
        self.vsn = vsn
        self.api_key = api_key
        self.clock = clock
        self.wakeup = wakeup
        self.queue_limit = queue_limit
        self.admission = admission
        self.private = private
        self.channels: dict[str, Channel] = {}
        self.closed = False
        self.close_code = CLOSE_NORMAL
        self._outbox: deque[Frame] = deque()
        self._token_checks: dict[Channel, float] = {}  # channel -> when to re-check its token
        self._live_waits: dict[Channel, float] = {}  # channel -> when to give up waiting for the WAL stream

    # -- output -------------------------------------------------------------------------
    def send(self, frame: Frame) -> None:
        """Queue a frame for the client (the hub's ``Outbox``); a full queue disconnects the client."""
        if self.closed:
            return
        if len(self._outbox) >= self.queue_limit:
            log.warning("client too slow, %d frames queued: disconnecting", self.queue_limit)
            self.close()
            return
        self._outbox.append(frame)
        self.wakeup()

    def next_data(self) -> str | bytes | None:
        """The next websocket message to write, or None when nothing waits. Frames queued before
        ``close()`` are still handed out, so a closing channel's last words reach the client."""
        if not self._outbox:
            return None
        return encode(self._outbox.popleft(), self.vsn)

    def data_to_send(self) -> list[str | bytes]:
        return list(iter(self.next_data, None))

    @property
    def queued(self) -> int:
        return len(self._outbox)

    def close(self, code: int = CLOSE_NORMAL) -> None:
        """The socket is going away (or must): every channel leaves, presence leaves go to the others."""
        for ch in list(self.channels.values()):
            self._drop(ch)
        self.channels.clear()
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.wakeup()

    def _reply(self, req: Frame, status: str, response: dict[str, Any]) -> None:
        self.send(Frame(topic=req.topic, event="phx_reply", payload={"status": status, "response": response},
                        ref=req.ref, join_ref=req.join_ref))

    def _system(self, ch: Channel, extension: str, status: str, message: str) -> None:
        self.send(Frame(topic=ch.topic, event="system", join_ref=ch.join_ref, ref=None,
                        payload={"extension": extension, "status": status, "message": message,
                                 "channel": ch.sub_topic}))

    # -- input --------------------------------------------------------------------------
    async def receive(self, data: str | bytes) -> None:
        """One websocket message from the client. Async only for a join with postgres_changes, which
        awaits ``Subscriptions.validate``; the transport awaits it before feeding the next message."""
        if self.closed:
            return
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
        payload = _dict(frame.payload)
        if frame.event == "phx_leave":
            self._reply(frame, "ok", {})
            self._leave(ch)
        elif frame.event == "access_token":
            await self._access_token(ch, payload.get("access_token"))
        elif frame.event == "broadcast":
            if ch.private and not await self._may_write(ch, "broadcast"):
                return  # Supabase drops it without a word (no ack)
            self._broadcast(ch, frame, payload)
        elif frame.event == "presence":
            if ch.private and payload.get("event") == "track" and not await self._may_write(ch, "presence"):
                self._reply(frame, "error", {})
                return
            self._presence(ch, frame, payload)
        else:
            self._reply(frame, "error", {"reason": f"unknown event {frame.event[:64]!r}"})

    # -- time ---------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do (clock seconds), or None."""
        times = [*self._token_checks.values(), *self._live_waits.values()]
        return min(times) if times else None

    @property
    def awaiting_streaming(self) -> bool:
        """A join waits for the WAL stream: the transport should ``tick`` as soon as it comes up."""
        return bool(self._live_waits)

    def tick(self, now: float | None = None) -> None:
        """Time passed, or the WAL stream came up: announce live channels, re-check due tokens."""
        now = self.clock() if now is None else now
        if self._live_waits:
            live = self.subscriptions.streaming()
            for ch, give_up in list(self._live_waits.items()):
                if live:
                    del self._live_waits[ch]
                    self._system(ch, "postgres_changes", "ok", "Subscribed to PostgreSQL")
                elif now >= give_up:
                    del self._live_waits[ch]
                    self._system(ch, "postgres_changes", "error",
                                 "Realtime was unable to connect to the project database")
        for ch, due in list(self._token_checks.items()):
            if due <= now:
                self._confirm_token(ch, now)

    # -- tokens -------------------------------------------------------------------------
    def _schedule_token_check(self, ch: Channel, now: float) -> None:
        self._token_checks.pop(ch, None)
        exp = ch.claims.get("exp")
        if not isinstance(exp, int | float):
            return
        delay = min(CONFIRM_TOKEN_MAX_S, max(0.0, float(exp) - now))
        self._token_checks[ch] = now + delay + 0.001

    def _confirm_token(self, ch: Channel, now: float) -> None:
        self._token_checks.pop(ch, None)
        if ch.closed:
            return
        claims, reason = self.auth.verify(ch.token, now)
        if claims is None:
            self._shutdown(ch, reason.split(": ", 1)[-1])
        else:
            self._schedule_token_check(ch, now)

    def _shutdown(self, ch: Channel, message: str) -> None:
        """Supabase's shutdown_response: a system error, then the channel closes (phx_close)."""
        self._system(ch, "system", "error", message)
        self.send(Frame(topic=ch.topic, event="phx_close", payload={}, ref=ch.join_ref, join_ref=ch.join_ref))
        self._leave(ch)

    async def _access_token(self, ch: Channel, token: Any) -> None:
        if not isinstance(token, str) or not token or token == ch.token or token.startswith("sb_"):
            return
        now = self.clock()
        claims, reason = self.auth.verify(token, now)
        if claims is None:
            self._shutdown(ch, reason.split(": ", 1)[-1])
            return
        if ch.private and self.private is not None and ch.policies is not None:
            # the policies are evaluated again under the new claims; a read they no longer allow closes the channel
            before = ch.policies
            try:
                br, pr = await self.private.read(ch.sub_topic, claims, presence=before.presence_read is not None)
            except PrivateError as e:
                log.info("policies of %s not re-evaluated: %s", ch.sub_topic[:64], e)
                return
            if ch.closed:
                return
            if (before.broadcast_read and not br) or (before.presence_read and not pr):
                self._shutdown(ch, f"You no longer have permission to read from this Channel topic: {ch.sub_topic}")
                return
            ch.policies = Policies(broadcast_read=br, presence_read=pr if before.presence_read is not None else None)
        ch.set_claims(token, claims)
        self._schedule_token_check(ch, now)

    async def _may_write(self, ch: Channel, extension: str) -> bool:
        """A private channel's write, evaluated once (at the first send) under the channel's claims."""
        pol = ch.policies
        if pol is None or self.private is None:
            return False
        attr = "broadcast_write" if extension == "broadcast" else "presence_write"
        if getattr(pol, attr) is None:
            try:
                allowed = await self.private.write(ch.sub_topic, ch.claims, extension)
            except PrivateError as e:
                log.info("%s policy of %s not evaluated: %s", extension, ch.sub_topic[:64], e)
                return False
            setattr(pol, attr, allowed)
            if extension == "presence" and pol.presence_read is None:  # presence enabled by this track
                with contextlib.suppress(PrivateError):
                    pol.presence_read = (await self.private.read(ch.sub_topic, ch.claims, presence=True))[1]
        return bool(getattr(pol, attr))

    # -- join / leave -------------------------------------------------------------------
    async def _join(self, frame: Frame) -> None:
        topic = frame.topic
        if not topic.startswith("realtime:") or topic == "realtime:":
            self._reply(frame, "error", {"reason": "TopicNameRequired: You must provide a topic name"})
            return
        payload = _dict(frame.payload)
        config = _dict(payload.get("config"))
        private = config.get("private") is True
        if private and self.private is None:
            self._reply(frame, "error", {"reason": "PrivateChannelsUnsupported: this server has no realtime.messages"
                                                   " authorization"})
            return
        refused = self.admission()
        if refused:
            self._reply(frame, "error", {"reason": refused})
            return
        token = payload.get("access_token") or self.api_key
        claims, reason = self.auth.verify(token, self.clock())
        if claims is None:
            self._reply(frame, "error", {"reason": reason})
            return
        broadcast, presence = _dict(config.get("broadcast")), _dict(config.get("presence"))
        sub_topic = topic.removeprefix("realtime:")
        policies: Policies | None = None
        replay: tuple[int, int] | None = None
        if "replay" in broadcast:
            if not private:
                self._reply(frame, "error", {"reason": "UnableToReplayMessages: Replay is not allowed for public"
                                                       " channels"})
                return
            replay = replay_params(broadcast.get("replay"))
            if replay is None:
                self._reply(frame, "error", {"reason": "UnableToReplayMessages: Replay params are not valid"})
                return
        if private:
            assert self.private is not None
            presence_on = presence.get("enabled") is True
            try:
                br, pr = await self.private.read(sub_topic, claims, presence=presence_on)
            except PrivateError as e:
                if not self.closed:
                    self._reply(frame, "error", {"reason": f"UnableToSetPolicies: {e}"})
                return
            if self.closed:
                return
            if not (br or pr) or (replay is not None and not br):
                self._reply(frame, "error", {"reason": "Unauthorized: You do not have permissions to read from this"
                                                       f" Channel topic: {sub_topic}"})
                return
            policies = Policies(broadcast_read=br, presence_read=pr if presence_on else None)
        replayed: list[dict[str, Any]] = []
        if replay is not None:
            assert self.private is not None
            try:
                replayed = await self.private.replay(sub_topic, *replay)
            except PrivateError as e:
                if not self.closed:
                    log.info("replay of %s failed: %s", sub_topic[:64], e)
                    self._reply(frame, "error", {"reason": "UnableToReplayMessages: Realtime was unable to replay"
                                                           " messages"})
                return
            if self.closed:
                return
        existing = self.channels.get(topic)
        if existing is not None:  # Phoenix: a duplicate join closes the old channel first
            self.send(Frame(topic=topic, event="phx_close", payload={}, ref=existing.join_ref,
                            join_ref=existing.join_ref))
            self._leave(existing)
        ch = Channel(outbox=self, topic=topic, join_ref=frame.join_ref or frame.ref, claims=claims, token=str(token),
                     self_broadcast=broadcast.get("self") is True, ack_broadcast=broadcast.get("ack") is True,
                     presence_key=str(presence.get("key") or "") or str(uuid.uuid4()),
                     presence_enabled=presence.get("enabled") is True, private=private, policies=policies,
                     replayed={str(m["id"]) for m in replayed})
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
            error = await self.subscriptions.validate(subs)
            if self.closed:  # the socket went away while the publication was asked
                return
        reply_changes = []
        for i, p in enumerate(pg_params):
            b = Binding(channel=ch, sub=subs[i]) if not error else None
            if b is not None:
                ch.bindings.append(b)
            echo = {k: v for k, v in _dict(p).items() if k in ("event", "schema", "table", "filter", "select")}
            echo["id"] = b.id if b is not None else 0
            reply_changes.append(echo)
        self.channels[topic] = ch
        self.hub.add(ch)
        self._reply(frame, "ok", {"postgres_changes": reply_changes})
        now = self.clock()
        self._schedule_token_check(ch, now)
        if ch.presence_enabled and ch.receives("presence_state"):
            self.send(Frame(topic=topic, event="presence_state", payload=self.hub.presence_state(ch.room),
                            join_ref=ch.join_ref))
        for m in replayed:  # Supabase sends them once the join has been answered
            meta = {"replayed": True, "id": str(m["id"])}
            if m.get("binary") is not None:
                if self.vsn == VSN1:
                    continue  # a vsn 1.0.0 client cannot read a binary payload
                body: Any = m["binary"]
            else:
                body = m.get("payload")
            self.send(Frame(topic=topic, event="broadcast", join_ref=ch.join_ref,
                            payload={"type": "broadcast", "event": m.get("event"), "payload": body, "meta": meta}))
        if pg_params:
            if error:
                self._system(ch, "postgres_changes", "error", error)
            elif self.subscriptions.streaming():  # 'Subscribed to PostgreSQL' only once changes really flow
                self._system(ch, "postgres_changes", "ok", "Subscribed to PostgreSQL")
            else:  # ... which ``tick`` says when the WAL stream is up (or gives up at the deadline)
                self._live_waits[ch] = now + LIVE_WAIT_S

    def _drop(self, ch: Channel) -> None:
        self._token_checks.pop(ch, None)
        self._live_waits.pop(ch, None)
        leaves = self.hub.untrack(ch)
        self.hub.remove(ch)
        if leaves:
            self.hub.fan_out(ch.room, "presence_diff", {"joins": {}, "leaves": leaves})

    def _leave(self, ch: Channel) -> None:
        if self.channels.get(ch.topic) is ch:
            del self.channels[ch.topic]
        self._drop(ch)

    # -- broadcast and presence ---------------------------------------------------------
    def _broadcast(self, ch: Channel, frame: Frame, payload: dict[str, Any]) -> None:
        event = payload.get("event")
        if not isinstance(event, str):
            self._reply(frame, "error", {"reason": "broadcast needs an event name"})
            return
        out = {"type": "broadcast", "event": event, "payload": payload.get("payload", {})}
        self.hub.fan_out(ch.room, "broadcast", out, skip=None if ch.self_broadcast else ch)
        if ch.ack_broadcast:
            self._reply(frame, "ok", {})

    def _presence(self, ch: Channel, frame: Frame, payload: dict[str, Any]) -> None:
        event = payload.get("event")
        if event == "track":
            meta = payload.get("payload", {})
            if not isinstance(meta, dict):
                self._reply(frame, "error", {"reason": "Presence track payload must be a map"})
                return
            ch.presence_enabled = True
            joins, leaves = self.hub.track(ch, meta)
            self._reply(frame, "ok", {})
            self.hub.fan_out(ch.room, "presence_diff", {"joins": joins, "leaves": leaves})
        elif event == "untrack":
            leaves = self.hub.untrack(ch)
            self._reply(frame, "ok", {})
            if leaves:
                self.hub.fan_out(ch.room, "presence_diff", {"joins": {}, "leaves": leaves})
        else:
            self._reply(frame, "error", {"reason": "presence event must be track or untrack"})
