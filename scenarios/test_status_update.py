"""000 §5.1 Status Update: the vendor's status change is everywhere within 500 ms, in order."""

from harness.flows import order_flow, status_update
from harness.pytest_plugin import Zora


def test_status_everywhere(zora: Zora) -> None:
    zora.run(order_flow(zora.scene, 0))
    zora.run(status_update(zora.scene, 0))
    zora.settle()
    zora.check("status_everywhere", "notifications", "delivery", "no_leaks", "ordering")
