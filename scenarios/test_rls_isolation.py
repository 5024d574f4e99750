"""RLS isolation: every flow once; the snoops (unfiltered subscriptions with another user's token) see
only what their own user may see, and no probe receives an event it is not entitled to."""

from harness.flows import FLOWS


def test_nobody_sees_what_they_may_not(zora) -> None:  # noqa: ANN001
    for flow in FLOWS:
        zora.run(flow(zora.scene, 0))
    zora.settle()
    zora.check("no_leaks", "delivery")
    c2 = zora.scene.world.users["customer-2"]["id"]
    for r in zora.records():
        if r.get("kind") == "obs" and r.get("probe") == "customer-2/snoop" and r.get("table") in ("orders",
                                                                                                  "cart_items"):
            assert (r.get("record") or {}).get("user_id") == c2
