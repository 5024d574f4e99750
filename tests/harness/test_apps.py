"""The apps' declaration: who is entitled to what follows from subscriptions and the RLS rules, in one place;
adding a probe to it needs no edit to any flow."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from harness.apps import (
    ANNOUNCEMENTS,
    DECLARATION,
    PRESENCE,
    BroadcastEvent,
    ChangeEvent,
    Declaration,
    PresenceEvent,
    ProbeSpec,
    Viewer,
)
from harness.checks import analyze, completeness
from harness.criteria import load_criteria
from harness.flows import order_flow
from harness.history import read_history
from harness.lifecycle import Lifecycle
from harness.records import Op
from stack.server import EmbeddedStack

C1, C2, V1U, V2U, ADMIN, V1, V2 = "c1", "c2", "v1u", "v2u", "ad", "shop1", "shop2"
VIEWERS = {"customer-1": Viewer(C1, "customer"), "customer-2": Viewer(C2, "customer"),
           "vendor-1": Viewer(V1U, "vendor", V1), "vendor-2": Viewer(V2U, "vendor", V2), "admin": Viewer(ADMIN, "admin")}


def entitled(event: ChangeEvent | BroadcastEvent | PresenceEvent, d: Declaration = DECLARATION) -> set[str]:
    return set(d.entitled(event, VIEWERS))


def test_an_order_goes_to_its_customer_its_shop_and_the_admin_and_to_no_snoop() -> None:
    e = ChangeEvent("orders", "INSERT", {"id": "o1"}, {"user_id": C1, "vendor_id": V1}, "order_visible")
    assert entitled(e) == {"customer-1/phone", "customer-1/tablet", "vendor-1/portal", "admin/dashboard"}
    # the other customer's and the other shop's unfiltered subscriptions: RLS keeps it from them
    e2 = ChangeEvent("orders", "INSERT", {"id": "o2"}, {"user_id": C2, "vendor_id": V2}, "order_visible")
    assert entitled(e2) == {"customer-2/phone", "customer-2/snoop", "vendor-2/portal", "vendor-2/snoop",
                            "admin/dashboard"}


def test_rules_per_table() -> None:
    note = ChangeEvent("notifications", "INSERT", {"id": "n"}, {"user_id": V1U}, "notification")
    assert entitled(note) == {"vendor-1/portal"}  # the admin dashboard does not subscribe to notifications
    msg = ChangeEvent("messages", "INSERT", {"id": "m"}, {"customer_id": C1, "vendor_id": V1}, "realtime")
    assert entitled(msg) == {"vendor-1/portal", "admin/dashboard"}
    prof = ChangeEvent("profiles", "UPDATE", {"id": C1}, {"id": C1, "ordered_from": []}, "realtime")
    assert entitled(prof) == set()  # no vendor has an order from them yet
    assert entitled(replace(prof, facts={"id": C1, "ordered_from": [V1]})) == {"vendor-1/portal"}
    hidden = ChangeEvent("vendors", "UPDATE", {"id": V2}, {"user_id": V2U, "is_active": False}, "realtime")
    assert entitled(hidden) == {"admin/dashboard"}  # an inactive shop: only admins (and its owner) may see it
    gone = ChangeEvent("cart_items", "DELETE", {"id": "x"}, {"user_id": C1}, "cart_sync")
    assert entitled(gone) == {"customer-1/phone", "customer-1/tablet", "customer-2/snoop"}  # DELETE: no RLS check
    assert entitled(BroadcastEvent(ANNOUNCEMENTS, "announcement", {"id": "b"})) == {p.name for p in DECLARATION.probes}
    assert entitled(PresenceEvent(PRESENCE, "join", {"key": "k"})) == {"admin/dashboard"}
    with pytest.raises(KeyError):  # a flow that forgets a fact RLS needs fails loudly, never guesses
        entitled(ChangeEvent("orders", "INSERT", {"id": "o"}, {"user_id": C1}, "order_visible"))


def test_a_new_probe_is_entitled_by_the_same_rules() -> None:
    watch = ProbeSpec("customer-1/watch", "customer-app", "customer-1", ("session",))
    d = Declaration(probes=(*DECLARATION.probes, watch))
    e = ChangeEvent("orders", "INSERT", {"id": "o1"}, {"user_id": C1, "vendor_id": V1}, "order_visible")
    assert entitled(e, d) == entitled(e) | {"customer-1/watch"}
    with pytest.raises(ValueError, match="no screen"):
        Declaration(probes=(ProbeSpec("x", "customer-app", "customer-1", ("nope",)),))
    with pytest.raises(ValueError, match="unique"):
        Declaration(probes=(watch, watch))


def test_adding_a_probe_to_the_declaration_needs_no_edit_to_any_flow(stack: EmbeddedStack, tmp_path: Path) -> None:
    watch = ProbeSpec("customer-1/watch", "customer-app", "customer-1", ("session",), twin=False)
    lc = Lifecycle(stack.target(), load_criteria(), tmp_path, js=False, quiet=True,
                   declaration=Declaration(probes=(*DECLARATION.probes, watch)))

    async def go() -> None:
        try:
            await lc.open()
            await lc.flows([order_flow], 1)  # the documents' flow, unchanged
            await lc.settle(1.0)
        finally:
            await lc.close()

    asyncio.run(go())
    lc.end(None)
    records = read_history(lc.run.dir / "history.jsonl").records
    [placed] = [r for r in records if isinstance(r, Op) and r.type == "ok" and r.f == "place_order"]
    order = next(e for e in placed.expect if e.subject == "orders")
    assert "customer-1/watch" in order.deliver_to  # the new probe's expectations follow from the declaration
    r = completeness(analyze(records))
    assert r.valid is True and r.details["per_probe"]["customer-1/watch"]["delivered"] == 1  # and it got it
