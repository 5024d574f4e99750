"""Builders for Zora test data: fresh users per test, so tests never depend on each other or on the seed."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from stack import jwt
from stack.server import EmbeddedStack


def sql(stack: EmbeddedStack, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run as the superuser (bypasses RLS), committed."""
    with psycopg.connect(stack.superuser_dsn, autocommit=True) as c:
        cur = c.execute(query, params)
        return cur.fetchall() if cur.description else []


def one(cur: psycopg.Cursor[Any]) -> Any:
    """The first value of the row a statement returned (``... returning id``): there must be one."""
    row = cur.fetchone()
    assert row is not None
    return row[0]


def make_user(stack: EmbeddedStack, role: str = "customer", email: str | None = None) -> str:
    uid = str(uuid.uuid4())
    email = email or f"u-{uid[:8]}@example.test"
    sql(stack, "insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data,"
               " created_at, updated_at) values ('00000000-0000-0000-0000-000000000000', %s, 'authenticated',"
               " 'authenticated', %s, '{\"provider\":\"email\",\"providers\":[\"email\"]}', '{}', now(), now())",
        (uid, email))
    if role != "customer":
        sql(stack, "update public.profiles set role = %s where id = %s", (role, uid))
    return uid


def make_vendor(stack: EmbeddedStack) -> tuple[str, str]:
    uid = make_user(stack, "vendor")
    vid = sql(stack, "insert into public.vendors (user_id, shop_name) values (%s, 'Shop ' || %s) returning id",
              (uid, uid[:6]))[0][0]
    return uid, str(vid)


def make_product(stack: EmbeddedStack, vendor_id: str, inventory: int = 50, threshold: int = 5,
                 price: str = "4.50") -> str:
    return str(sql(stack, "insert into public.products (vendor_id, name, price, inventory, low_stock_threshold)"
                          " values (%s, 'Thing', %s, %s, %s) returning id",
                   (vendor_id, price, inventory, threshold))[0][0])


def token(stack: EmbeddedStack, uid: str | None, role: str = "authenticated", exp_in: int = 3600) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"role": role, "aud": "authenticated", "iat": now, "exp": now + exp_in}
    if uid:
        claims["sub"] = uid
    return jwt.encode(claims, stack.settings.jwt_secret)  # type: ignore[union-attr]


@contextmanager
def as_user(stack: EmbeddedStack, uid: str | None, role: str = "authenticated") -> Iterator[psycopg.Connection]:
    """A transaction running as the API role with the user's claims, exactly as REST runs requests."""
    with psycopg.connect(stack.superuser_dsn) as c:
        c.execute(psycopg.sql.SQL("set local role {}").format(psycopg.sql.Identifier(role)))
        c.execute("select set_config('request.jwt.claims', %s, true)",
                  (json.dumps({"sub": uid, "role": role} if uid else {"role": role}),))
        yield c
