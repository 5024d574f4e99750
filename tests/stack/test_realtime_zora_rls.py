"""RLS over realtime with the Zora roles: each app receives exactly what its user may see."""

from __future__ import annotations

import asyncio
import uuid

from stack.server import EmbeddedStack
from tests.stack.rt_support import RawClient, ws_url
from tests.zora_support import as_user, make_product, make_user, make_vendor, one, sql, token


def sub(table: str, flt: str | None = None, event: str = "*") -> dict[str, str]:
    p = {"event": event, "schema": "public", "table": table}
    if flt:
        p["filter"] = flt
    return p


def test_each_role_receives_exactly_what_it_may_see(stack: EmbeddedStack) -> None:
    c1, c2, admin = make_user(stack), make_user(stack), make_user(stack, "admin")
    v1_user, v1 = make_vendor(stack)
    v2_user, _v2 = make_vendor(stack)
    p1 = make_product(stack, v1)
    tag = uuid.uuid4().hex[:8]

    async def go() -> None:
        # every subscriber listens to the whole tables, unfiltered: RLS alone must decide
        tables = {"postgres_changes": [sub("orders"), sub("cart_items"), sub("notifications")]}
        clients: dict[str, RawClient] = {}
        for name, _uid, tok in [("c1", c1, token(stack, c1)), ("c2", c2, token(stack, c2)),
                               ("v1", v1_user, token(stack, v1_user)), ("v2", v2_user, token(stack, v2_user)),
                               ("admin", admin, token(stack, admin)), ("anon", None, None)]:
            c = await RawClient.connect(ws_url(stack))
            rep = await c.join(f"realtime:zora-{tag}", tables, token=tok)
            assert rep.payload["status"] == "ok", name
            clients[name] = c
        # c1 orders from v1, fills their cart; v1 moves the order to preparing
        with as_user(stack, c1) as db:
            oid = str(one(db.execute("insert into orders (user_id, vendor_id, total, notes) values (%s, %s, 3, %s)"
                                     " returning id", (c1, v1, tag))))
            db.execute("insert into cart_items (user_id, product_id, vendor_id) values (%s, %s, %s)", (c1, p1, v1))
            db.commit()
        with as_user(stack, v1_user) as db:
            db.execute("update orders set status = 'preparing' where id = %s", (oid,))
            db.commit()
        await asyncio.sleep(0.6)

        def seen(name: str) -> set[tuple[str, str, str]]:
            out = set()
            for f in clients[name].changes():
                d = f.payload["data"]
                rec = d.get("record") or {}
                out.add((d["table"], d["type"], str(rec.get("user_id", rec.get("id")))))
            return out

        order_ins, order_upd = ("orders", "INSERT", c1), ("orders", "UPDATE", c1)
        cart = ("cart_items", "INSERT", c1)
        new_order_note = ("notifications", "INSERT", v1_user)
        status_note = ("notifications", "INSERT", c1)
        assert seen("c1") == {order_ins, order_upd, cart, status_note}
        assert seen("v1") == {order_ins, order_upd, new_order_note}
        assert seen("admin") == {order_ins, order_upd, new_order_note, status_note}  # admins read all notifications
        assert seen("c2") == set()
        assert seen("v2") == set()
        assert seen("anon") == set()
        for c in clients.values():
            await c.close()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_vendor_filter_as_the_vendor_portal_subscribes(stack: EmbeddedStack) -> None:
    """001 §4.5.2: orders filtered by vendor_id; a forged filter for another shop yields nothing (RLS)."""
    c1 = make_user(stack)
    v1_user, v1 = make_vendor(stack)
    _, v2 = make_vendor(stack)

    async def go() -> None:
        own = await RawClient.connect(ws_url(stack))
        await own.join("realtime:vendor-portal", {"postgres_changes": [sub("orders", f"vendor_id=eq.{v1}")]},
                       token=token(stack, v1_user))
        snoop = await RawClient.connect(ws_url(stack))
        await snoop.join("realtime:vendor-snoop", {"postgres_changes": [sub("orders", f"vendor_id=eq.{v1}")]},
                         token=token(stack, make_user(stack)))
        sql(stack, "insert into orders (user_id, vendor_id, total) values (%s, %s, 1), (%s, %s, 2)", (c1, v1, c1, v2))
        await own.wait(lambda f: len(own.changes()) == 1)
        await asyncio.sleep(0.3)
        assert own.changes()[0].payload["data"]["record"]["vendor_id"] == v1
        assert snoop.changes() == []
        await own.close()
        await snoop.close()

    asyncio.run(asyncio.wait_for(go(), 30))
