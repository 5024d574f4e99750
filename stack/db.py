"""Database pools of one stack, the per-request transaction every API call runs in, and
how a connection becomes one of the stack's login roles.

Each request runs as PostgREST runs it: one transaction, ``SET LOCAL ROLE`` to the
role named in the caller's JWT, and the claims in the transaction-local setting
``request.jwt.claims`` so ``auth.uid()`` and RLS policies see the caller.

Login roles: on its own throwaway cluster the stack logs in as ``authenticator``,
``supabase_auth_admin`` and ``supabase_realtime_admin`` with passwords it set. On an
existing database (``--db-url``) it never sets or needs their passwords: it logs in
with the superuser DSN it was given and *assumes* the role on every connection
(``assumed_dsn`` marks the DSN with libpq ``options=-c role=...``; ``connect`` and the
pools' ``configure`` then run ``SET SESSION AUTHORIZATION``). That makes the role the
session user, so PostgreSQL checks ``SET ROLE`` against that role's memberships exactly
as for a password login (a JWT claiming ``postgres`` is still refused). The difference:
the authenticated user is the superuser, so SQL that ran ``RESET SESSION AUTHORIZATION``
would be the superuser again; only the stack's own generated SQL and the project's
functions run on these connections.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

__all__ = ["API_ROLES", "Pools", "as_caller", "assume_login_role", "assumed_dsn", "assumed_role", "connect"]

API_ROLES = frozenset({"anon", "authenticated", "service_role"})


def _split_options(options: str) -> list[str]:
    """libpq's ``options``: arguments separated by spaces, a backslash escapes the next character."""
    out: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in options:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def _escape_option(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def assumed_role(dsn: str) -> str | None:
    """The role a DSN made by ``assumed_dsn`` assumes (the last ``-c role=`` of its options), else None."""
    options = str(psycopg.conninfo.conninfo_to_dict(dsn).get("options") or "")
    args = _split_options(options)
    role = None
    for i, a in enumerate(args):
        setting = args[i + 1] if a == "-c" and i + 1 < len(args) else a[2:] if a.startswith(("-c", "--")) else ""
        key, _, value = setting.partition("=")
        if key == "role" and value:
            role = value
    return role


def assumed_dsn(superuser_dsn: str, role: str, settings: dict[str, str] | None = None) -> str:
    """The superuser DSN, marked to assume ``role``; ``settings`` are the role's own ``ALTER ROLE ... SET``
    values (applied at a login as that role, which this is not), passed as ``-c`` options."""
    info = psycopg.conninfo.conninfo_to_dict(superuser_dsn)
    extra = [f"-c {_escape_option(k)}={_escape_option(v)}" for k, v in (settings or {}).items()]
    extra.append(f"-c role={_escape_option(role)}")
    info["options"] = " ".join([str(info.get("options") or ""), *extra]).strip()
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})


async def assume_login_role(conn: AsyncConnection[Any], dsn: str) -> None:
    """Make ``conn`` the session of the role ``dsn`` assumes (nothing for a DSN that logs in as itself)."""
    role = assumed_role(dsn)
    if role is None:
        return
    await conn.execute(sql.SQL("set session authorization {}").format(sql.Identifier(role)))
    if not conn.autocommit:
        await conn.commit()


async def connect(dsn: str, **kwargs: Any) -> AsyncConnection[Any]:
    """``AsyncConnection.connect`` for the stack's DSNs: a connection as the login role the DSN names."""
    conn = await AsyncConnection.connect(dsn, **kwargs)
    try:
        await assume_login_role(conn, dsn)
    except BaseException:
        await conn.close()
        raise
    return conn


def _configure(dsn: str) -> Any:
    async def configure(conn: AsyncConnection[Any]) -> None:
        await assume_login_role(conn, dsn)

    return configure


@dataclass
class Pools:
    rest: AsyncConnectionPool
    auth: AsyncConnectionPool

    @classmethod
    async def open(cls, rest_dsn: str, auth_dsn: str, size: int = 10) -> Pools:
        kwargs: dict[str, Any] = {"autocommit": False}
        rest = AsyncConnectionPool(rest_dsn, min_size=2, max_size=size, kwargs=kwargs, open=False,
                                   configure=_configure(rest_dsn))
        auth = AsyncConnectionPool(auth_dsn, min_size=1, max_size=max(2, size // 2), kwargs=kwargs, open=False,
                                   configure=_configure(auth_dsn))
        await rest.open(wait=True, timeout=30)
        await auth.open(wait=True, timeout=30)
        return cls(rest=rest, auth=auth)

    async def close(self) -> None:
        await self.rest.close()
        await self.auth.close()


@asynccontextmanager
async def as_caller(
    pool: AsyncConnectionPool,
    role: str,
    claims: dict[str, Any],
    *,
    method: str = "GET",
    path: str = "/",
    headers: dict[str, str] | None = None,
    read_only: bool = False,
) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that runs as ``role`` with ``claims``.

    ``role`` must already be checked against the roles the login role may assume;
    PostgreSQL refuses the switch otherwise, which is the last line of defence.
    """
    async with pool.connection() as conn, conn.transaction():
        if read_only:  # GET and HEAD, as PostgREST: a function that writes fails instead of writing
            await conn.execute("set transaction read only")
        await conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        await conn.execute(
            "select set_config('request.jwt.claims', %s, true), set_config('request.method', %s, true),"
            " set_config('request.path', %s, true), set_config('request.headers', %s, true),"
            " set_config('role', %s, true)",
            (json.dumps(claims), method, path, json.dumps(headers or {}), role),
        )
        yield conn
