"""000 §5.2 Multiple Tabs: every tab (device) of one account stays in sync, in the same order."""

from harness.flows import cart_sync, order_flow, status_update
from harness.pytest_plugin import Zora
from harness.records import Change


def test_all_tabs_in_sync(zora: Zora) -> None:
    zora.run(order_flow(zora.scene, 0))
    zora.run(status_update(zora.scene, 0))
    zora.run(cart_sync(zora.scene, 0))
    zora.settle()
    zora.check("delivery", "ordering", "status_everywhere", "cart_sync")

    def seen(probe: str) -> list[tuple[str, str]]:
        return [(r.table, r.type) for r in zora.records()
                if isinstance(r, Change) and r.probe == probe and r.table != "products"]
    assert seen("customer-1/phone") == seen("customer-1/tablet") != []
