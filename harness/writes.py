"""The apps' writes, each written once with the events it must cause: the gate's flows (``flows.py``) and
load's publishers (``load/``) both call these.

A write is a supabase-py call as the app makes it; its events are ``apps`` events with the facts that
decide who may see them (``Declaration.accepts``). The first event of each list is the row's own change:
load tracks that one per publisher by a sequence number carried in the row (``mark``).
"""

from __future__ import annotations

from typing import Any

from harness.apps import ChangeEvent

__all__ = ["STATUSES", "order_placed", "place_order", "product_updated", "set_status", "status_changed",
           "update_product"]

STATUSES = ["confirmed", "preparing", "ready", "out_for_delivery", "delivered"]


def place_order(client: Any, user_id: str, vendor_id: str, total: float, notes: str) -> Any:
    """000 §5.1 Order Flow: the customer places an order at a shop."""
    return client.table("orders").insert({"user_id": user_id, "vendor_id": vendor_id, "total": total,
                                          "notes": notes}).execute()


def order_placed(order: dict[str, Any], vendor_user: str) -> list[ChangeEvent]:
    """The order appears at the vendor and the admins (and the customer's own apps); the vendor is notified."""
    return [ChangeEvent("orders", "INSERT", {"id": order["id"]}, order, "order_visible"),
            ChangeEvent("notifications", "INSERT", {"user_id": vendor_user, "action_url": f"/orders/{order['id']}"},
                        {"user_id": vendor_user}, "notification")]


def set_status(client: Any, order_id: str, status: str, notes: str | None = None) -> Any:
    """000 §5.1 Status Update: the vendor moves an order on (``notes``: load's mark, else left alone)."""
    change: dict[str, Any] = {"status": status, **({"notes": notes} if notes is not None else {})}
    return client.table("orders").update(change).eq("id", order_id).execute()


def status_changed(order: dict[str, Any], status: str, customer: str) -> list[ChangeEvent]:
    """Everywhere within 500 ms; the customer is notified (migration 022)."""
    return [ChangeEvent("orders", "UPDATE", {"id": order["id"], "status": status, "updated_at": order["updated_at"]},
                        order, "status_update"),
            ChangeEvent("notifications", "INSERT",
                        {"user_id": customer, "description": f"Your order #{order['order_number']} is now "
                                                             f"{status.replace('_', ' ')}"},
                        {"user_id": customer}, "notification")]


def update_product(client: Any, product_id: str, change: dict[str, Any]) -> Any:
    """000 §3.2: an admin (or the shop's vendor) changes a product."""
    return client.table("products").update(change).eq("id", product_id).execute()


def product_updated(row: dict[str, Any]) -> list[ChangeEvent]:
    """The customers' catalogues, the shop's portal and the admin dashboards see it."""
    return [ChangeEvent("products", "UPDATE", {"id": row["id"], "updated_at": row["updated_at"]}, row, "realtime")]
