"""The flows of the design documents (000 §5, 001 §6), as drivers and probes.

Probes subscribe as the apps do (001 §4.5): the customer app to its own orders, notifications and
cart (one probe per device: phone and tablet), and to products; the vendor portal to its shop's
orders and products and its notifications; the admin dashboard to all orders, vendors and
messages. Two *snoop* probes subscribe without any filter with another customer's and another
vendor's token: RLS alone must keep other people's rows from them, so a leak shows as an
"unexpected" delivery.

Each write records its expected events: what row, which criterion (``fixtures/criteria.toml``
event groups), and exactly which probes are entitled to it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from harness.actors import Actor, Refused, World
from harness.phoenix import AsyncPhoenix
from harness.probes import ANNOUNCEMENTS, JsProbes, Probe, Sub, quiet_heap
from harness.run import Run

__all__ = ["FLOWS", "Scene"]

PRESENCE = "admin-dashboard"  # the admin dashboard's presence channel (001 §3.2, AdminRealtimeProvider)
STATUSES = ["confirmed", "preparing", "ready", "out_for_delivery", "delivered"]


def ev(table: str, type_: str, match: dict[str, Any], to: list[str], criterion: str) -> dict[str, Any]:
    return {"eid": f"{table}:{type_}:{uuid.uuid4().hex[:10]}", "table": table, "type": type_,
            "match": {k: v for k, v in match.items() if v is not None}, "deliver_to": to, "criterion": criterion}


@dataclass
class Scene:
    run: Run
    world: World
    probes: dict[str, Probe] = field(default_factory=dict)
    actors: dict[str, Actor] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)
    conversation: str | None = None
    js: bool = True  # also probe through supabase-js under Node
    js_probes: JsProbes | None = None

    @property
    def c1_devices(self) -> list[str]:
        return ["customer-1/phone", "customer-1/tablet"]

    async def start(self) -> None:
        w = self.world
        for name, device in [("customer-1", "phone"), ("customer-1", "tablet"), ("customer-2", "phone"),
                             ("vendor-1", "portal"), ("vendor-2", "portal"), ("admin", "dashboard")]:
            a = w.actor(name, device)
            await a.sign_in()
            self.actors[a.name] = a
        c1, c2 = w.users["customer-1"]["id"], w.users["customer-2"]["id"]
        v1u, v2u = w.users["vendor-1"]["id"], w.users["vendor-2"]["id"]
        v1, v2 = w.vendors["vendor-1"], w.vendors["vendor-2"]
        layout: dict[str, tuple[str, list[Sub]]] = {
            "customer-1/phone": ("customer-1/phone", [Sub("orders", f"user_id=eq.{c1}"),
                                                      Sub("notifications", f"user_id=eq.{c1}"),
                                                      Sub("cart_items", f"user_id=eq.{c1}"), Sub("products"),
                                                      Sub("vendors")]),
            "customer-1/tablet": ("customer-1/tablet", [Sub("orders", f"user_id=eq.{c1}"),
                                                        Sub("notifications", f"user_id=eq.{c1}"),
                                                        Sub("cart_items", f"user_id=eq.{c1}"), Sub("products"),
                                                        Sub("vendors")]),
            "customer-2/phone": ("customer-2/phone", [Sub("orders", f"user_id=eq.{c2}"),
                                                      Sub("notifications", f"user_id=eq.{c2}"),
                                                      Sub("cart_items", f"user_id=eq.{c2}")]),
            "customer-2/snoop": ("customer-2/phone", [Sub("orders"), Sub("notifications"), Sub("cart_items"),
                                                      Sub("profiles")]),
            "vendor-1/portal": ("vendor-1/portal", [Sub("orders", f"vendor_id=eq.{v1}"),
                                                    Sub("products", f"vendor_id=eq.{v1}"),
                                                    Sub("notifications", f"user_id=eq.{v1u}"), Sub("messages"),
                                                    Sub("profiles")]),
            "vendor-2/portal": ("vendor-2/portal", [Sub("orders", f"vendor_id=eq.{v2}"),
                                                    Sub("notifications", f"user_id=eq.{v2u}")]),
            "vendor-2/snoop": ("vendor-2/portal", [Sub("orders"), Sub("messages"), Sub("profiles")]),
            "admin/dashboard": ("admin/dashboard", [Sub("orders"), Sub("vendors"), Sub("messages"),
                                                    Sub("products")]),
        }
        watches = {"admin/dashboard": PRESENCE}  # the dashboard shows who is online (001 §3.2)
        for name, (actor, subs) in layout.items():
            self.probes[name] = Probe(self.run, name, self.actors[actor].token, subs, presence=watches.get(name))
        twins: dict[str, str] = {}
        if self.js:  # each app probe again through supabase-js (snoops stay ours: RLS is the server's job)
            js = [Probe(self.run, f"{n}@js", self.actors[a].token, subs, presence=watches.get(n))
                  for n, (a, subs) in layout.items() if not n.endswith("/snoop")]
            twins = {p.name: p.name.removesuffix("@js") for p in js}
            self.js_probes = JsProbes(self.run, js)
        # entitlement first: a twin is entitled to exactly what the probe it copies is
        self.run.history.meta(twins=twins)
        await asyncio.gather(*(p.start() for p in self.probes.values()),
                             *([self.js_probes.start()] if self.js_probes else []))
        quiet_heap()
        self.run.history.meta(probes={n: [s.__dict__ for s in p.subs] for n, p in self.probes.items()})

    @property
    def probe_names(self) -> list[str]:
        return [*self.probes, *(self.js_probes.probes if self.js_probes else ())]

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.probes.values()),
                             *([self.js_probes.stop()] if self.js_probes else []), return_exceptions=True)


# -- the flows -----------------------------------------------------------------------------------

async def order_flow(s: Scene, round_: int) -> None:
    """000 §5.1 Order Flow: the order appears at the vendor and the admin within 1 s; the vendor is notified."""
    a = s.actors["customer-1/phone"]
    v1, v1u = s.world.vendors["vendor-1"], s.world.users["vendor-1"]["id"]
    product = s.world.products["vendor-1"][0]

    def place(client: Any) -> Any:
        return client.table("orders").insert({"user_id": a.uid, "vendor_id": v1, "total": 7.5,
                                              "notes": f"{s.run.run_id} round {round_}"}).execute()

    def expect(data: Any) -> list[dict[str, Any]]:
        o = data[0]
        return [ev("orders", "INSERT", {"id": o["id"]},
                   ["vendor-1/portal", "admin/dashboard", *s.c1_devices, ], "order_visible"),
                ev("notifications", "INSERT", {"user_id": v1u, "action_url": f"/orders/{o['id']}"},
                   ["vendor-1/portal"], "notification")]

    data = await a.op("place_order", place, expect)
    if data:
        s.orders.append(data[0])
        await a.op("add_order_items", lambda c: c.table("order_items").insert(
            {"order_id": data[0]["id"], "product_id": product, "quantity": 1, "unit_price": 7.5}).execute())


async def status_update(s: Scene, round_: int) -> None:
    """000 §5.1 Status Update: everywhere within 500 ms; the customer is notified (migration 022)."""
    if not s.orders:
        return
    order = s.orders[-1]
    v = s.actors["vendor-1/portal"]
    c1 = s.world.users["customer-1"]["id"]
    for status in STATUSES[:2]:
        def change(client: Any, status: str = status) -> Any:
            return client.table("orders").update({"status": status}).eq("id", order["id"]).execute()

        def expect(data: Any, status: str = status) -> list[dict[str, Any]]:
            o = data[0]
            return [ev("orders", "UPDATE", {"id": o["id"], "status": status, "updated_at": o["updated_at"]},
                       [*s.c1_devices, "admin/dashboard", "vendor-1/portal"], "status_update"),
                    ev("notifications", "INSERT",
                       {"user_id": c1, "description": f"Your order #{o['order_number']} is now "
                                                      f"{status.replace('_', ' ')}"}, s.c1_devices, "notification")]

        await v.op("set_status", change, expect, status=status)


async def cart_sync(s: Scene, round_: int) -> None:
    """000 §5.1 Cart Sync: an item added on one device shows on the other within 2 s (phone and tablet take turns)."""
    a = s.actors[s.c1_devices[round_ % 2]]
    product = s.world.products["vendor-2"][round_ % len(s.world.products["vendor-2"])]

    def add(client: Any) -> Any:
        return client.table("cart_items").upsert({"user_id": a.uid, "product_id": product, "quantity": round_ + 1,
                                                  "vendor_id": s.world.vendors["vendor-2"]},
                                                 on_conflict="user_id,product_id").execute()

    def expect(data: Any) -> list[dict[str, Any]]:
        row = data[0]
        typ = "INSERT" if row["created_at"] == row["updated_at"] else "UPDATE"
        return [ev("cart_items", typ, {"id": row["id"], "quantity": row["quantity"]}, s.c1_devices, "cart_sync")]

    await a.op("add_to_cart", add, expect)


async def messages(s: Scene, round_: int) -> None:
    """000 §3.2: a customer's message reaches the vendor and the admin."""
    a = s.actors["customer-1/phone"]
    if s.conversation is None:
        conv = await a.op("open_conversation", lambda c: c.table("conversations").insert(
            {"customer_id": a.uid, "vendor_id": s.world.vendors["vendor-1"], "subject": s.run.run_id}).execute())
        if not conv:
            return
        s.conversation = conv[0]["id"]
    await a.op("send_message", lambda c: c.table("messages").insert(
        {"conversation_id": s.conversation, "sender_id": a.uid, "content": f"hello {round_}"}).execute(),
        lambda d: [ev("messages", "INSERT", {"id": d[0]["id"]}, ["vendor-1/portal", "admin/dashboard"], "realtime")])


