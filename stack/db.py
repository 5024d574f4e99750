"""Database pools of one stack and the per-request transaction every API call runs in.

Each request runs as PostgREST runs it: one transaction, ``SET LOCAL ROLE`` to the
role named in the caller's JWT, and the claims in the transaction-local setting
``request.jwt.claims`` so ``auth.uid()`` and RLS policies see the caller.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

__all__ = ["API_ROLES", "Pools", "as_caller"]

API_ROLES = frozenset({"anon", "authenticated", "service_role"})


@dataclass
class Pools:
    rest: AsyncConnectionPool
    auth: AsyncConnectionPool

    @classmethod
    async def open(cls, rest_dsn: str, auth_dsn: str, size: int = 10) -> Pools:
        kwargs: dict[str, Any] = {"autocommit": False}
        rest = AsyncConnectionPool(rest_dsn, min_size=2, max_size=size, kwargs=kwargs, open=False)
        auth = AsyncConnectionPool(auth_dsn, min_size=1, max_size=max(2, size // 2), kwargs=kwargs, open=False)
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
