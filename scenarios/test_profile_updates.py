"""000 §5.2: profile updates. The customer's reaches the vendor who has their orders (and no other vendor);
the vendor's shop profile reaches the customers' apps and the admin."""

from harness.flows import order_flow, profile_updates
from harness.pytest_plugin import Zora
from harness.records import Change


def test_profile_updates_reach_exactly_who_may_see_them(zora: Zora) -> None:
    zora.run(profile_updates(zora.scene, 0))  # before any order: no vendor may see the customer's profile
    zora.run(order_flow(zora.scene, 0))
    zora.run(profile_updates(zora.scene, 1))  # now vendor-1 may, vendor-2 still may not
    zora.settle()
    zora.check("realtime_latency", "delivery", "no_leaks")
    seen = {r.probe for r in zora.records() if isinstance(r, Change) and r.table == "profiles"}
    assert "vendor-1/portal" in seen and "vendor-2/snoop" not in seen
