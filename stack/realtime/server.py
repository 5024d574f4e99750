"""The realtime endpoint: websocket at ``/realtime/v1/websocket``, REST broadcast at
``/realtime/v1/api/broadcast``, and the change pipeline behind them.

``Realtime`` is created in the app's lifespan and lives on the app's event loop; it is the
composition root of the realtime modules. It offers ``restart()`` for fault tests: every socket
is dropped, the WAL source starts again at the current end of the WAL (Supabase Realtime does not
replay what happened while clients were away), and clients' own reconnect logic rejoins.

Import graph of ``stack/realtime/`` (``a -> b``: a imports b; acyclic, no ``TYPE_CHECKING`` back edges)::

    server      -> transport, connection, changes, messages, authorization, policies, publication, tokens, hub,
                   slots, wal, codec
    authorization -> policies, stack.db
    messages    -> hub, wal
    transport   -> connection
    connection  -> hub, filters, policies, codec
    changes     -> hub, filters, wal, codec
    hub         -> filters, policies, codec  (and wal's ``Change``, for type checking only)
    policies    -> (standard library)
    publication -> filters
    tokens      -> stack.jwt, stack.db
    wal         -> stack.postgres
    filters     -> (standard library)
    codec        = harness.phoenix.codec -> (standard library)

``connection`` is the sans-IO protocol; ``transport`` moves its messages over a Starlette
websocket; ``tokens`` (its ``Auth``), ``publication`` (its ``Subscriptions``) and ``hub`` are what
it is given. See docs/protocol/realtime.md.

Its replication slot is named for this host and process (``stack.realtime.slots``); at start and at stop
it also drops our slots whose owning process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from harness.phoenix.codec import VSN1, VSN2
from stack import jwt
from stack.ddl import DdlWatch
from stack.realtime.authorization import Authorizer
from stack.realtime.changes import ChangeDispatcher
from stack.realtime.connection import Connection
from stack.realtime.hub import Hub
from stack.realtime.messages import MessageRelay
from stack.realtime.policies import PrivateError
from stack.realtime.publication import Publication
from stack.realtime.slots import drop_slot, drop_stale_slots, ensure_slot, slot_name
from stack.realtime.tokens import TokenVerifier
from stack.realtime.transport import WebSocketTransport
from stack.realtime.wal import PollingSource, StreamingSource, Transaction
from stack.settings import StackSettings

__all__ = ["MODES", "RESUMES", "Realtime", "routes"]

log = logging.getLogger("stack.realtime")
MODES = ("streaming", "hosted-polling")
RESUMES = ("supabase", "keep-everything")
RESUME_HOLD_S = 5.0  # keep-everything: how long a restarted server waits for its clients to rejoin
CLOSE_SERVICE_RESTART = 1012


class Realtime:
    def __init__(self, settings: StackSettings, mode: str = "streaming", slot: str | None = None,
                 ddl: DdlWatch | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"realtime mode must be one of {', '.join(MODES)}")
        if settings.realtime_resume not in RESUMES:
            raise ValueError(f"realtime resume must be one of {', '.join(RESUMES)}")
        self.keep_everything = settings.realtime_resume == "keep-everything"
        self._resume_lsn = 0  # keep-everything: the last commit delivered before a restart (not delivered twice)
        self._restarting = False
        self._held_bindings = 0  # postgres_changes bindings when the last restart began
        self.settings = settings
        self.mode = mode
        self.slot = slot or slot_name()
        self.hub = Hub()
        self.dispatcher = ChangeDispatcher(settings.realtime_dsn, self.hub, settings.fault_delivery_delay_ms)
        self.relay = MessageRelay(lambda: self.hub)
        self.authorizer = Authorizer(settings.realtime_dsn)
        self.source: StreamingSource | PollingSource | None = None
        self._task: asyncio.Task[None] | None = None
        self._own_ddl = False
        self.accepting = False
        self.sockets: dict[Connection, WebSocket] = {}
        self.tokens = TokenVerifier(settings.jwt_secret, (settings.anon_key, settings.service_role_key))
        self.publication = Publication(settings.realtime_dsn,
                                       lambda: self.source.connected if self.source is not None else None,
                                       prepare=lambda subs: self.dispatcher.prepare(subs))
        self.ddl = ddl
        self._swept = False
        self._refuse_until = 0.0
        if ddl is not None:
            ddl.listeners.append(lambda: self.dispatcher.forget_tables())

    async def start(self) -> None:
        await drop_stale_slots(self.settings.realtime_dsn, report_foreign=not self._swept)
        self._swept = True
        # supabase: a fresh slot at every start, so what was committed while realtime was down is never delivered
        # (the polling source's slot is temporary, as hosted Realtime's); keep-everything: a restart resumes from
        # the slot kept since the first start
        resume = self.keep_everything and self._restarting
        if self.mode == "streaming" or self.keep_everything:
            await ensure_slot(self.settings.realtime_dsn, self.slot, fresh=not resume)
        if self.mode == "streaming":
            self.source = StreamingSource(self.settings.realtime_dsn, self.slot, self._on_transaction)
            self.source.last_commit_lsn = self._resume_lsn if resume else 0
        else:
            self.source = PollingSource(self.settings.realtime_dsn, self.slot, self._on_transaction,
                                        temporary=not self.keep_everything)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run_source(self.source, self._held_bindings if resume else 0),
                                      name="realtime-wal")
        if self.ddl is None:  # standalone use: watch DDL ourselves
            self.ddl = DdlWatch(self.settings.realtime_dsn)
            self.ddl.listeners.append(lambda: self.dispatcher.forget_tables())
            await self.ddl.start()
            self._own_ddl = True
        self.accepting = True

    async def _run_source(self, source: StreamingSource | PollingSource, rejoins: int) -> None:
        """keep-everything after a restart: hold the stream until the postgres_changes bindings the server had
        are back (the clients rejoin by themselves), at most ``RESUME_HOLD_S``, so what was committed while it
        was down reaches them; then read from the kept slot."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + RESUME_HOLD_S
        while rejoins and self.hub.binding_count() < rejoins and loop.time() < give_up:
            await asyncio.sleep(0.02)
        await source.run()

    async def _on_transaction(self, tx: Transaction) -> None:
        """realtime.messages rows are broadcasts (``messages.py``); the rest are postgres_changes."""
        rest = self.relay.split(tx)
        if rest.changes:
            await self.dispatcher.on_transaction(rest)

    async def stop(self, drop: bool = True) -> None:
        self.accepting = False
        for conn, ws in list(self.sockets.items()):
            conn.close(CLOSE_SERVICE_RESTART)
            with contextlib.suppress(Exception):
                await ws.close(code=CLOSE_SERVICE_RESTART)  # clients reconnect by themselves
        self.sockets.clear()
        if self.source is not None:
            await self.source.stop()
            if isinstance(self.source, StreamingSource):
                self._resume_lsn = self.source.last_commit_lsn
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._own_ddl and self.ddl is not None:
            await self.ddl.stop()
            self.ddl = None
            self._own_ddl = False
        await self.dispatcher.close()
        await self.authorizer.close()
        await self.publication.close()
        if drop:
            if self.mode == "streaming" or self.keep_everything:
                await drop_slot(self.settings.realtime_dsn, self.slot)
            await drop_stale_slots(self.settings.realtime_dsn)

    async def restart(self, downtime: float = 0.0) -> None:
        self._held_bindings = self.hub.binding_count()
        await self.stop(drop=False)
        self.hub = Hub()
        self.dispatcher = ChangeDispatcher(self.settings.realtime_dsn, self.hub, self.settings.fault_delivery_delay_ms)
        if downtime > 0:
            await asyncio.sleep(downtime)
        self._restarting = True
        await self.start()
        if self.settings.fault_refuse_joins_s > 0:  # the negative control's broken server: joins refused for a while
            self._refuse_until = asyncio.get_running_loop().time() + self.settings.fault_refuse_joins_s

    def admission(self) -> str | None:
        """Why joins are refused right now (a fault knob), or None."""
        if self._refuse_until and asyncio.get_running_loop().time() < self._refuse_until:
            return "UnableToJoin: realtime is restarting (fault_refuse_joins_s)"
        return None


