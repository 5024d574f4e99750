"""000 §5.1 Cart Sync: an item added on one device shows on the same account's other device within 2 s."""

from harness.flows import cart_sync
from harness.pytest_plugin import Zora


def test_cart_syncs_across_devices(zora: Zora) -> None:
    for r in range(3):
        zora.run(cart_sync(zora.scene, r))
    zora.settle()
    zora.check("cart_sync", "delivery", "no_leaks")
