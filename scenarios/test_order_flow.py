"""000 §5.1 Order Flow: a customer's order appears at the vendor and the admin within 1 s; the vendor is notified."""

from harness.flows import order_flow
from harness.pytest_plugin import Zora


def test_order_reaches_vendor_and_admin(zora: Zora) -> None:
    for r in range(2):
        zora.run(order_flow(zora.scene, r))
    zora.settle()
    zora.check("order_visible", "notifications", "realtime_latency", "delivery", "no_leaks")
