"""The rest of PostgREST 12 (issue 17), through supabase-js and supabase-py against the stack: RPC shapes,
computed fields and relationships, Prefer and formats, aggregates, relationship detection, spread, error
shapes and ``db_schemas``. Each call is one method chain, run by both clients (``tests/js/rest_driver.mjs``
and ``run_py`` below); both must give the answer PostgREST gives.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import create_client

from stack.server import EmbeddedStack
from tests.stack.js_peer import JS_DIR

pytestmark = pytest.mark.js

SCHEMA = Path(__file__).resolve().parent / "postgrest_schema"


@pytest.fixture(scope="module")
def pg_stack() -> Iterator[EmbeddedStack]:
    with EmbeddedStack(migrations=[SCHEMA], db_schemas=("public", "personal")) as s:
        yield s


def run_js(stack: EmbeddedStack, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    payload = {"url": stack.api_url, "anon_key": stack.anon_key, "steps": steps}
    out = subprocess.run(["node", str(JS_DIR / "rest_driver.mjs")], input=json.dumps(payload), capture_output=True,
                         text=True, timeout=120, cwd=JS_DIR)
    assert out.returncode == 0, out.stderr[-2000:]
    return list(json.loads(out.stdout))


PY_NAMES = {"from": "table", "in": "in_", "not": "not_", "or": "or_", "is": "is_", "likeAnyOf": "like_any_of",
            "likeAllOf": "like_all_of", "maxAffected": "max_affected", "stripNulls": "strip_nulls",
            "maybeSingle": "maybe_single"}


OPTIONS_AT = {"select": 1, "order": 1, "insert": 1, "upsert": 1, "rpc": 2}  # where supabase-js takes its options


def run_py(stack: EmbeddedStack, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same chains through supabase-py: its method names, options as keyword arguments."""
    client = create_client(stack.api_url, stack.anon_key)
    out: list[dict[str, Any]] = []
    for s in steps:
        q: Any = client.schema(s["schema"]) if s.get("schema") else client
        try:
            for method, *args in s["chain"]:
                name = PY_NAMES.get(method, method)
                kw: dict[str, Any] = {}
                if len(args) > OPTIONS_AT.get(method, 99) and isinstance(args[-1], dict):
                    opts = args.pop()
                    if method == "order":
                        kw["desc"] = opts.get("ascending") is False
                    elif "count" in opts:
                        kw["count"] = opts["count"]
                    if "onConflict" in opts:
                        kw["on_conflict"] = opts["onConflict"]
                    if opts.get("defaultToNull") is False:
                        kw["default_to_null"] = False
                if method in ("likeAnyOf", "likeAllOf"):  # supabase-py takes the patterns as one string
                    args = [args[0], ",".join(args[1])]
                q = getattr(q, name)(*args, **kw)
            r = q.execute()
            out.append({"data": r.data, "error": None, "count": r.count})
        except APIError as e:
            out.append({"data": None, "error": {"code": e.code, "message": e.message, "details": e.details,
                                                "hint": e.hint}, "count": None})
    return out