async def low_stock(s: Scene, round_: int) -> None:
    """000 §4 phase 3: the vendor hears when a product runs low; customers see the inventory change."""
    if round_ != 0:
        return
    v = s.actors["vendor-1/portal"]
    v1u = s.world.users["vendor-1"]["id"]
    pid = s.world.products["vendor-1"][1]
    await v.op("update_inventory", lambda c: c.table("products").update({"inventory": 4}).eq("id", pid).execute(),
               lambda d: [ev("notifications", "INSERT", {"user_id": v1u, "type": "low_stock",
                                                         "action_url": f"/products/{pid}"}, ["vendor-1/portal"],
                             "notification"),
                          ev("products", "UPDATE", {"id": pid, "updated_at": d[0]["updated_at"]},
                             ["vendor-1/portal", "admin/dashboard", *s.c1_devices], "realtime")])


async def product_update(s: Scene, round_: int) -> None:
    """000 §3.2: a vendor adds a product (the customers' apps and the admin see it); an admin updates a product
    (the vendor portal and the customers' apps see it, and the admin's own dashboard)."""
    v = s.actors["vendor-1/portal"]
    vid = s.world.vendors["vendor-1"]
    everyone = ["vendor-1/portal", "admin/dashboard", *s.c1_devices]
    await v.op("add_product", lambda c: c.table("products").insert(  # cleanup deletes it with the vendor's products
        {"vendor_id": vid, "name": f"New {round_} {s.run.run_id}", "price": 4.25, "inventory": 20}).execute(),
        lambda d: [ev("products", "INSERT", {"id": d[0]["id"]}, everyone, "realtime")])
    admin = s.actors["admin/dashboard"]
    pid = s.world.products["vendor-1"][0]
    price = round(9.5 + round_, 2)
    await admin.op("update_product", lambda c: c.table("products").update({"price": price}).eq("id", pid).execute(),
                   lambda d: [ev("products", "UPDATE", {"id": pid, "updated_at": d[0]["updated_at"]}, everyone,
                                 "realtime")])