async def websocket_endpoint(ws: WebSocket) -> None:
    rt: Realtime = ws.app.state.realtime
    params = ws.query_params
    api_key = params.get("apikey") or ws.headers.get("apikey")
    if not rt.accepting:
        await ws.close(code=1013)  # try again later
        return
    if not rt.tokens.api_key_ok(api_key):
        await ws.close(code=1008)  # refused before the upgrade: HTTP 403
        return
    vsn = VSN2 if params.get("vsn") == VSN2 else VSN1
    await ws.accept()
    transport = WebSocketTransport(ws, rt.publication.wait_streaming)
    conn = Connection(hub=rt.hub, auth=rt.tokens, subscriptions=rt.publication, vsn=vsn, api_key=str(api_key),
                      admission=rt.admission, private=rt.authorizer,
                      wakeup=transport.wakeup)
    rt.sockets[conn] = ws
    try:
        await transport.run(conn)
    finally:
        rt.sockets.pop(conn, None)


async def api_broadcast(request: Request) -> Response:
    """Supabase's ``POST /api/broadcast``: public messages go to public channels; a message with
    ``"private": true`` goes to the private channels of its topic when the caller may send there (INSERT on
    realtime.messages under the caller's claims; the service role always may), and is dropped otherwise."""
    rt: Realtime = request.app.state.realtime
    auth = request.headers.get("authorization", "")
    token = auth.removeprefix("Bearer ").strip() if auth else (request.headers.get("apikey") or "")
    claims: dict[str, Any] = {}
    if token:
        try:
            claims = jwt.decode(token, rt.settings.jwt_secret)
        except jwt.JWTError as e:
            return JSONResponse({"message": e.reason}, status_code=401)
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"message": "body must be JSON"}, status_code=400)
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        return JSONResponse({"errors": {"messages": ["can't be blank"]}}, status_code=422)
    for m in messages:
        if not (isinstance(m, dict) and isinstance(m.get("topic"), str) and isinstance(m.get("event"), str)
                and isinstance(m.get("private", False), bool)):
            return JSONResponse({"errors": {"messages": ["each message needs a topic and an event (private: a"
                                                         " boolean)"]}}, status_code=422)
    allowed: dict[str, bool] = {}
    super_user = claims.get("role") == "service_role"
    for m in messages:
        private = m.get("private") is True
        if private and not super_user:
            topic = m["topic"].removeprefix("realtime:")
            if topic not in allowed:
                try:
                    allowed[topic] = bool(claims) and await rt.authorizer.write(topic, claims, "broadcast")
                except PrivateError as e:
                    log.info("broadcast policy of %s not evaluated: %s", topic[:64], e)
                    allowed[topic] = False
            if not allowed[topic]:
                continue  # as upstream: not sent, and the request still succeeds
        rt.hub.broadcast_from_api(m["topic"], m["event"], m.get("payload", {}), private=private)
    return Response(status_code=202)


def routes(settings: StackSettings) -> list[BaseRoute]:
    return [
        WebSocketRoute("/websocket", websocket_endpoint),
        Route("/api/broadcast", api_broadcast, methods=["POST"]),
    ]