# (chain, expected data, expected error code); js-only steps carry "js_only" (a builder supabase-py lacks)
STEPS: list[dict[str, Any]] = [
    # -- RPC
    {"chain": [["rpc", "get_status", {"name_param": "bob"}]], "data": "OFFLINE"},
    {"chain": [["rpc", "user_messages", {"user_row": {"username": "ann", "status": "ONLINE"}}], ["select", "id"],
               ["order", "id"]], "data": [{"id": 1}, {"id": 2}]},
    {"chain": [["rpc", "echo_json", {"": {"a": 1}}]], "data": {"a": 1}},
    {"chain": [["rpc", "echo_text", {"": "x"}]], "data": "x"},
    {"chain": [["rpc", "user_messages", {"user_row": {"username": "ann"}}], ["select", "id, channels(slug)"],
               ["eq", "id", 2]], "data": [{"id": 2, "channels": {"slug": "general"}}]},
    {"chain": [["rpc", "user_messages", {"user_row": {"username": "ann"}}, {"count": "exact"}], ["select", "id"]],
     "data": [{"id": 1}, {"id": 2}], "count": 2},
    {"chain": [["rpc", "get_status", {"name_param": "ann"}, {"count": "exact"}]], "data": "ONLINE", "count": 1},
    {"chain": [["rpc", "overloaded", {"a": 1}]], "error": "PGRST203"},
    {"chain": [["rpc", "no_such_fn", {"x": 1}]], "error": "PGRST202"},
    {"chain": [["rpc", "void_func"]], "js_only": True, "data": None, "status": 204},
    # -- computed fields and computed relationships
    {"chain": [["from", "users"], ["select", "username, name_length"], ["eq", "username", "ann"]],
     "data": [{"username": "ann", "name_length": 3}]},
    {"chain": [["from", "users"], ["select", "username"], ["eq", "name_length", 3], ["order", "username"]],
     "data": [{"username": "ann"}, {"username": "bob"}, {"username": "cyd"}]},
    {"chain": [["from", "channels"], ["select", "id, channel_messages(id)"], ["eq", "id", 1]],
     "data": [{"id": 1, "channel_messages": [{"id": 1}, {"id": 2}]}]},
    {"chain": [["from", "users"], ["select", "username, user_messages(count)"], ["eq", "username", "ann"]],
     "data": [{"username": "ann", "user_messages": [{"count": 2}]}]},
    # -- aggregates
    {"chain": [["from", "messages"], ["select", "count()"]], "data": [{"count": 3}]},
    {"chain": [["from", "messages"], ["select", "username, count()"], ["order", "username"]],
     "data": [{"username": "ann", "count": 2}, {"username": "bob", "count": 1}]},
    {"chain": [["from", "products"], ["select", "price.sum(), price.max(), id.min(), total:price.avg()::int"]],
     "data": [{"sum": 6.5, "max": 4.0, "min": 1, "total": 3}]},
    {"chain": [["from", "users"], ["select", "username, messages(count)"], ["eq", "username", "bob"]],
     "data": [{"username": "bob", "messages": [{"count": 1}]}]},
    {"chain": [["from", "products"], ["select", "nope.sum()"]], "error": "42703"},
    # -- relationships
    {"chain": [["from", "channels"], ["select", "slug, channel_details(details)"], ["eq", "id", 1]],
     "data": [{"slug": "general", "channel_details": {"details": "the main one"}}]},  # one-to-one: an object
    {"chain": [["from", "best_friends"], ["select", "users(*)"]], "error": "PGRST201"},
    {"chain": [["from", "best_friends"], ["select", "id, best_friends_first_user_fkey(username)"]],
     "data": [{"id": 1, "best_friends_first_user_fkey": {"username": "ann"}}]},
    {"chain": [["from", "best_friends"], ["select", "id, second:users!second_user(username)"]],
     "data": [{"id": 1, "second": {"username": "bob"}}]},
    {"chain": [["from", "messages"], ["select", "id, active_users(username)"], ["in", "id", [1, 3]], ["order", "id"]],
     "data": [{"id": 1, "active_users": {"username": "ann"}}, {"id": 3, "active_users": None}]},  # through a view
    {"chain": [["from", "products"], ["select", "name, categories(name)"], ["eq", "id", 1]],
     "data": [{"name": "bread", "categories": [{"name": "bakery"}, {"name": "breakfast"}]}]},  # many-to-many
    {"chain": [["from", "collections"], ["select", "id, collections!parent_id(id)"], ["eq", "id", 1]],
     "data": [{"id": 1, "collections": [{"id": 2}, {"id": 3}]}]},  # self-referencing
    {"chain": [["from", "users"], ["select", "username, messages!inner()"], ["eq", "messages.channel_id", 2]],
     "data": [{"username": "bob"}]},  # an empty embed filters and leaves no key
    {"chain": [["from", "messages"], ["select", "id, ...users(status)"], ["eq", "id", 3]],
     "data": [{"id": 3, "status": "OFFLINE"}]},  # spread
    {"chain": [["from", "messages"], ["select", "id, nothing(*)"]], "error": "PGRST200"},
    {"chain": [["from", "best_friends"], ["select", "users!first_user(*), users!second_user(*)"]], "error": "42712"},
    {"chain": [["from", "collections"], ["select", "*, parent_id(*)"], ["eq", "id", 2]],  # the embed takes the key
     "data": [{"id": 2, "parent_id": {"id": 1, "parent_id": None, "name": "root"}, "name": "child a"}]},
    # -- Prefer and formats
    {"chain": [["from", "users"], ["select", "username"], ["likeAnyOf", "username", ["a*", "b*"]], ["order", "username"]],
     "data": [{"username": "ann"}, {"username": "bob"}]},
    {"chain": [["from", "users"], ["select", "username"], ["likeAllOf", "username", ["*n*", "a*"]]],
     "data": [{"username": "ann"}]},
    {"chain": [["from", "users"], ["select", "username, bio"], ["in", "username", ["ann", "bob"]], ["order", "username"],
               ["stripNulls"]], "data": [{"username": "ann"}, {"username": "bob", "bio": "hi"}]},
    {"chain": [["from", "users"], ["select", "username, bio"], ["eq", "username", "bob"], ["csv"]],
     "data": "username,bio\nbob,hi"},
    {"chain": [["from", "cornercase"], ["insert", {"column whitespace": "foo", "id": 1}],
               ["select", '"column whitespace", id']], "js_only": True,
     "data": [{"column whitespace": "foo", "id": 1}], "status": 201},
    {"chain": [["from", "channels"], ["insert", [{"id": 20, "slug": "a"}, {"slug": "b"}], {"defaultToNull": False}],
               ["select", "id, slug"]], "js_only": True, "data": [{"id": 20, "slug": "a"}, {"id": 12, "slug": "b"}]},
    {"chain": [["from", "users"], ["upsert", {"username": "ann", "status": "ONLINE"}], ["select", "username"]],
     "js_only": True, "data": [{"username": "ann"}], "status": 200},  # only updated: 200, not 201
    {"chain": [["from", "users"], ["update", {"bio": "x"}], ["eq", "status", "ONLINE"], ["maxAffected", 1]],
     "error": "PGRST124"},
    {"chain": [["from", "users"], ["insert", {"username": "ghost"}], ["select", "username"], ["rollback"]],
     "js_only": True, "data": [{"username": "ghost"}], "status": 201},
    {"chain": [["from", "users"], ["select", "username, bio"], ["eq", "status", "ONLINE"], ["order", "username"]],
     "data": [{"username": "ann", "bio": None}, {"username": "cyd", "bio": None}]},  # neither write above stayed
    # -- error shapes
    {"chain": [["from", "users"], ["select", "username"], ["single"]], "error": "PGRST116"},
    # -- db_schemas
    {"schema": "personal", "chain": [["from", "notes"], ["select", "*"]], "data": [{"id": 1, "body": "private"}]},
    {"schema": "nope", "chain": [["from", "notes"], ["select", "*"]], "error": "PGRST106"},
]


