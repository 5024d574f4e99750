"""UPDATE and DELETE payloads under RLS over a real socket, as Supabase Realtime (walrus) shapes them.

With REPLICA IDENTITY FULL and RLS on, an UPDATE's ``old_record`` carries every old column the subscriber's role
may select; only DELETE (which cannot be checked against RLS) is cut to the primary key. Column grants decide
what a role sees in ``record``, ``old_record`` and ``columns``. Over raw frames, then through the official clients
(supabase-js's ``payload.old``, supabase-py's ``old_record``), as an app comparing the old and new status reads it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from realtime.types import RealtimePostgresChangesListenEvent
from supabase import acreate_client

from stack.server import EmbeddedStack
from tests.stack.js_peer import JsPeer
from tests.stack.rt_support import RawClient, subscribed, until, user_token, write, ws_url

TABLE_SQL = """
create table if not exists public.rt_full (
    id bigserial primary key,
    owner uuid,
    status text not null default 'new',
    secret text
);
alter table public.rt_full replica identity full;
alter table public.rt_full enable row level security;
drop policy if exists rt_full_own on public.rt_full;
create policy rt_full_own on public.rt_full for select to authenticated using (owner = auth.uid());
revoke all on public.rt_full from anon, authenticated;
grant select (id, owner, status) on public.rt_full to authenticated;  -- not secret
grant select on public.rt_full to service_role;
do $$ begin
    if not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime' and tablename = 'rt_full')
    then alter publication supabase_realtime add table public.rt_full; end if;
