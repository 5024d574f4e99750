"""The Zora schema's RLS policies and triggers, in SQL, exactly as each API role sees them."""

from __future__ import annotations

import psycopg
import pytest

from stack.server import EmbeddedStack
from tests.zora_support import as_user, make_product, make_user, make_vendor, one, sql


@pytest.fixture
def shop(stack: EmbeddedStack) -> dict[str, str]:
    """Two customers, two vendors with a product each, an admin, and one order per customer."""
    d: dict[str, str] = {"c1": make_user(stack), "c2": make_user(stack), "admin": make_user(stack, "admin")}
    d["v1_user"], d["v1"] = make_vendor(stack)
    d["v2_user"], d["v2"] = make_vendor(stack)
    d["p1"] = make_product(stack, d["v1"])
    d["p2"] = make_product(stack, d["v2"])
    with as_user(stack, d["c1"]) as c:
        d["o1"] = str(one(c.execute("insert into orders (user_id, vendor_id, total) values (%s, %s, 9) returning id",
                                    (d["c1"], d["v1"]))))
    with as_user(stack, d["c2"]) as c:
        d["o2"] = str(one(c.execute("insert into orders (user_id, vendor_id, total) values (%s, %s, 5) returning id",
                                    (d["c2"], d["v2"]))))
    return d


def visible_orders(stack: EmbeddedStack, uid: str | None, ids: list[str], role: str = "authenticated") -> set[str]:
    with as_user(stack, uid, role) as c:
        return {str(r[0]) for r in c.execute("select id from orders where id = any(%s::uuid[])", (ids,))}


