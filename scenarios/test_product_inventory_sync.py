"""000 §3.2: product and inventory changes reach the vendor portal and the customers' apps."""

from harness.flows import low_stock, product_update
from harness.pytest_plugin import Zora


def test_product_and_inventory_sync(zora: Zora) -> None:
    zora.run(product_update(zora.scene, 0))
    zora.run(low_stock(zora.scene, 0))
    zora.run(product_update(zora.scene, 1))
    zora.settle()
    zora.check("realtime_latency", "delivery", "no_leaks", "ordering")