end $$;
"""
ALL = {"postgres_changes": [{"event": "*", "schema": "public", "table": "rt_full"}]}


@pytest.fixture(scope="module", autouse=True)
def rt_full(stack: EmbeddedStack) -> None:
    write(stack, TABLE_SQL)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def by_type(c: RawClient, kind: str) -> dict[str, Any]:
    [f] = [f for f in c.changes() if f.payload["data"]["type"] == kind]
    data: dict[str, Any] = f.payload["data"]
    return data


def test_update_keeps_the_old_record_under_rls_delete_only_the_key(stack: EmbeddedStack) -> None:
    async def go() -> None:
        owner = str(uuid.uuid4())
        mine = await RawClient.connect(ws_url(stack))
        svc = await RawClient.connect(ws_url(stack))
        other = await RawClient.connect(ws_url(stack))
        await mine.join("realtime:full-mine", ALL, token=user_token(stack, owner))
        await svc.join("realtime:full-svc", ALL, token=stack.service_role_key)
        await other.join("realtime:full-other", ALL, token=user_token(stack))
        rid = write(stack, "insert into rt_full (owner, status, secret) values (%s, 'new', 's3cret') returning id",
                    (owner,))[0][0]
        write(stack, "update rt_full set status = 'paid' where id = %s", (rid,))
        write(stack, "delete from rt_full where id = %s", (rid,))
        await mine.wait(lambda f: len(mine.changes()) == 3)
        await svc.wait(lambda f: len(svc.changes()) == 3)

        ins, upd, dele = by_type(mine, "INSERT"), by_type(mine, "UPDATE"), by_type(mine, "DELETE")
        # the subscriber's role may not select `secret`: it is in no record and not among the columns
        assert ins["record"] == {"id": rid, "owner": owner, "status": "new"}
        assert [c["name"] for c in ins["columns"]] == ["id", "owner", "status"]
        assert upd["record"] == {"id": rid, "owner": owner, "status": "paid"}
        assert upd["old_record"] == {"id": rid, "owner": owner, "status": "new"}  # the old status, under RLS
        assert dele["old_record"] == {"id": rid} and "record" not in dele  # DELETE: only the primary key

        # service_role may select every column (and bypasses RLS); DELETE is still cut to the key, RLS being on
        s_upd, s_dele = by_type(svc, "UPDATE"), by_type(svc, "DELETE")
        assert s_upd["old_record"] == {"id": rid, "owner": owner, "status": "new", "secret": "s3cret"}
        assert s_upd["record"]["secret"] == "s3cret"
        assert [c["name"] for c in s_upd["columns"]] == ["id", "owner", "status", "secret"]
        assert s_dele["old_record"] == {"id": rid}

        # another user: RLS hides the INSERT and the UPDATE; the DELETE (not checkable) comes, key only
        await other.wait(lambda f: len(other.changes()) >= 1)
        await asyncio.sleep(0.3)
        assert [f.payload["data"]["type"] for f in other.changes()] == ["DELETE"]
        assert other.changes()[0].payload["data"]["old_record"] == {"id": rid}
        for c in (mine, svc, other):
            await c.close()
    run(go())


def test_a_role_without_select_on_the_key_gets_nothing(stack: EmbeddedStack) -> None:
    async def go() -> None:
        anon = await RawClient.connect(ws_url(stack))  # anon: no grant at all on rt_full
        await anon.join("realtime:full-anon", ALL)
        rid = write(stack, "insert into rt_full (owner) values (null) returning id")[0][0]
        write(stack, "delete from rt_full where id = %s", (rid,))
        probe = await RawClient.connect(ws_url(stack))
        await probe.join("realtime:full-probe", ALL, token=stack.service_role_key)
        mark = write(stack, "insert into rt_full (owner) values (null) returning id")[0][0]
        await probe.wait(lambda f: any(f.payload["data"]["record"]["id"] == mark for f in probe.changes()
                                       if f.payload["data"]["type"] == "INSERT"))
        await asyncio.sleep(0.2)
        assert anon.changes() == []
        for c in (anon, probe):
            await c.close()
    run(go())


def _update_and_delete(stack: EmbeddedStack, owner: str) -> int:
    rid: int = write(stack, "insert into rt_full (owner, status, secret) values (%s, 'new', 's3cret') returning id",
                     (owner,))[0][0]
    write(stack, "update rt_full set status = 'paid' where id = %s", (rid,))
    write(stack, "delete from rt_full where id = %s", (rid,))
    return rid


@pytest.mark.js
def test_supabase_js_sees_the_old_status_in_payload_old(stack: EmbeddedStack) -> None:
    """An app comparing ``payload.old.status`` with ``payload.new.status`` (supabase-js, unchanged)."""
    owner = str(uuid.uuid4())
    js = JsPeer(stack.api_url, stack.anon_key)
    try:
        js.send(op="setAuth", token=user_token(stack, owner))
        js.wait(lambda e: e.get("op") == "setAuth")
        js.send(op="channel", name="full", topic="js-full", pg=[{"event": "*", "schema": "public", "table": "rt_full"}])
        js.wait(lambda e: e["ev"] == "system" and e["name"] == "full"
                and e["payload"].get("extension") == "postgres_changes")
        rid = _update_and_delete(stack, owner)
        js.wait(lambda e: len(js.of("change", "full")) >= 3)
        ins, upd, dele = (e["payload"] for e in js.of("change", "full"))
        assert [p["eventType"] for p in (ins, upd, dele)] == ["INSERT", "UPDATE", "DELETE"]
        assert upd["old"] == {"id": rid, "owner": owner, "status": "new"} and upd["new"]["status"] == "paid"
        assert "secret" not in upd["old"] and "secret" not in upd["new"]  # a column the role may not select
        assert dele["old"] == {"id": rid} and dele["new"] == {}
    finally:
        js.close()


def test_supabase_py_sees_the_old_status_in_old_record(stack: EmbeddedStack) -> None:
    async def go() -> None:
        owner = str(uuid.uuid4())
        client = await acreate_client(stack.api_url, stack.anon_key)
        await client.realtime.set_auth(user_token(stack, owner))
        got: list[dict[str, Any]] = []
        system: list[dict[str, Any]] = []
        ch = client.channel("py-full").on_postgres_changes(RealtimePostgresChangesListenEvent.All,
                                                           lambda p: got.append(dict(p)), table="rt_full",
                                                           schema="public")
        await subscribed(ch, system)
        rid = _update_and_delete(stack, owner)
        await until(lambda: len(got) >= 3, 20)
        upd = next(p["data"] for p in got if p["data"]["type"] == "UPDATE")
        dele = next(p["data"] for p in got if p["data"]["type"] == "DELETE")
        assert upd["old_record"] == {"id": rid, "owner": owner, "status": "new"}
        assert dele["old_record"] == {"id": rid} and "record" not in dele
        await client.realtime.close()
    run(go())