def test_customer_sees_only_own_orders(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    both = [shop["o1"], shop["o2"]]
    assert visible_orders(stack, shop["c1"], both) == {shop["o1"]}
    assert visible_orders(stack, shop["c2"], both) == {shop["o2"]}


def test_customer_cannot_change_another_customers_order_or_cart(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    sql(stack, "insert into cart_items (user_id, product_id, quantity) values (%s, %s, 1)", (shop["c2"], shop["p1"]))
    with as_user(stack, shop["c1"]) as c:
        assert c.execute("update orders set total = 0 where id = %s", (shop["o2"],)).rowcount == 0
        assert c.execute("update orders set total = 0 where id = %s", (shop["o1"],)).rowcount == 0  # not theirs to edit
        assert c.execute("delete from cart_items where user_id = %s", (shop["c2"],)).rowcount == 0
        assert c.execute("select count(*) from cart_items where user_id = %s", (shop["c2"],)).fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("insert into cart_items (user_id, product_id) values (%s, %s)", (shop["c2"], shop["p2"]))
    assert sql(stack, "select count(*) from cart_items where user_id = %s", (shop["c2"],)) == [(1,)]


def test_customer_cannot_place_order_for_someone_else(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    with as_user(stack, shop["c1"]) as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute("insert into orders (user_id, vendor_id, total) values (%s, %s, 1)", (shop["c2"], shop["v1"]))


def test_vendor_sees_and_updates_only_their_shops_orders(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    both = [shop["o1"], shop["o2"]]
    assert visible_orders(stack, shop["v1_user"], both) == {shop["o1"]}
    with as_user(stack, shop["v1_user"]) as c:
        assert c.execute("update orders set status = 'confirmed' where id = %s", (shop["o1"],)).rowcount == 1
        assert c.execute("update orders set status = 'confirmed' where id = %s", (shop["o2"],)).rowcount == 0
        assert c.execute("update products set price = 1 where id = %s", (shop["p2"],)).rowcount == 0
        c.commit()


def test_admin_and_service_role_see_all(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    both = [shop["o1"], shop["o2"]]
    assert visible_orders(stack, shop["admin"], both) == set(both)
    assert visible_orders(stack, None, both, role="service_role") == set(both)


def test_anon_reads_products_but_no_orders_and_cannot_order(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    assert visible_orders(stack, None, [shop["o1"]], role="anon") == set()
    with as_user(stack, None, "anon") as c:
        assert c.execute("select count(*) from products where id = %s", (shop["p1"],)).fetchone() == (1,)
        assert c.execute("select count(*) from notifications").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("insert into orders (user_id, vendor_id, total) values (%s, %s, 1)", (shop["c1"], shop["v1"]))


def test_customer_cannot_make_themselves_admin(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    with as_user(stack, shop["c1"]) as c, pytest.raises(psycopg.errors.InsufficientPrivilege, match="only an admin"):
        c.execute("update profiles set role = 'admin' where id = %s", (shop["c1"],))
    with as_user(stack, shop["c1"]) as c:
        assert c.execute("update profiles set full_name = 'New Name' where id = %s", (shop["c1"],)).rowcount == 1
        assert c.execute("update profiles set full_name = 'x' where id = %s", (shop["c2"],)).rowcount == 0


def test_notifications_only_to_their_recipient(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    with as_user(stack, shop["v1_user"]) as c:
        mine = c.execute("select count(*) from notifications").fetchone()
    with as_user(stack, shop["c1"]) as c:
        assert c.execute("select count(*) from notifications where user_id = %s", (shop["v1_user"],)).fetchone() == (0,)
    assert mine == (1,)  # the new-order notification of o1


def test_new_order_notifies_the_vendor(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    rows = sql(stack, "select user_id, type, title, description, action_url from notifications where action_url = %s",
               (f"/orders/{shop['o1']}",))
    assert len(rows) == 1
    uid, type_, title, desc, _ = rows[0]
    assert str(uid) == shop["v1_user"] and type_ == "order" and title == "New Order Received!" and "£9" in desc


def test_status_change_notifies_the_customer_once(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    with as_user(stack, shop["v1_user"]) as c:
        c.execute("update orders set status = 'out_for_delivery' where id = %s", (shop["o1"],))
        c.execute("update orders set notes = 'same status' where id = %s", (shop["o1"],))
        c.commit()
    rows = sql(stack, "select user_id, description from notifications where user_id = %s and title = 'Order Update'",
               (shop["c1"],))
    assert len(rows) == 1 and rows[0][1].endswith("is now out for delivery")


def test_application_approval_creates_vendor_and_notifies(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    applicant = make_user(stack)
    with as_user(stack, applicant) as c:
        app_id = one(c.execute("insert into vendor_applications (user_id, shop_name) values (%s, 'New Shop') returning id",
                               (applicant,)))
        c.commit()
    with as_user(stack, applicant) as c:  # the applicant cannot approve themselves
        assert c.execute("update vendor_applications set status = 'approved' where id = %s", (app_id,)).rowcount == 0
    with as_user(stack, shop["admin"]) as c:
        assert c.execute("update vendor_applications set status = 'approved' where id = %s", (app_id,)).rowcount == 1
        c.commit()
    assert sql(stack, "select shop_name, is_verified from vendors where user_id = %s", (applicant,)) == [("New Shop", True)]
    assert sql(stack, "select role from profiles where id = %s", (applicant,)) == [("vendor",)]
    assert sql(stack, "select title from notifications where user_id = %s", (applicant,)) == [("Application approved",)]


def test_low_stock_fires_once_on_the_crossing(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    pid = make_product(stack, shop["v1"], inventory=7, threshold=5)
    with as_user(stack, shop["c1"]) as c:
        oid = one(c.execute("insert into orders (user_id, vendor_id, total) values (%s, %s, 9) returning id",
                            (shop["c1"], shop["v1"])))
        c.execute("insert into order_items (order_id, product_id, quantity, unit_price) values (%s, %s, 1, 1)", (oid, pid))
        c.commit()  # 7 -> 6: above the threshold, no alert
    assert sql(stack, "select count(*) from notifications where action_url = %s", (f"/products/{pid}",)) == [(0,)]
    with as_user(stack, shop["v1_user"]) as c:
        c.execute("update products set inventory = 5 where id = %s", (pid,))  # crosses: alert
        c.execute("update products set inventory = 4 where id = %s", (pid,))  # stays below: no second alert
        c.commit()
    rows = sql(stack, "select user_id, type from notifications where action_url = %s", (f"/products/{pid}",))
    assert [(str(u), t) for u, t in rows] == [(shop["v1_user"], "low_stock")]


def test_order_larger_than_stock_fails(stack: EmbeddedStack, shop: dict[str, str]) -> None:
    pid = make_product(stack, shop["v1"], inventory=2)
    with as_user(stack, shop["c1"]) as c, pytest.raises(psycopg.errors.CheckViolation):
        oid = one(c.execute("insert into orders (user_id, vendor_id, total) values (%s, %s, 9) returning id",
                            (shop["c1"], shop["v1"])))
        c.execute("insert into order_items (order_id, product_id, quantity, unit_price) values (%s, %s, 3, 1)", (oid, pid))


def test_publication_holds_exactly_the_ten_tables(stack: EmbeddedStack) -> None:
    tables = {r[0] for r in sql(stack, "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
                                       " and schemaname = 'public' and tablename not like 'rt\\_%'"
                                       " and tablename not like 'bench\\_%'")}
    assert tables == {"orders", "order_items", "products", "vendors", "cart_items", "notifications", "reviews",
                      "profiles", "conversations", "messages"}


def test_seed_logins_and_roles(stack: EmbeddedStack) -> None:
    rows = sql(stack, "select u.email, p.role, u.encrypted_password = extensions.crypt(%s, u.encrypted_password)"
                      " from auth.users u join profiles p on p.id = u.id where u.email = 'admin@zora.test'",
               ("zora-admin-pass",))
    assert rows == [("admin@zora.test", "admin", True)]
