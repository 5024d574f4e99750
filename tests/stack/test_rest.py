"""REST through supabase-py unchanged and on the wire: reads, embedding, filters, ranges, writes, rpc."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
from postgrest.exceptions import APIError
from postgrest.types import JSON, CountMethod
from supabase import Client, create_client

from stack.server import EmbeddedStack
from tests.zora_support import make_product, make_user, make_vendor, sql, token


def client(stack: EmbeddedStack, uid: str | None = None, role: str = "authenticated") -> Client:
    c = create_client(stack.api_url, stack.anon_key)
    if role == "service_role":
        c.postgrest.auth(stack.service_role_key)
    elif uid:
        c.postgrest.auth(token(stack, uid, role))
    return c


def as_rows(data: list[JSON]) -> list[dict[str, Any]]:
    """A response's rows as objects: postgrest types ``data`` as any JSON value, a table's rows are objects."""
    return cast("list[dict[str, Any]]", data)


def rest(stack: EmbeddedStack, method: str, path: str, tok: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"apikey": stack.anon_key, **kw.pop("headers", {})}
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    return httpx.request(method, f"{stack.api_url}/rest/v1{path}", headers=headers, timeout=10, **kw)


@pytest.fixture
def shop(stack: EmbeddedStack) -> dict[str, str]:
    d = {"c1": make_user(stack), "c2": make_user(stack), "admin": make_user(stack, "admin")}
    d["v1_user"], d["v1"] = make_vendor(stack)
    d["v2_user"], d["v2"] = make_vendor(stack)
    d["p1"] = make_product(stack, d["v1"], price="2.50")
    d["p2"] = make_product(stack, d["v1"], price="7.00")
    d["p3"] = make_product(stack, d["v2"], price="1.25")
    c1 = client(stack, d["c1"])
    o = c1.table("orders").insert({"user_id": d["c1"], "vendor_id": d["v1"], "total": 12, "notes": "first"}).execute()
    d["o1"] = as_rows(o.data)[0]["id"]
    c1.table("order_items").insert([{"order_id": d["o1"], "product_id": d["p1"], "quantity": 2, "unit_price": 2.5},
                                    {"order_id": d["o1"], "product_id": d["p2"], "quantity": 1, "unit_price": 7}]).execute()
    o2 = client(stack, d["c2"]).table("orders").insert({"user_id": d["c2"], "vendor_id": d["v2"], "total": 3}).execute()
    d["o2"] = as_rows(o2.data)[0]["id"]
    return d


def test_embedding_both_ways_and_aliases(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    c = client(stack, shop["c1"])
    r = c.table("orders").select("id, total, shop:vendors(shop_name), order_items(quantity, product:products(name))") \
        .eq("id", shop["o1"]).execute()
    [o] = as_rows(r.data)
    assert o["total"] == 12 and o["shop"]["shop_name"].startswith("Shop ")
    assert sorted(i["quantity"] for i in o["order_items"]) == [1, 2]
    assert all(i["product"]["name"] == "Thing" for i in o["order_items"])
    # embedded filters narrow the embedded rows, not the parents; the fk-column form and !inner
    r = c.table("orders").select("id, order_items(quantity)").eq("order_items.quantity", 2).eq("id", shop["o1"]).execute()
    assert [i["quantity"] for i in as_rows(r.data)[0]["order_items"]] == [2]
    raw = rest(stack, "GET", f"/orders?select=id,vendor:vendor_id(shop_name)&id=eq.{shop['o1']}", token(stack, shop["c1"]))
    assert raw.status_code == 200 and raw.json()[0]["vendor"]["shop_name"].startswith("Shop ")
    raw = rest(stack, "GET", "/orders?select=id,order_items!inner(quantity)&order_items.quantity=eq.99",
               token(stack, shop["c1"]))
    assert raw.status_code == 200 and raw.json() == []
    raw = rest(stack, "GET", "/orders?select=id,nope(*)", token(stack, shop["c1"]))
    assert raw.status_code == 400 and raw.json()["code"] == "PGRST200"


def test_filters(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    c = client(stack, shop["c1"])
    t = c.table("products").select("price").eq("vendor_id", shop["v1"])

    def prices(q: Any) -> list[float]:
        return sorted(r["price"] for r in q.execute().data)

    assert prices(t) == [2.5, 7.0]
    base = lambda: c.table("products").select("price").eq("vendor_id", shop["v1"])  # noqa: E731
    assert prices(base().neq("price", 2.5)) == [7.0]
    assert prices(base().gt("price", 2.5)) == [7.0] and prices(base().gte("price", 2.5)) == [2.5, 7.0]
    assert prices(base().lt("price", 7)) == [2.5] and prices(base().lte("price", 7)) == [2.5, 7.0]
    assert prices(base().like("name", "Th%")) == [2.5, 7.0] and prices(base().ilike("name", "th*")) == [2.5, 7.0]
    assert prices(base().is_("description", "null")) == [2.5, 7.0]
    assert prices(base().in_("price", [7, 99])) == [7.0]
    assert prices(base().not_.eq("price", 7)) == [2.5]
    assert prices(base().or_("price.eq.2.5,and(price.gt.6,price.lt.8)")) == [2.5, 7.0]
    assert prices(base().or_("price.gt.100,not.and(price.gte.2,price.lte.3)")) == [7.0]


def test_order_limit_range_count_and_206(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    c = client(stack, shop["c1"])
    r = c.table("products").select("price", count=CountMethod.exact).eq("vendor_id", shop["v1"]).order("price", desc=True) \
        .range(0, 0).execute()
    assert r.data == [{"price": 7.0}] and r.count == 2
    raw = rest(stack, "GET", f"/products?select=price&vendor_id=eq.{shop['v1']}&order=price.asc",
               headers={"Range": "1-1", "Prefer": "count=exact"})
    assert raw.status_code == 206 and raw.headers["content-range"] == "1-1/2" and raw.json() == [{"price": 7.0}]
    assert "count=exact" in raw.headers["preference-applied"]
    raw = rest(stack, "GET", f"/products?select=price&vendor_id=eq.{shop['v1']}&limit=1&offset=1&order=price")
    assert raw.status_code == 200 and raw.json() == [{"price": 7.0}] and raw.headers["content-range"] == "1-1/*"
    raw = rest(stack, "GET", f"/products?vendor_id=eq.{shop['v1']}&offset=5", headers={"Prefer": "count=exact"})
    assert raw.status_code == 416 and raw.json()["code"] == "PGRST103"
    head = rest(stack, "HEAD", f"/products?vendor_id=eq.{shop['v1']}", headers={"Prefer": "count=exact"})
    assert head.status_code == 200 and head.headers["content-range"] == "0-1/2" and head.content == b""
    r = c.table("products").select("*", count=CountMethod.exact, head=True).eq("vendor_id", shop["v1"]).execute()
    assert r.count == 2


def test_single_and_maybe_single(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    c = client(stack, shop["c1"])
    assert c.table("products").select("price").eq("id", shop["p1"]).single().execute().data == {"price": 2.5}
    with pytest.raises(APIError) as e:
        c.table("products").select("price").eq("vendor_id", shop["v1"]).single().execute()
    assert e.value.code == "PGRST116"
    assert c.table("products").select("price").eq("id", shop["c1"]).maybe_single().execute() is None
    raw = rest(stack, "GET", f"/products?id=eq.{shop['p1']}", headers={"Accept": "application/vnd.pgrst.object+json"})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/vnd.pgrst.object+json")
    none = rest(stack, "GET", "/products?id=eq.00000000-0000-0000-0000-000000000000",
                headers={"Accept": "application/vnd.pgrst.object+json"})
    assert none.status_code == 406 and none.json()["details"] == "The result contains 0 rows"


def test_writes_with_and_without_returning(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    tok = token(stack, shop["c1"])
    minimal = rest(stack, "POST", "/cart_items", tok, json={"user_id": shop["c1"], "product_id": shop["p1"]},
                   headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    dup = rest(stack, "POST", "/cart_items", tok, json={"user_id": shop["c1"], "product_id": shop["p1"]})
    assert dup.status_code == 409 and dup.json()["code"] == "23505"
    c = client(stack, shop["c1"])
    up = c.table("cart_items").upsert({"user_id": shop["c1"], "product_id": shop["p1"], "quantity": 4},
                                      on_conflict="user_id,product_id").execute()
    assert as_rows(up.data)[0]["quantity"] == 4
    ign = rest(stack, "POST", "/cart_items?on_conflict=user_id,product_id", tok,
               json={"user_id": shop["c1"], "product_id": shop["p1"], "quantity": 9},
               headers={"Prefer": "resolution=ignore-duplicates,return=representation"})
    assert ign.status_code == 201 and ign.json() == []
    upd = c.table("cart_items").update({"quantity": 6}).eq("product_id", shop["p1"]).execute()
    assert [r["quantity"] for r in as_rows(upd.data)] == [6]
    silent = rest(stack, "PATCH", f"/cart_items?product_id=eq.{shop['p1']}", tok, json={"quantity": 7})
    assert silent.status_code == 204
    gone = c.table("cart_items").delete().eq("product_id", shop["p1"]).execute()
    assert [r["quantity"] for r in as_rows(gone.data)] == [7]
    assert sql(stack, "select count(*) from cart_items where user_id = %s", (shop["c1"],)) == [(0,)]
    rows: list[dict[str, object]] = [{"user_id": shop["c1"], "product_id": shop["p1"], "quantity": 3},
                                     {"user_id": shop["c1"], "product_id": shop["p2"]}]
    with pytest.raises(APIError) as e:  # a key missing from one object is NULL by default, as in PostgREST
        c.table("cart_items").insert(rows).execute()
    assert e.value.code == "23502"
    bulk = c.table("cart_items").insert(rows, default_to_null=False).execute()  # Prefer: missing=default
    assert sorted(r["quantity"] for r in as_rows(bulk.data)) == [1, 3]
    hdr = rest(stack, "POST", "/reviews", tok, json={"user_id": shop["c1"], "product_id": shop["p1"], "rating": 5},
               headers={"Prefer": "return=headers-only"})
    assert hdr.status_code == 201 and hdr.headers["location"].startswith("/reviews?id=eq.")


def test_rpc_post_and_get(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    c = client(stack, shop["v1_user"])
    r = c.rpc("vendor_stats", {"p_vendor_id": shop["v1"]}).execute()
    assert r.data == [{"orders_total": 1, "orders_pending": 1, "revenue": 12}]
    g = rest(stack, "GET", f"/rpc/vendor_stats?p_vendor_id={shop['v1']}", token(stack, shop["v1_user"]))
    assert g.status_code == 200 and g.json()[0]["orders_total"] == 1
    other = client(stack, shop["c2"]).rpc("vendor_stats", {"p_vendor_id": shop["v1"]}).execute()
    assert other.data == [{"orders_total": 0, "orders_pending": 0, "revenue": 0}]  # RLS applies inside
    scalar = client(stack, shop["admin"]).rpc("is_admin", {}).execute()
    assert scalar.data is True
    missing = rest(stack, "POST", "/rpc/no_such_fn", json={})
    assert missing.status_code == 404 and missing.json()["code"] == "PGRST202"


def test_rls_through_rest(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    c1 = client(stack, shop["c1"])
    assert [o["id"] for o in as_rows(c1.table("orders").select("id").execute().data)] == [shop["o1"]]
    assert c1.table("orders").update({"total": 0}).eq("id", shop["o2"]).execute().data == []
    assert client(stack, shop["c2"]).table("cart_items").select("*").eq("user_id", shop["c1"]).execute().data == []
    v1 = client(stack, shop["v1_user"])
    assert [o["id"] for o in as_rows(v1.table("orders").select("id").in_("id", [shop["o1"], shop["o2"]]).execute().data)] \
        == [shop["o1"]]
    svc = client(stack, None, "service_role")
    assert len(svc.table("orders").select("id").in_("id", [shop["o1"], shop["o2"]]).execute().data) == 2
    anon = rest(stack, "POST", "/orders", json={"user_id": shop["c1"], "vendor_id": shop["v1"], "total": 1})
    assert anon.status_code == 401 and anon.json()["code"] == "42501"
    other = rest(stack, "POST", "/orders", token(stack, shop["c2"]),
                 json={"user_id": shop["c1"], "vendor_id": shop["v1"], "total": 1})
    assert other.status_code == 403 and other.json()["code"] == "42501"


def test_same_results_as_the_database(stack: EmbeddedStack) -> None:
    """What REST returns for the service role is exactly what SQL says (values rendered by PostgreSQL)."""
    raw = rest(stack, "GET", "/products?select=id,price,created_at&order=id", stack.service_role_key)
    rows = json.loads(raw.text, parse_float=Decimal)  # numeric's digits as sent (2.50, not 2.5)
    db = sql(stack, "select id::text, price, to_jsonb(created_at) #>> '{}' from products order by id")
    assert [(r["id"], str(r["price"]), r["created_at"]) for r in rows] == [(a, str(b), c) for a, b, c in db]
