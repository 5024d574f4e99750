"""Test support for the realtime endpoint: a raw Phoenix client and a test table with RLS."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import websockets

from harness.phoenix.codec import VSN1, Frame, decode
from stack import jwt
from stack.server import EmbeddedStack

RT_TABLE_SQL = """
create table if not exists public.rt_items (
    id bigserial primary key,
    owner uuid,
    kind text not null default 'a',
    n numeric(10,2) default 2.50,
    note text,
    created_at timestamptz not null default now()
);
alter table public.rt_items enable row level security;
drop policy if exists rt_items_own on public.rt_items;
create policy rt_items_own on public.rt_items for select to authenticated using (owner = auth.uid());
grant select on public.rt_items to anon, authenticated, service_role;
do $$ begin
    if not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime' and tablename = 'rt_items')
    then alter publication supabase_realtime add table public.rt_items; end if;
end $$;
"""


def ensure_rt_table(stack: EmbeddedStack) -> None:
    with psycopg.connect(stack.superuser_dsn, autocommit=True) as c:
        c.execute(RT_TABLE_SQL)


def write(stack: EmbeddedStack, sql: str, params: Any = None) -> list[Any]:
    with psycopg.connect(stack.superuser_dsn, autocommit=True) as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if cur.description else []


def user_token(stack: EmbeddedStack, sub: str | None = None, exp_in: int = 3600, role: str = "authenticated") -> str:
    now = int(time.time())
    claims = {"sub": sub or str(uuid.uuid4()), "role": role, "aud": "authenticated", "iat": now, "exp": now + exp_in}
    return jwt.encode(claims, stack.settings.jwt_secret)  # type: ignore[union-attr]


def ws_url(stack: EmbeddedStack, key: str | None = None, vsn: str = VSN1) -> str:
    return f"ws://127.0.0.1:{stack.port}/realtime/v1/websocket?apikey={key or stack.anon_key}&vsn={vsn}"


class RawClient:
    """Speaks Phoenix frames by hand, to test the wire itself (vsn 1.0.0 JSON objects)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.refs = itertools.count(1)
        self.inbox: list[Frame] = []
        self._new = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str) -> RawClient:
        return cls(await websockets.connect(url, max_size=None, ping_interval=None))

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                self.inbox.append(decode(msg))
                self._new.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self._new.set()

    async def push(self, topic: str, event: str, payload: Any, join_ref: str | None = None) -> str:
        ref = str(next(self.refs))
        await self.ws.send(json.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref,
                                       "join_ref": join_ref}))
        return ref

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def wait(self, pred: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for f in self.inbox[seen:]:
                if pred(f):
                    return f
            seen = len(self.inbox)
            left = deadline - time.monotonic()
            if left <= 0 or self._reader.done():
                raise TimeoutError(f"no matching frame; got {[(f.event, f.payload) for f in self.inbox][-5:]}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def reply(self, ref: str, timeout: float = 5.0) -> Frame:
        return await self.wait(lambda f: f.event == "phx_reply" and f.ref == ref, timeout)

    async def join(self, topic: str, config: dict[str, Any] | None = None, token: str | None = None,
                   wait_system: bool = True) -> Frame:
        payload: dict[str, Any] = {"config": config or {}}
        if token:
            payload["access_token"] = token
        ref = await self.push(topic, "phx_join", payload, join_ref=None)
        rep = await self.reply(ref)
        if wait_system and rep.payload["status"] == "ok" and (config or {}).get("postgres_changes"):
            await self.wait(lambda f: f.event == "system" and f.topic == topic)
        return rep

    def changes(self, topic: str | None = None) -> list[Frame]:
        return [f for f in self.inbox if f.event == "postgres_changes" and (topic is None or f.topic == topic)]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


async def subscribed(channel: Any, system: list[dict[str, Any]], states: list[Any] | None = None) -> None:
    """SUBSCRIBED is not enough (realtime-js#525): wait for the server's postgres_changes 'ok'."""
    channel.on_system(lambda p: system.append(dict(p)))
    await channel.subscribe(lambda st, err: states.append((str(st), str(err))) if states is not None else None)
    await until(lambda: any(s.get("extension") == "postgres_changes" for s in system))
    assert system[-1]["status"] == "ok", system