def _check(i: int, who: str, step: dict[str, Any], got: dict[str, Any]) -> None:
    where = f"step {i} {step['chain']} via {who}: {got}"
    if "error" in step:
        assert got["error"] is not None and got["error"]["code"] == step["error"], where
        return
    assert got["error"] is None, where
    assert got["data"] == step["data"], where
    if "count" in step:
        assert got["count"] == step["count"], where
    if who == "js" and "status" in step:
        assert got["status"] == step["status"], where


def test_postgrest_behaviour_through_supabase_js(pg_stack: EmbeddedStack) -> None:
    for i, (step, got) in enumerate(zip(STEPS, run_js(pg_stack, STEPS), strict=True)):
        _check(i, "js", step, got)


def test_postgrest_behaviour_through_supabase_py(pg_stack: EmbeddedStack) -> None:
    steps = [s for s in STEPS if not s.get("js_only")]
    for i, (step, got) in enumerate(zip(steps, run_py(pg_stack, steps), strict=True)):
        _check(i, "py", step, got)


def test_error_bodies_as_postgrest_writes_them(pg_stack: EmbeddedStack) -> None:
    js = run_js(pg_stack, [
        {"chain": [["from", "best_friends"], ["select", "users(*)"]]},
        {"chain": [["rpc", "overloaded", {"a": 1}]]},
        {"chain": [["rpc", "get_status", {"wrong": 1}]]},
        {"chain": [["from", "users"], ["select", "username"], ["single"]]},
        {"chain": [["from", "messages"], ["select", "nothing(*)"]]},
        {"chain": [["from", "users"], ["select", "username, messages(sum)"]]},
    ])
    e201, e203, e202, e116, e200, e42703 = (r["error"] for r in js)
    assert e42703["message"] == "column messages_1.sum does not exist"  # PostgREST's alias for the embed
    assert e201["details"] == [
        {"cardinality": "many-to-one", "embedding": "best_friends with users",
         "relationship": "best_friends_first_user_fkey using best_friends(first_user) and users(username)"},
        {"cardinality": "many-to-one", "embedding": "best_friends with users",
         "relationship": "best_friends_second_user_fkey using best_friends(second_user) and users(username)"}]
    assert e201["hint"].startswith("Try changing 'users' to one of the following: 'users!best_friends_first_user_fkey'")
    assert e203["message"] == ("Could not choose the best candidate function between: public.overloaded(a => integer), "
                               "public.overloaded(a => text)")
    assert e202["message"] == "Could not find the function public.get_status(wrong) in the schema cache"
    assert e202["details"] == ("Searched for the function public.get_status with parameter wrong or with a single "
                               "unnamed json/jsonb parameter, but no matches were found in the schema cache.")
    assert e202["hint"] == "Perhaps you meant to call the function public.get_status(name_param)"
    assert (e116["message"], e116["details"]) == ("Cannot coerce the result to a single JSON object",
                                                  "The result contains 3 rows")
    assert e200["details"] == ("Searched for a foreign key relationship between 'messages' and 'nothing' in the "
                               "schema 'public', but no matches were found.")


