"""The same auth and REST calls through supabase-js (Node) and supabase-py give the same, expected results."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from typing import Any

import pytest
from postgrest.exceptions import APIError
from postgrest.types import ReturnMethod
from supabase import create_client
from supabase_auth.errors import AuthError

from stack.server import EmbeddedStack
from tests.stack.js_peer import JS_DIR

pytestmark = pytest.mark.js

VERA = "00000000-0000-4000-b000-000000000011"
ALICE = "00000000-0000-4000-a000-000000000021"
KALE, TOMATO = "00000000-0000-4000-c000-000000000101", "00000000-0000-4000-c000-000000000102"


def script(who: str) -> list[dict[str, Any]]:
    email = f"{who}-{uuid.uuid4().hex[:8]}@example.test"
    return [
        {"op": "signUp", "email": email, "password": "secret-123", "data": {"full_name": who}},
        {"op": "signIn", "email": "alice@zora.test", "password": "zora-customer-pass"},
        {"op": "getUser"},
        {"op": "refresh"},
        {"op": "updateUser", "data": {"nick": "al"}},
        {"op": "select", "table": "products", "columns": "name, price, vendor:vendors(shop_name)",
         "filters": [["eq", "vendor_id", VERA], ["order", "name"]]},
        {"op": "select", "table": "orders", "columns": "order_number, order_items(quantity, product:products(name))",
         "filters": [["order", "order_number"]]},
        {"op": "select", "table": "products", "columns": "name", "filters": [
            ["neq", "name", "Basil pot"], ["gt", "price", 2], ["gte", "price", 2.5], ["lt", "price", 5],
            ["lte", "price", 4.5], ["order", "name"]]},
        {"op": "select", "table": "products", "columns": "name", "filters": [
            ["like", "name", "%bread%"], ["ilike", "category", "BREAD"], ["order", "name"]]},
        {"op": "select", "table": "products", "columns": "name", "filters": [
            ["in", "name", ["Croissant", "Olives jar", "nope"]], ["is", "description", None], ["order", "name", "desc"]]},
        {"op": "select", "table": "products", "columns": "name", "filters": [
            ["not", "category", "in", "(veg,bread,pastry,herbs)"], ["order", "name"]]},
        {"op": "select", "table": "products", "columns": "name", "filters": [
            ["or", "price.lt.1.7,name.eq.Olives jar"], ["order", "price"]]},
        {"op": "select", "table": "products", "columns": "name", "count": "exact",
         "filters": [["eq", "vendor_id", VERA], ["order", "name"], ["range", 1, 2]]},
        {"op": "select", "table": "products", "columns": "name", "count": "exact", "head": True,
         "filters": [["eq", "vendor_id", VERA]]},
        {"op": "select", "table": "products", "columns": "name", "single": True, "filters": [["eq", "id", KALE]]},
        {"op": "select", "table": "products", "columns": "name", "maybeSingle": True,
         "filters": [["eq", "name", "no such thing"]]},
        {"op": "select", "table": "products", "columns": "name", "single": True, "filters": [["eq", "vendor_id", VERA]]},
        {"op": "upsert", "table": "cart_items", "onConflict": "user_id,product_id", "select": "quantity",
         "values": {"user_id": ALICE, "product_id": TOMATO, "quantity": 2}},
        {"op": "upsert", "table": "cart_items", "onConflict": "user_id,product_id", "select": "quantity",
         "values": {"user_id": ALICE, "product_id": TOMATO, "quantity": 5}},
        {"op": "update", "table": "cart_items", "values": {"quantity": 6}, "select": "quantity",
         "filters": [["eq", "product_id", TOMATO]]},
        {"op": "update", "table": "cart_items", "values": {"quantity": 7}, "filters": [["eq", "product_id", TOMATO]]},
        {"op": "delete", "table": "cart_items", "select": "quantity", "filters": [["eq", "product_id", TOMATO]]},
        {"op": "insert", "table": "reviews", "values": {"user_id": ALICE, "product_id": KALE, "rating": 4}},
        {"op": "insert", "table": "reviews", "select": "rating, comment",
         "values": {"user_id": ALICE, "product_id": KALE, "rating": 5, "comment": who}},
        {"op": "delete", "table": "reviews", "filters": [["eq", "user_id", ALICE]]},
        {"op": "rpc", "fn": "vendor_stats", "args": {"p_vendor_id": VERA}},
        {"op": "select", "table": "no_such_table"},
        {"op": "insert", "table": "orders", "values": {"user_id": "00000000-0000-4000-a000-000000000022",
                                                       "vendor_id": VERA, "total": 1}},
        {"op": "signOut"},
        {"op": "adminCreate", "email": "admin-" + email, "password": "secret-123"},
        {"op": "adminList", "email": "admin-" + email},
    ]


def run_js(stack: EmbeddedStack, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    payload = {"url": stack.api_url, "anon_key": stack.anon_key, "service_key": stack.service_role_key, "steps": steps}
    out = subprocess.run(["node", str(JS_DIR / "client_driver.mjs")], input=json.dumps(payload), capture_output=True,
                         text=True, timeout=120, cwd=JS_DIR)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def run_py(stack: EmbeddedStack, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    client = create_client(stack.api_url, stack.anon_key)
    admin = create_client(stack.api_url, stack.service_role_key)
    results: list[dict[str, Any]] = []

    def filters(q: Any, fs: list[list[Any]] | None) -> Any:
        for method, *args in fs or []:
            if method == "not":
                q = q.not_.filter(args[0], args[1], args[2])
            elif method == "or":
                q = q.or_(args[0])
            elif method == "in":
                q = q.in_(args[0], args[1])
            elif method == "is":
                q = q.is_(args[0], "null" if args[1] is None else args[1])
            elif method == "order":
                q = q.order(args[0], desc=len(args) > 1 and args[1] == "desc")
            elif method == "range":
                q = q.range(args[0], args[1])
            else:
                q = getattr(q, method)(*args)
        return q

    for s in steps:
        try:
            op = s["op"]
            if op == "signUp":
                r = client.auth.sign_up({"email": s["email"], "password": s["password"], "options": {"data": s["data"]}})
                res: dict[str, Any] = {"data": {"email": r.user.email, "user_metadata": r.user.user_metadata,  # type: ignore[union-attr]
                                                "has_session": r.session is not None}, "error": None}
            elif op == "signIn":
                r = client.auth.sign_in_with_password({"email": s["email"], "password": s["password"]})
                res = {"data": {"email": r.user.email, "role": r.user.role}, "error": None}  # type: ignore[union-attr]
            elif op == "getUser":
                res = {"data": {"email": client.auth.get_user().user.email}, "error": None}  # type: ignore[union-attr]
            elif op == "refresh":
                before = client.auth.get_session().refresh_token  # type: ignore[union-attr]
                r = client.auth.refresh_session()
                res = {"data": {"rotated": r.session.refresh_token != before}, "error": None}  # type: ignore[union-attr]
            elif op == "updateUser":
                u = client.auth.update_user({"data": s["data"]}).user
                res = {"data": {"user_metadata": u.user_metadata}, "error": None}
            elif op == "signOut":
                client.auth.sign_out()
                res = {"data": None, "error": None}
            elif op == "adminCreate":
                u = admin.auth.admin.create_user({"email": s["email"], "password": s["password"],
                                                  "email_confirm": True}).user
                res = {"data": {"email": u.email, "id": u.id}, "error": None}
            elif op == "adminList":
                users = admin.auth.admin.list_users(page=1, per_page=1000)
                res = {"data": {"includes": any(u.email == s["email"] for u in users)}, "error": None}
            elif op == "select":
                q = client.table(s["table"]).select(s.get("columns", "*"), count=s.get("count"), head=s.get("head"))
                q = filters(q, s.get("filters"))
                if s.get("single"):
                    q = q.single()
                if s.get("maybeSingle"):
                    q = q.maybe_single()
                resp = q.execute()
                res = {"data": None if resp is None else resp.data, "error": None,
                       "count": None if resp is None else resp.count}
                if s.get("head"):
                    res["data"] = None
            elif op in ("insert", "upsert"):
                ret = ReturnMethod.representation if s.get("select") else ReturnMethod.minimal
                t = client.table(s["table"])
                q = t.insert(s["values"], returning=ret) if op == "insert" else \
                    t.upsert(s["values"], on_conflict=s["onConflict"], returning=ret)
                res = {"data": _project(q.execute().data, s.get("select")), "error": None}
            elif op in ("update", "delete"):
                ret = ReturnMethod.representation if s.get("select") else ReturnMethod.minimal
                t = client.table(s["table"])
                q = t.update(s["values"], returning=ret) if op == "update" else t.delete(returning=ret)
                res = {"data": _project(filters(q, s.get("filters")).execute().data, s.get("select")), "error": None}
            elif op == "rpc":
                res = {"data": client.rpc(s["fn"], s["args"]).execute().data, "error": None}
            else:
                res = {"data": None, "error": {"code": "driver", "message": op}}
        except APIError as e:
            res = {"data": None, "error": {"code": e.code, "message": e.message}}
        except AuthError as e:
            res = {"data": None, "error": {"code": e.code, "message": e.message}}
        results.append(res)
    return results


def _project(rows: Any, select: str | None) -> Any:
    """supabase-py's write builders cannot narrow the returned columns; do what select would."""
    if not select:
        return None
    cols = [c.strip() for c in select.split(",")]
    return [{c: r[c] for c in cols} for r in rows]


UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def normal(v: Any, who: str) -> Any:
    if isinstance(v, dict):
        return {k: normal(x, who) for k, x in v.items() if k not in ("status",)}
    if isinstance(v, list):
        return [normal(x, who) for x in v]
    if isinstance(v, str):
        if UUID.match(v):
            return "<uuid>"
        return re.sub(rf"{who}-[0-9a-f]{{8}}@", "<who>@", v).replace(who, "<who>")
    if v == []:
        return None
    return v


def test_same_results_through_supabase_js_and_supabase_py(stack: EmbeddedStack) -> None:
    js = run_js(stack, script("js"))
    py = run_py(stack, script("py"))
    assert len(js) == len(py)
    steps = script("x")
    for i, (a, b, s) in enumerate(zip(js, py, steps, strict=True)):
        na, nb = normal(a, "js"), normal(b, "py")
        na.pop("count", None) if s.get("count") is None else None
        nb.pop("count", None) if s.get("count") is None else None
        if na.get("data") == [] or na.get("data") is None:
            na["data"] = None
        if nb.get("data") == [] or nb.get("data") is None:
            nb["data"] = None
        assert na == nb, f"step {i} {s['op']}: js {a} != py {b}"
    # and the values themselves are the expected ones, not merely equal
    r = {i: v for i, v in enumerate(py)}
    assert r[0]["data"]["user_metadata"] == {"full_name": "py"} and r[0]["data"]["has_session"]
    assert r[1]["data"] == {"email": "alice@zora.test", "role": "authenticated"}
    assert r[3]["data"] == {"rotated": True}
    assert r[5]["data"][0] == {"name": "Basil pot", "price": 1.8, "vendor": {"shop_name": "Vera's Veg"}}
    assert r[6]["data"][0]["order_number"] == "ZR-DEMO-0001" and len(r[6]["data"]) >= 1
    assert [p["name"] for p in r[7]["data"]] == ["Kale bunch", "Olives jar", "Rye bread", "Sourdough loaf", "Tomatoes 1kg"]
    assert [p["name"] for p in r[8]["data"]] == ["Rye bread"]
    assert [p["name"] for p in r[9]["data"]] == ["Olives jar", "Croissant"]
    assert [p["name"] for p in r[10]["data"]] == ["Aged cheddar 200g", "Olives jar"]
    assert [p["name"] for p in r[11]["data"]] == ["Croissant", "Olives jar"]
    assert r[12]["count"] == 3 and [p["name"] for p in r[12]["data"]] == ["Kale bunch", "Tomatoes 1kg"]
    assert r[13]["count"] == 3
    assert r[14]["data"] == {"name": "Kale bunch"} and r[15]["data"] is None
    assert r[16]["error"]["code"] == "PGRST116"
    assert r[17]["data"] == [{"quantity": 2}] and r[18]["data"] == [{"quantity": 5}]
    assert r[19]["data"] == [{"quantity": 6}] and r[21]["data"] == [{"quantity": 7}]
    assert r[23]["data"] == [{"rating": 5, "comment": "py"}]
    assert r[25]["data"][0]["orders_total"] >= 1
    assert r[26]["error"]["code"] == "PGRST205"
    assert r[27]["error"]["code"] == "42501"  # Alice cannot order for Bob
    assert r[30]["data"] == {"includes": True}
