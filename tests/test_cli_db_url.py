"""``zora-harness stack up --db-url`` on databases other people use: another embedded stack's,
a blank one, one with Supabase roles it did not create; and a ``kill -9`` leaves nothing behind."""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from harness.phoenix.codec import VSN1
from stack import jwt
from stack.postgres import Cluster
from stack.realtime.slots import parse_slot_name, process_start
from stack.server import LOGIN_ROLES, EmbeddedStack
from tests.stack.rt_support import RawClient, ensure_rt_table, user_token, write, ws_url

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "harness.cli"]


@pytest.fixture(scope="module")
def first() -> Iterator[EmbeddedStack]:
    """The stack whose database the others are pointed at: its own cluster, logins by password."""
    with EmbeddedStack.from_fixtures(seed=True) as s:
        ensure_rt_table(s)
        yield s


def start_up(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``stack up ... --port 0 --env`` in the background, once it has printed its KEY="value" lines."""
    proc = subprocess.Popen([*CLI, "stack", "up", "--port", "0", "--env", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    values: dict[str, str] = {}
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while "JWT_SECRET" not in values and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.match(r'^([A-Z_]+)="(.*)"$', line.strip()):
            values[m.group(1)] = m.group(2)
    if "JWT_SECRET" not in values:
        proc.kill()
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"stack up did not come up (rc {proc.returncode}): {err[-800:]}")
    return proc, values


def stop_up(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def run_up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "stack", "up", "--port", "0", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def role_passwords(dsn: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(dsn) as c:
        return c.execute("select rolname, rolpassword from pg_authid where rolname = any(%s) order by rolname",
                         (list(LOGIN_ROLES),)).fetchall()


def catalog(dsn: str) -> dict[str, list[str]]:
    """What a start-up could have created: schemas, roles, publications, event triggers, slots, extensions."""
    queries = {"schemas": "select nspname from pg_namespace", "roles": "select rolname from pg_roles",
               "publications": "select pubname from pg_publication", "triggers": "select evtname from pg_event_trigger",
               "slots": "select slot_name from pg_replication_slots", "extensions": "select extname from pg_extension"}
    with psycopg.connect(dsn) as c:
        return {k: sorted(str(r[0]) for r in c.execute(q)) for k, q in queries.items()}


def slots_of(dsn: str, pid: int) -> list[tuple[str, bool]]:
    with psycopg.connect(dsn) as c:
        rows = c.execute("select slot_name, active from pg_replication_slots").fetchall()
    return [(n, a) for n, a in rows if (o := parse_slot_name(n)) is not None and o.pid == pid]


def sign_in(api_url: str, anon: str) -> httpx.Response:
    return httpx.post(f"{api_url}/auth/v1/token?grant_type=password", headers={"apikey": anon}, timeout=10,
                      json={"email": "alice@zora.test", "password": "zora-customer-pass"})


def token(secret: str, sub: str, role: str = "authenticated") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "role": role, "aud": "authenticated", "iat": now, "exp": now + 600}, secret)


async def one_change(url: str, tok: str, dsn: str, owner: str, other_tok: str | None = None) -> list[str]:
    """Subscribe (and, with ``other_tok``, a second subscriber RLS must keep the row from); write a row as
    ``owner``; return the notes each subscriber received."""
    topic = f"realtime:dburl-{uuid.uuid4().hex[:6]}"
    config = {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "rt_items"}]}
    clients = [await RawClient.connect(url)]
    await clients[0].join(topic, config, token=tok)
    if other_tok is not None:
        clients.append(await RawClient.connect(url))
        await clients[1].join(topic, config, token=other_tok)
    note = uuid.uuid4().hex
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("insert into rt_items (owner, note) values (%s, %s)", (owner, note))
    await clients[0].wait(lambda f: f.event == "postgres_changes", timeout=10)
    await asyncio.sleep(0.3)  # a frame the other subscriber must not get would arrive by now
    got = [",".join(f.payload["data"]["record"]["note"] for f in cl.changes()) for cl in clients]
    for cl in clients:
        await cl.close()
    assert got[0] == note
    return got


def test_stack_up_on_another_stacks_database_leaves_that_stack_working(first: EmbeddedStack) -> None:
    passwords = role_passwords(first.superuser_dsn)
    assert all(pw for _, pw in passwords)
    proc, v = start_up("--db-url", first.superuser_dsn)
    try:
        api, anon, secret = v["API_URL"], v["ANON_KEY"], v["JWT_SECRET"]
        assert secret != first.settings.jwt_secret  # type: ignore[union-attr]
        r = httpx.get(f"{api}/rest/v1/products?select=name", headers={"apikey": anon}, timeout=10)
        assert r.status_code == 200 and r.json(), r.text  # the first stack's seeded rows, through the second
        assert sign_in(api, anon).status_code == 200
        bad = token(secret, str(uuid.uuid4()), role="postgres")  # the assumed role still may not become postgres
        r = httpx.get(f"{api}/rest/v1/products", headers={"apikey": anon, "Authorization": f"Bearer {bad}"},
                      timeout=10)
        assert r.status_code in (400, 403), r.text
        owner, stranger = str(uuid.uuid4()), str(uuid.uuid4())
        url = f"ws://127.0.0.1:{api.rsplit(':', 1)[1]}/realtime/v1/websocket?apikey={anon}&vsn={VSN1}"
        got = asyncio.run(one_change(url, token(secret, owner), first.superuser_dsn, owner,
                                     other_tok=token(secret, stranger)))
        assert got[1] == ""  # RLS on rt_items: the stranger's subscription got nothing
        assert slots_of(first.superuser_dsn, proc.pid)
    finally:
        err = stop_up(proc)
    assert "Traceback" not in err
    assert secret not in err
    assert not slots_of(first.superuser_dsn, proc.pid)  # its slot went with it

    assert role_passwords(first.superuser_dsn) == passwords
    for role in LOGIN_ROLES:  # new logins with the first stack's passwords
        psycopg.connect(first.role_dsn(role), connect_timeout=5).close()
    r = httpx.get(f"{first.api_url}/rest/v1/products?select=name", headers={"apikey": first.anon_key}, timeout=10)
    assert r.status_code == 200 and r.json()
    assert sign_in(first.api_url, first.anon_key).status_code == 200
    owner = str(uuid.uuid4())
    asyncio.run(one_change(ws_url(first), user_token(first, owner), first.superuser_dsn, owner))


def test_blank_database_is_refused_without_init_db_and_nothing_is_created() -> None:
    with Cluster(password=secrets.token_urlsafe(12)) as blank:
        before = catalog(blank.dsn())
        r = run_up("--db-url", blank.dsn())
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert "no Supabase base" in r.stderr and "--init-db" in r.stderr
        assert blank.password not in r.stderr
        assert catalog(blank.dsn()) == before

        proc, v = start_up("--db-url", blank.dsn(), "--init-db")
        try:
            r2 = httpx.get(f"{v['API_URL']}/rest/v1/products?select=name", headers={"apikey": v["ANON_KEY"]},
                           timeout=10)
            assert r2.status_code == 200
            assert r2.json() == []  # no demo rows in someone else's database unless --seed
            assert "auth" in catalog(blank.dsn())["schemas"]
        finally:
            stop_up(proc)
        assert all(pw is None for _, pw in role_passwords(blank.dsn()))  # never logged in by password


def test_supabase_roles_the_base_did_not_create_are_refused_and_left_alone() -> None:
    with Cluster() as other:  # as `supabase start` leaves it: the roles and schemas, not our bookkeeping
        with psycopg.connect(other.dsn(), autocommit=True) as c:
            c.execute("create role anon nologin; create role authenticator login noinherit password 'theirs';"
                      " grant anon to authenticator; create schema auth")
        before, passwords = catalog(other.dsn()), role_passwords(other.dsn())
        for args in ([], ["--init-db"]):
            r = run_up("--db-url", other.dsn(), *args)
            assert r.returncode == 2, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
            assert "did not create" in r.stderr and "role authenticator" in r.stderr and "schema auth" in r.stderr
        assert catalog(other.dsn()) == before and role_passwords(other.dsn()) == passwords
        theirs = psycopg.conninfo.make_conninfo(other.dsn(), user="authenticator", password="theirs")
        psycopg.connect(theirs, connect_timeout=5).close()


def _children(pid: int, name: str) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        if ppid == pid and comm == name:
            found.append(int(stat.parent.name))
    return found


def _until(cond: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_kill_9_leaves_no_pg_recvlogical_and_the_next_start_drops_its_slot(first: EmbeddedStack) -> None:
    proc, _ = start_up("--db-url", first.superuser_dsn)
    try:
        assert _until(lambda: _children(proc.pid, "pg_recvlogical"), 10)
        recv = _children(proc.pid, "pg_recvlogical")
        assert _until(lambda: any(a for _, a in slots_of(first.superuser_dsn, proc.pid)), 10)
        [(slot, _)] = slots_of(first.superuser_dsn, proc.pid)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert _until(lambda: all(process_start(p) is None for p in recv), 10), "pg_recvlogical outlived its parent"
    assert _until(lambda: slots_of(first.superuser_dsn, proc.pid) == [(slot, False)], 10)  # left behind, idle

    nxt, _ = start_up("--db-url", first.superuser_dsn)
    try:
        assert slots_of(first.superuser_dsn, proc.pid) == []
    finally:
        err = stop_up(nxt)
    assert sum(f"dropped stale replication slot {slot}" in line for line in err.splitlines()) == 1
    assert write(first, "select 1") == [(1,)]
