"""001 §6.3 Notification Delivery: new order (vendor), status change (customer), low stock (vendor), within 2 s."""

from harness.flows import low_stock, order_flow, status_update
from harness.pytest_plugin import Zora
from harness.records import Change


def test_trigger_notifications_arrive(zora: Zora) -> None:
    zora.run(order_flow(zora.scene, 0))
    zora.run(status_update(zora.scene, 0))
    zora.run(low_stock(zora.scene, 0))
    zora.settle()
    zora.check("notifications", "delivery", "no_leaks")
    kinds = {(r.record or {}).get("type") for r in zora.records() if isinstance(r, Change) and r.table == "notifications"}
    assert {"order", "low_stock"} <= kinds
