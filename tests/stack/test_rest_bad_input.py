"""Bad input to REST: PostgREST's error shape and status, the server stays up, nothing runs that should not."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack import jwt
from stack.server import EmbeddedStack
from tests.zora_support import make_user, sql

SHAPE = {"code", "details", "hint", "message"}


def get(stack: EmbeddedStack, path: str, tok: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"apikey": stack.anon_key, **kw.pop("headers", {})}
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    return httpx.request(kw.pop("method", "GET"), f"{stack.api_url}/rest/v1{path}", headers=headers, timeout=10, **kw)


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == SHAPE, body
    if code:
        assert body["code"] == code, body
    assert "Traceback" not in r.text
    return body


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/products?price=zz.1", 400, "PGRST100"),  # unknown operator
        ("/products?price=eq", 400, "PGRST100"),  # no value
        ("/products?or=(price.eq.1", 400, "PGRST100"),  # unbalanced
        ("/products?price=in.1,2", 400, "PGRST100"),  # in without parentheses
        ("/products?select=id,(", 400, "PGRST100"),
        ("/products?select=name::text;drop", 400, "PGRST100"),
        ("/products?order=price.sideways", 400, "PGRST100"),
        ("/products?limit=-1", 400, "PGRST100"),
        ("/no_such_table", 404, "PGRST205"),
        ("/products?select=nope", 400, "42703"),
        ("/products?nope=eq.1", 400, "42703"),
        ("/products?price=eq.abc", 400, "22P02"),
        ("/products?id=eq.not-a-uuid", 400, "22P02"),
    ],
)
def test_malformed_requests(stack: EmbeddedStack, path: str, status: int, code: str) -> None:
    assert_error(get(stack, path), status, code)


def test_sql_in_filter_values_is_just_a_value(stack: EmbeddedStack) -> None:
    before = sql(stack, "select count(*) from products")
    for value in ["x'; drop table products; --", "1); delete from products; --", "' or 1=1 --", "%' or '1'='1"]:
        r = get(stack, "/products", params={"name": f"eq.{value}"})
        assert r.status_code == 200 and r.json() == []
        r = get(stack, "/products", params={"or": f'(name.eq."{value}",name.like.*{value}*)'})
        assert r.status_code in (200, 400)
        r = get(stack, "/products", params={"name": f"in.({value})"})
        assert r.status_code in (200, 400)
    assert sql(stack, "select count(*) from products") == before


def _none(claims: dict[str, Any]) -> str:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


@pytest.mark.parametrize(
    ("kind", "code"), [("expired", "PGRST303"), ("wrong-secret", "PGRST301"), ("alg-none", "PGRST301"),
                       ("garbage", "PGRST301"), ("role-not-allowed", "22023")])
def test_bad_jwts(stack: EmbeddedStack, kind: str, code: str) -> None:
    now = int(time.time())
    claims = {"sub": make_user(stack), "role": "authenticated", "iat": now, "exp": now + 60}
    secret = stack.settings.jwt_secret  # type: ignore[union-attr]
    tok = {"expired": jwt.encode({**claims, "exp": now - 5}, secret), "wrong-secret": jwt.encode(claims, "q" * 40),
           "alg-none": _none({**claims, "role": "service_role"}), "garbage": "abc.def",
           "role-not-allowed": jwt.encode({**claims, "role": "postgres"}, secret)}[kind]
    r = get(stack, "/orders", tok)
    if kind == "role-not-allowed":  # the authenticator may not become postgres: PostgreSQL refuses the switch
        assert r.status_code in (400, 403) and set(r.json()) == SHAPE
        return
    body = assert_error(r, 401, code)
    assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    if kind == "expired":
        assert body["message"] == "JWT expired"


def test_bad_bodies(stack: EmbeddedStack) -> None:
    tok = jwt.encode({"sub": make_user(stack), "role": "authenticated", "exp": int(time.time()) + 60},
                     stack.settings.jwt_secret)  # type: ignore[union-attr]
    assert_error(get(stack, "/cart_items", tok, method="POST", content=b"{nope",
                     headers={"Content-Type": "application/json"}), 400, "PGRST102")
    assert_error(get(stack, "/cart_items", tok, method="POST", json={"nope": 1}), 400, "PGRST204")
    assert_error(get(stack, "/cart_items", tok, method="POST", content=b"a=1",
                     headers={"Content-Type": "text/plain"}), 415, "PGRST107")
    assert_error(get(stack, "/cart_items", tok, method="PATCH", json=[1, 2]), 400, "PGRST102")
    assert_error(get(stack, "/cart_items", tok, method="POST", json={"quantity": "many"}), 400, "22P02")
    # a NUL byte PostgreSQL cannot store: 400 22021 as from PostgreSQL itself, not a 500 (found by the fuzz below)
    body = assert_error(get(stack, "/products?name=eq.%00", tok), 400, "22021")
    assert "0x00" in body["message"]
    r = get(stack, "/vendor_applications", tok, method="POST", json={"shop_name": "a\u0000b"})
    assert r.status_code == 400 and r.json()["code"] in ("22021", "22P05"), r.text  # PostgreSQL's own refusals


def test_profiles_and_rpc_on_get_are_read_only(stack: EmbeddedStack) -> None:
    assert_error(get(stack, "/products", headers={"Accept-Profile": "auth"}), 406, "PGRST106")
    sql(stack, "create or replace function public.rt_writes() returns int language sql as "
               "$$ insert into public.reviews (user_id, rating) select id, 5 from public.profiles limit 1 returning 1 $$")
    sql(stack, "grant execute on function public.rt_writes() to service_role")
    r = get(stack, "/rpc/rt_writes", stack.service_role_key)
    assert_error(r, 405, "25006")  # GET runs read-only, as PostgREST


FILTER_KEYS = st.sampled_from(["name", "price", "id", "inventory", "vendor_id", "or", "and", "not.or", "select",
                               "order", "limit", "offset", "nope", "name->x", "price::text", "vendors.shop_name"])
FILTER_VALUES = st.one_of(
    st.text(max_size=30),
    st.builds(lambda op, v: f"{op}.{v}", st.sampled_from(["eq", "neq", "gt", "lt", "like", "ilike", "in", "is", "cs",
                                                          "fts", "not.eq", "not.in", "zz", "match"]),
              st.text(max_size=20)),
    st.builds(lambda a, b: f"({a},{b})", st.text(max_size=15), st.text(max_size=15)),
)


def test_filter_grammar_fuzz(stack: EmbeddedStack) -> None:
    """Any filter: a 2xx or a PostgREST-shaped 4xx JSON error, never a 5xx, and the server stays up."""
    with httpx.Client(base_url=f"{stack.api_url}/rest/v1", headers={"apikey": stack.anon_key}, timeout=10) as h:
        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(params=st.lists(st.tuples(FILTER_KEYS, FILTER_VALUES), min_size=1, max_size=4))
        def fuzz(params: list[tuple[str, str]]) -> None:
            r = h.get("/products", params=tuple(params))  # a tuple: httpx types a list of pairs invariantly (str values)
            assert r.status_code < 500, (params, r.status_code, r.text)
            if r.status_code >= 400:
                assert set(r.json()) == SHAPE, (params, r.text)

        fuzz()
        assert h.get("/products?limit=1").status_code == 200


SELECT_PIECES = st.sampled_from(["*", "name", "price.sum()", "count()", "id.avg()::int", "x:count()::zz",
                                 "...vendors(shop_name)", "vendors()", "vendors!inner(*)", "...", "(", ")", "\"",
                                 "\"name\"", "name.nope()", "order_items(count)", "order_items(quantity.max())",
                                 "...order_items(id)", "vendor:vendor_id()", "products_vendor_id_fkey(*)", ":", "!",
                                 "a!b!c(*)"])
PREFERS = st.sampled_from(["handling=strict", "max-affected=1", "max-affected=x", "tx=rollback", "tx=", "count=planned",
                           "missing=default", "return=representation", "resolution=merge-duplicates", "nulls=x"])
ACCEPTS = st.sampled_from(["application/json", "text/csv", "application/vnd.pgrst.object+json",
                           "application/vnd.pgrst.array+json;nulls=stripped", "*/*",
                           "application/vnd.pgrst.plan+json; options=analyze|x"])


def test_select_and_prefer_fuzz(stack: EmbeddedStack) -> None:
    """Aggregates, spreads, empty and hinted embeds, quoted names, like(any), Prefer and Accept: never a 500."""
    with httpx.Client(base_url=f"{stack.api_url}/rest/v1", headers={"apikey": stack.anon_key}, timeout=10) as h:
        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(select=st.lists(SELECT_PIECES, min_size=1, max_size=4), prefer=st.lists(PREFERS, max_size=3),
               accept=ACCEPTS, like=st.sampled_from(["like(any).{a*,b*}", "ilike(all).{*a*}", "eq(any).{1,x}",
                                                     "like(any).x", "gt(all).{}"]))
        def fuzz(select: list[str], prefer: list[str], accept: str, like: str) -> None:
            r = h.get("/products", params={"select": ",".join(select), "name": like},
                      headers={"Prefer": ", ".join(prefer), "Accept": accept})
            assert r.status_code < 500, (select, prefer, accept, r.status_code, r.text)
            if r.status_code >= 400:
                assert set(r.json()) == SHAPE, r.text
            w = h.patch("/products", params={"name": "eq.no such product"}, json={"name": "x"},
                        headers={"Prefer": ", ".join(prefer), "Accept": accept})
            assert w.status_code < 500, (prefer, w.text)
            p = h.post("/rpc/vendor_stats", json={"p_vendor_id": "00000000-0000-4000-b000-000000000011"},
                       params={"select": ",".join(select)}, headers={"Prefer": ", ".join(prefer), "Accept": accept})
            assert p.status_code < 500, (select, prefer, p.text)

        fuzz()
        assert h.get("/products?limit=1").status_code == 200