async def vendor_approval(s: Scene, round_: int) -> None:
    """000 §2.2 example 3: the admin approves; a trigger creates the vendor and notifies the applicant."""
    if round_ != 0:
        return
    applicant = s.actors["customer-2/phone"]
    app = await applicant.op("apply_as_vendor", lambda c: c.table("vendor_applications").insert(
        {"user_id": applicant.uid, "shop_name": f"Applicant {s.run.run_id}"}).execute())
    if not app:
        return
    admin = s.actors["admin/dashboard"]
    await admin.op("approve_vendor", lambda c: c.table("vendor_applications").update({"status": "approved"})
                   .eq("id", app[0]["id"]).execute(),
                   lambda d: [ev("vendors", "INSERT", {"user_id": applicant.uid}, ["admin/dashboard", *s.c1_devices],
                                 "realtime"),
                              ev("notifications", "INSERT", {"user_id": applicant.uid, "type": "vendor_application"},
                                 ["customer-2/phone", "customer-2/snoop"], "notification")])


async def profile_updates(s: Scene, round_: int) -> None:
    """000 §5.2: a customer updates their profile (seen by the vendor who has their orders, and nobody else's
    vendor); a vendor updates the shop profile (seen by the customers' apps and the admin)."""
    c = s.actors["customer-1/phone"]
    name = f"Customer One {s.run.run_id} r{round_}"
    # RLS: a vendor sees the profiles of customers who ordered from them; with no order yet, nobody may see it
    entitled = ["vendor-1/portal"] if s.orders else []
    await c.op("update_profile", lambda cl: cl.table("profiles").update({"full_name": name}).eq("id", c.uid).execute(),
               lambda _: [ev("profiles", "UPDATE", {"id": c.uid, "full_name": name}, entitled, "realtime")])
    v = s.actors["vendor-1/portal"]
    vid = s.world.vendors["vendor-1"]
    about = f"Baked every morning ({s.run.run_id} r{round_})"
    await v.op("update_shop", lambda cl: cl.table("vendors").update({"description": about}).eq("id", vid).execute(),
               lambda _: [ev("vendors", "UPDATE", {"id": vid, "description": about},
                             ["admin/dashboard", *s.c1_devices], "realtime")])