def test_wire_details_supabase_clients_do_not_show(pg_stack: EmbeddedStack) -> None:
    """Statuses and headers: void RPC 204, upsert 201/200, Preference-Applied, CSV content type."""
    with httpx.Client(base_url=f"{pg_stack.api_url}/rest/v1", headers={"apikey": pg_stack.anon_key}) as c:
        assert c.post("/rpc/void_func", json={}).status_code == 204
        r = c.post("/users", json={"username": "dan"}, headers={"Prefer": "resolution=merge-duplicates,tx=rollback"})
        assert r.status_code == 201 and "tx=rollback" in r.headers["preference-applied"]
        assert c.get("/users", params={"username": "eq.dan"}).json() == []
        r = c.get("/users", params={"select": "username", "username": "eq.ann"}, headers={"Accept": "text/csv"})
        assert r.headers["content-type"].startswith("text/csv") and r.text == "username\nann"
        r = c.patch("/users", params={"status": "eq.ONLINE"}, json={"bio": "y"},
                    headers={"Prefer": "handling=strict, max-affected=x"})
        assert r.status_code == 400 and r.json()["code"] == "PGRST122"
        r = c.get("/users", params={"select": "username.nope()"})
        assert r.status_code == 400  # not an aggregate: a parse error, never a 500
        # explain(), served as db-plan-enabled allows (this schema's role setting)
        r = c.get("/users", headers={"Accept": 'application/vnd.pgrst.plan+json; for="application/json"; options=verbose;'})
        assert r.status_code == 200 and r.json()[0]["Plan"]["Node Type"] == "Aggregate"
        r = c.get("/users", headers={"Accept": 'application/vnd.pgrst.plan+text; for="application/json"'})
        assert r.status_code == 200 and r.text.startswith("Aggregate  (cost=")
        r = c.get("/users", headers={"Accept": "application/vnd.pgrst.plan+json; options=drop"})
        assert r.status_code == 406
