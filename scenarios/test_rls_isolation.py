"""RLS isolation: every flow once; the snoops (unfiltered subscriptions with another user's token) see only
what their own user may see, and no probe receives an event it is not entitled to.

A snoop that saw nothing would pass that by being dead: so each snoop must also be live (every
subscription confirmed by the server) and receive rows of its own user."""

from typing import Any

from harness.flows import FLOWS
from harness.pytest_plugin import Zora
from harness.records import Change, ProbeLive

SNOOPS = ("customer-2/snoop", "vendor-2/snoop")


async def order_at_vendor_2(s: Any, round_: int) -> None:
    """customer-2 orders from vendor-2: rows both snoops' own users may see."""
    a = s.actors["customer-2/phone"]
    v2 = s.world.vendors["vendor-2"]
    await a.op("place_order", lambda c: c.table("orders").insert(
        {"user_id": a.uid, "vendor_id": v2, "total": 3.5, "notes": f"{s.run.run_id} isolation"}).execute(),
        lambda d: [s.change("orders", "INSERT", {"id": d[0]["id"]}, d[0], "order_visible")])


def test_nobody_sees_what_they_may_not(zora: Zora) -> None:
    for flow in [*FLOWS, order_at_vendor_2]:
        zora.run(flow(zora.scene, 0))
    zora.settle()
    zora.check("no_leaks", "delivery")
    records = zora.records()
    c2 = zora.scene.world.users["customer-2"]["id"]
    v2 = zora.scene.world.vendors["vendor-2"]
    own = {"customer-2/snoop": lambda r: r.get("user_id") == c2, "vendor-2/snoop": lambda r: r.get("vendor_id") == v2}
    for snoop in SNOOPS:
        live = [r for r in records if isinstance(r, ProbeLive) and r.probe == snoop]
        assert live and live[0].errors == (), f"{snoop} never went live"
        got = [r.record or {} for r in records if isinstance(r, Change) and r.probe == snoop]
        assert got and any(own[snoop](rec) for rec in got), f"{snoop} received nothing of its own user"
    for r in records:
        if isinstance(r, Change) and r.probe == "customer-2/snoop" and r.table in ("orders", "cart_items"):
            assert (r.record or {}).get("user_id") == c2
