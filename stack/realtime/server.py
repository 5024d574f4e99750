"""The realtime endpoint: websocket at ``/realtime/v1/websocket``, REST broadcast at
``/realtime/v1/api/broadcast``, and the change pipeline behind them.

``Realtime`` is created in the app's lifespan and lives on the app's event loop.
It offers ``restart()`` for fault tests: every socket is dropped, the WAL source
starts again at the current end of the WAL (Supabase Realtime does not replay
what happened while clients were away), and clients' own reconnect logic rejoins.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from harness.phoenix.codec import VSN1, VSN2
from stack import jwt
from stack.ddl import DdlWatch
from stack.realtime.changes import ChangeDispatcher
from stack.realtime.connection import Connection, broadcast_from_api
from stack.realtime.filters import Subscription
from stack.realtime.hub import Hub
from stack.realtime.wal import PollingSource, StreamingSource, drop_slot, ensure_slot
from stack.settings import StackSettings

__all__ = ["MODES", "Realtime", "routes"]

log = logging.getLogger("stack.realtime")
MODES = ("streaming", "hosted-polling")


class Realtime:
    def __init__(self, settings: StackSettings, mode: str = "streaming", slot: str | None = None,
                 ddl: DdlWatch | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"realtime mode must be one of {', '.join(MODES)}")
        self.settings = settings
        self.mode = mode
        self.slot = slot or f"zora_realtime_{os.getpid()}"
        self.hub = Hub()
        self.dispatcher = ChangeDispatcher(settings.realtime_dsn, self.hub, settings.fault_delivery_delay_ms)
        self.source: StreamingSource | PollingSource | None = None
        self._task: asyncio.Task[None] | None = None
        self._own_ddl = False
        self.accepting = False
        self.sockets: dict[Connection, WebSocket] = {}
        self._catalog: psycopg.AsyncConnection | None = None
        self._catalog_lock = asyncio.Lock()
        self.ddl = ddl
        if ddl is not None:
            ddl.listeners.append(lambda: self.dispatcher.forget_tables())

    async def start(self) -> None:
        await ensure_slot(self.settings.realtime_dsn, self.slot, fresh=True)
        cls = StreamingSource if self.mode == "streaming" else PollingSource
        self.source = cls(self.settings.realtime_dsn, self.slot, self.dispatcher.on_transaction)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self.source.run(), name="realtime-wal")
        if self.ddl is None:  # standalone use: watch DDL ourselves
            self.ddl = DdlWatch(self.settings.realtime_dsn)
            self.ddl.listeners.append(lambda: self.dispatcher.forget_tables())
            await self.ddl.start()
            self._own_ddl = True
        self.accepting = True

    async def stop(self, drop: bool = True) -> None:
        self.accepting = False
        for conn, ws in list(self.sockets.items()):
            conn.close()
            with contextlib.suppress(Exception):
                await ws.close(code=1012)  # service restart: clients reconnect by themselves
        self.sockets.clear()
        if self.source is not None:
            await self.source.stop()
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
        if self._catalog is not None:
            await self._catalog.close()
            self._catalog = None
        if drop:
            await drop_slot(self.settings.realtime_dsn, self.slot)

    async def restart(self, downtime: float = 0.0) -> None:
        await self.stop(drop=False)
        self.hub = Hub()
        self.dispatcher = ChangeDispatcher(self.settings.realtime_dsn, self.hub, self.settings.fault_delivery_delay_ms)
        if downtime > 0:
            await asyncio.sleep(downtime)
        await self.start()

    async def wait_streaming(self, timeout: float) -> bool:
        if self.source is None:
            return False
        try:
            await asyncio.wait_for(self.source.connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def validate_subscriptions(self, subs: list[Subscription]) -> str:
        """'' if every subscription names a published table and existing filter columns, else the error."""
        async with self._catalog_lock:
            try:
                if self._catalog is None or self._catalog.closed or self._catalog.broken:
                    self._catalog = await psycopg.AsyncConnection.connect(self.settings.realtime_dsn, autocommit=True)
                for s in subs:
                    cur = await self._catalog.execute(
                        "select pt.attnames from pg_publication_tables pt where pt.pubname = 'supabase_realtime'"
                        " and pt.schemaname like (case %(s)s when '*' then '%%' else %(s)s end)"
                        " and pt.tablename like (case %(t)s when '*' then '%%' else %(t)s end)",
                        {"s": s.schema, "t": s.table})
                    rows = await cur.fetchall()
                    if not rows:
                        return ("Unable to subscribe to changes with given parameters. Please check Realtime is "
                                f"enabled for the given connect parameters: [event: {s.event}, schema: {s.schema}, "
                                f"table: {s.table}, filters: {[f.column for f in s.filters]}]")
                    if s.table != "*":
                        cols = set(rows[0][0] or ())
                        missing = [f.column for f in s.filters if f.column not in cols]
                        if missing:
                            return f"Unable to subscribe to changes: column {missing[0]!r} does not exist"
            except psycopg.Error as e:
                self._catalog = None
                return f"Realtime was unable to connect to the project database: {str(e).strip()[:200]}"
        return ""

    def key_ok(self, key: str | None) -> bool:
        """A project API key, or any unexpired JWT signed with the project secret (as the realtime server
        itself accepts at connect; the key's role does not grant anything: each join's token decides)."""
        if not key:
            return False
        if any(hmac.compare_digest(key.encode(), k.encode())
               for k in (self.settings.anon_key, self.settings.service_role_key)):
            return True
        try:
            jwt.decode(key, self.settings.jwt_secret)
        except jwt.JWTError:
            return False
        return True


async def websocket_endpoint(ws: WebSocket) -> None:
    rt: Realtime = ws.app.state.realtime
    params = ws.query_params
    api_key = params.get("apikey") or ws.headers.get("apikey")
    if not rt.accepting:
        await ws.close(code=1013)  # try again later
        return
    if not rt.key_ok(api_key):
        await ws.close(code=1008)  # refused before the upgrade: HTTP 403
        return
    vsn = VSN2 if params.get("vsn") == VSN2 else VSN1
    await ws.accept()

    async def send(data: str | bytes) -> None:
        if isinstance(data, bytes):
            await ws.send_bytes(data)
        else:
            await ws.send_text(data)

    conn = Connection(rt, send, vsn, str(api_key))
    rt.sockets[conn] = ws
    writer = asyncio.get_running_loop().create_task(_write(conn, ws))
    try:
        while not conn.closed.is_set():
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            data: Any = msg.get("text") if msg.get("text") is not None else msg.get("bytes")
            if data is not None:
                await conn.receive(data)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        conn.close()
        rt.sockets.pop(conn, None)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(writer, 2)
        with contextlib.suppress(Exception):
            await ws.close()


async def _write(conn: Connection, ws: WebSocket) -> None:
    try:
        await conn.writer()
    except Exception:  # the socket went away under us
        conn.close()
        with contextlib.suppress(Exception):
            await ws.close(code=1011)


async def api_broadcast(request: Request) -> Response:
    rt: Realtime = request.app.state.realtime
    auth = request.headers.get("authorization", "")
    if auth:
        try:
            jwt.decode(auth.removeprefix("Bearer ").strip(), rt.settings.jwt_secret)
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
        if not (isinstance(m, dict) and isinstance(m.get("topic"), str) and isinstance(m.get("event"), str)):
            return JSONResponse({"errors": {"messages": ["each message needs a topic and an event"]}},
                                status_code=422)
    for m in messages:
        broadcast_from_api(rt.hub, m["topic"], m["event"], m.get("payload", {}))
    return Response(status_code=202)


def routes(settings: StackSettings) -> list[BaseRoute]:
    return [
        WebSocketRoute("/websocket", websocket_endpoint),
        Route("/api/broadcast", api_broadcast, methods=["POST"]),
    ]