async def presence_online(s: Scene, round_: int) -> None:
    """001 §3.2 PRESENCE: another admin tab comes online, then leaves; the dashboard sees both."""
    if round_ != 0:
        return
    admin = s.actors["admin/dashboard"]
    tab = AsyncPhoenix(s.run.target.socket_url)
    key = f"admin-tab-{s.run.run_id}"
    topic = f"realtime:{PRESENCE}"
    watchers = [n for n, p in s.probes.items() if p.presence == PRESENCE]

    async def open_tab() -> str:
        await tab.connect()
        rep = await tab.join(topic, {"config": {"presence": {"key": key, "enabled": True}}, "access_token": admin.token})
        if rep.status != "ok":
            raise Refused(f"join {topic}: {rep.response}")
        return key

    async def track() -> str:
        rep = await tab.push(topic, "presence", {"type": "presence", "event": "track", "payload": {"role": "admin"}})
        if rep.status != "ok":
            raise Refused(f"presence track: {rep.response}")
        return key

    async def leave() -> str:
        await tab.close()
        return key

    try:
        if await admin.aop("open_tab", open_tab) and await admin.aop(
                "come_online", track, lambda _: [ev("presence:join", "PRESENCE", {"key": key, "role": "admin"},
                                                    watchers, "realtime_message")]):
            await admin.aop("go_offline", leave,
                            lambda _: [ev("presence:leave", "PRESENCE", {"key": key}, watchers, "realtime_message")])
    finally:
        await tab.close()


async def announcement(s: Scene, round_: int) -> None:
    """001 §3.2: an admin broadcast reaches every app."""
    if round_ != 0:
        return
    admin = s.actors["admin/dashboard"]
    mid = uuid.uuid4().hex[:12]
    target = s.run.target

    def send(_: Any) -> Any:
        r = httpx.post(f"{target.url}/realtime/v1/api/broadcast", timeout=10,
                       headers={"apikey": target.anon_key, "Authorization": f"Bearer {admin.token}"},
                       json={"messages": [{"topic": ANNOUNCEMENTS, "event": "announcement",
                                           "payload": {"id": mid, "message": "Zora maintenance at 02:00"}}]})
        r.raise_for_status()
        return r.status_code

    await admin.op("broadcast_announcement", send,
                   lambda _: [ev("broadcast:announcement", "BROADCAST", {"id": mid}, list(s.probes),
                                 "realtime_message")])


FLOWS = [order_flow, status_update, cart_sync, messages, low_stock, product_update, profile_updates, vendor_approval,
         presence_online, announcement]
