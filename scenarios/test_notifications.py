"""001 §6.3 Notification Delivery: new order (vendor), status change (customer), low stock (vendor), within 2 s."""

from harness.flows import low_stock, order_flow, status_update


def test_trigger_notifications_arrive(zora) -> None:  # noqa: ANN001
    zora.run(order_flow(zora.scene, 0))
    zora.run(status_update(zora.scene, 0))
    zora.run(low_stock(zora.scene, 0))
    zora.settle()
    zora.check("notifications", "delivery", "no_leaks")
    kinds = {r.get("record", {}).get("type") for r in zora.records()
             if r.get("kind") == "obs" and r.get("table") == "notifications"}
    assert {"order", "low_stock"} <= kinds
