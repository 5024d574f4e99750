"""Two stacks' realtime on one database (``stack up --db-url`` beside another stack)."""

from __future__ import annotations

import asyncio

from stack.realtime.changes import ChangeDispatcher
from stack.realtime.hub import Hub
from stack.server import EmbeddedStack
from tests.stack.rt_support import ensure_rt_table


def test_two_dispatchers_regenerating_the_same_checker_at_once_both_succeed(stack: EmbeddedStack) -> None:
    """Both stacks get each change at the same moment and, after any DDL, both regenerate the table's
    checker function: neither may fail (and drop the change) because the other was doing the same."""
    ensure_rt_table(stack)
    dsn = stack.role_dsn("supabase_realtime_admin")

    async def go() -> int:
        ds = [ChangeDispatcher(dsn, Hub()), ChangeDispatcher(dsn, Hub())]
        conns = [await d._connection() for d in ds]
        try:
            for _ in range(150):
                for d in ds:
                    d.forget_tables()
                infos = await asyncio.gather(*(d._table(c, "public", "rt_items") for d, c in zip(ds, conns, strict=True)))
                assert infos[0].checker == infos[1].checker
            return 150
        finally:
            for d in ds:
                await d.close()

    assert asyncio.run(go()) == 150
