"""The flows of the design documents (000 §5, 001 §6), as drivers and probes.

The scene runs the apps of the declaration (``harness/apps.py``): one probe per app instance, plus
its supabase-js twin, each subscribed as that app subscribes. A flow writes as an app writes and says
which events the write must cause (``Scene.expect``: a change, a broadcast or a presence diff, with the
facts that decide who may see it); the declaration answers who is entitled to each, so no flow names a
probe. The snoops (another customer's and another vendor's unfiltered subscriptions) are entitled to
their own user's rows only: RLS alone must keep other people's rows from them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from harness import writes
from harness.actors import Actor, Refused, World
from harness.apps import (
    ANNOUNCEMENTS,
    CHANGED_AT,
    DECLARATION,
    PRESENCE,
    SPOOFING,
    BroadcastEvent,
    ChangeEvent,
    Declaration,
    Event,
    PresenceEvent,
    ProbeSpec,
    Viewer,
)
from harness.browser import BrowserProbes, tab_names
from harness.network import DeviceNetwork
from harness.phoenix import SUPABASE_JS_POLICY, AsyncPhoenix, ReconnectPolicy
from harness.probes import JsProbes, Probe, quiet_heap, topic
from harness.records import Expectation, ProbeInfo, ProbeSet, SubInfo
from harness.run import Run

__all__ = ["BROWSER_SPECS", "FLOWS", "BrowserPlan", "Scene"]

# the web apps (001 §4.5.2 vendor portal, §4.5.3 admin dashboard) a browser probe runs by default
BROWSER_SPECS = ("vendor-1/portal", "admin/dashboard")


@dataclass(frozen=True)
class BrowserPlan:
    """Which app instances also run in Chromium, in how many tabs each; ``behind``: every tab but the first
    opened behind it; ``indicator``: "always-live" only for the negative control."""

    specs: tuple[str, ...] = BROWSER_SPECS
    tabs: int = 1
    behind: bool = True
    indicator: str = "state"

STATUSES = writes.STATUSES


@dataclass
class Scene:
    run: Run
    world: World
    declaration: Declaration = DECLARATION
    js: bool = True  # also probe through supabase-js under Node
    network: DeviceNetwork | None = None  # each device's fault proxy, when the run injects network faults
    policy: ReconnectPolicy = SUPABASE_JS_POLICY  # the client policy both flavours follow
    server_offset_ns: int = 0
    probes: dict[str, Probe] = field(default_factory=dict)
    actors: dict[str, Actor] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)
    conversation: str | None = None
    js_probes: JsProbes | None = None
    twins: dict[str, str] = field(default_factory=dict)  # spec name -> its supabase-js twin's probe name
    browser: BrowserPlan | None = None  # which app instances also run in Chromium tabs (None: none)
    browser_probes: BrowserProbes | None = None
    tabs: dict[str, list[str]] = field(default_factory=dict)  # spec name -> its browser probes' names

    def viewer(self, user: str) -> Viewer:
        u = self.world.users[user]
        return Viewer(uid=str(u["id"]), role=u.get("role", "customer"), vendor_id=self.world.vendors.get(user))

    def devices(self, user: str) -> list[str]:
        """The names of the user's app instances (phone, tablet, ...) whose actors write."""
        return [p.name for p in self.declaration.probes if p.user == user and self.declaration.app(p).name
                == "customer-app"]

    def _info(self, spec: ProbeSpec, flavour: Literal["ours", "supabase-js", "browser"],
              name: str | None = None) -> ProbeInfo:
        v = self.viewer(spec.user)
        app = self.declaration.app(spec)
        twin = flavour != "ours"
        return ProbeInfo(name=name or (f"{spec.name}@js" if twin else spec.name), app=app.name, user=spec.user,
                         flavour=flavour, original=spec.name if twin else None, presence=app.presence, topics=app.topics,
                         private_topics=tuple(t for t in app.topics if t in self.declaration.private_topics),
                         via=self.network.name(spec.name) if self.network else None,
                         heartbeat_s=self.policy.heartbeat_s, backoff_s=self.policy.backoff_s,
                         subs=tuple(SubInfo(table=s.table, filter=s.filter_for(v), event=s.event,
                                            changed_at=CHANGED_AT.get(s.table, "updated_at"))
                                    for s in self.declaration.subs(spec)))

    async def start(self) -> None:
        w = self.world
        for spec in self.declaration.probes:  # an actor per app instance: its session is the probe's token
            if spec.name not in self.actors:
                a = w.actor(spec.user, spec.name)
                await a.sign_in()
                self.actors[spec.name] = a
        if self.network is not None:
            for spec in self.declaration.probes:
                await self.network.add(spec.name)
        infos = [self._info(spec, "ours") for spec in self.declaration.probes]
        self.probes = {i.name: self._probe(i, i.name) for i in infos}
        twins: list[ProbeInfo] = []
        if self.js:  # each app probe again through supabase-js (snoops stay ours: RLS is the server's job)
            twins = [self._info(spec, "supabase-js") for spec in self.declaration.probes if spec.twin]
            self.twins = {str(t.original): t.name for t in twins}
            self.js_probes = JsProbes(self.run, [self._probe(t, str(t.original)) for t in twins])
        tabs: list[ProbeInfo] = []
        if self.browser is not None:  # the web apps again, in Chromium tabs
            for spec in self.declaration.probes:
                if spec.name in self.browser.specs:
                    names = tab_names(spec.name, self.browser.tabs)
                    self.tabs[spec.name] = names
                    tabs += [self._info(spec, "browser", n) for n in names]
            behind = frozenset(n for names in self.tabs.values() for n in names[1:]) if self.browser.behind else frozenset()
            self.browser_probes = BrowserProbes(self.run, [self._probe(t, str(t.original)) for t in tabs],
                                                behind=behind, indicator=self.browser.indicator)
        # entitlement before anything is delivered: who runs which app, with which subscriptions
        self.run.history.append(ProbeSet(probes=(*infos, *twins, *tabs)))
        await asyncio.gather(*(p.start() for p in self.probes.values()),
                             *([self.js_probes.start()] if self.js_probes else []))
        if self.browser_probes is not None:  # after the others: Chromium's start-up does not slow their joins
            await self.browser_probes.start(timeout=60)
        quiet_heap()

    def _probe(self, info: ProbeInfo, device: str) -> Probe:
        """A probe on its device: signed in as the device's actor, through the device's network."""
        net = self.network
        return Probe(self.run, info, self.actors[device].token, server_offset_ns=self.server_offset_ns,
                     url=net.url(device, self.run.target.realtime_url) if net else None,
                     rest_url=net.url(device) if net else None)

    def all_probes(self) -> list[Probe]:
        return [*self.probes.values(), *(self.js_probes.probes.values() if self.js_probes else ()),
                *(self.browser_probes.probes.values() if self.browser_probes else ())]

    @property
    def probe_names(self) -> list[str]:
        return [*self.probes, *(self.js_probes.probes if self.js_probes else ()),
                *(self.browser_probes.probes if self.browser_probes else ())]

    def entitled(self, event: Event) -> tuple[str, ...]:
        """Every running probe (both flavours) entitled to the event, by the declaration."""
        viewers = {u: self.viewer(u) for u in self.declaration.users()}
        names = self.declaration.entitled(event, viewers)
        return tuple(sorted({*names, *(self.twins[n] for n in names if n in self.twins),
                             *(t for n in names for t in self.tabs.get(n, ()))}))

    def expect(self, event: Event) -> Expectation:
        """The expectation a write records for one event it must cause."""
        match = {k: str(v) for k, v in event.key.items() if v is not None}
        source: Literal["change", "broadcast", "presence"]
        type_ = ""
        if isinstance(event, ChangeEvent):
            source, subject, type_ = "change", event.table, event.type
        elif isinstance(event, BroadcastEvent):
            source, subject = "broadcast", event.event
        else:
            source, subject = "presence", event.event
        return Expectation(eid=f"{subject}:{type_ or source}:{uuid.uuid4().hex[:10]}", source=source, subject=subject,
                           type=type_, match=match, deliver_to=self.entitled(event), group=event.group)

    def change(self, table: str, type_: Literal["INSERT", "UPDATE", "DELETE"], key: Mapping[str, Any],
               facts: Mapping[str, Any], group: str) -> Expectation:
        return self.expect(ChangeEvent(table, type_, key, facts, group))

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.probes.values()),
                             *([self.js_probes.stop()] if self.js_probes else []),
                             *([self.browser_probes.stop()] if self.browser_probes else []), return_exceptions=True)
        for a in self.actors.values():
            a.close()


# -- the flows -----------------------------------------------------------------------------------

async def order_flow(s: Scene, round_: int) -> None:
    """000 §5.1 Order Flow: the order appears at the vendor and the admin within 1 s; the vendor is notified."""
    a = s.actors["customer-1/phone"]
    v1, v1u = s.world.vendors["vendor-1"], s.world.users["vendor-1"]["id"]
    product = s.world.products["vendor-1"][0]

    data = await a.op("place_order", lambda c: writes.place_order(c, a.uid, v1, 7.5, f"{s.run.run_id} round {round_}"),
                      lambda d: [s.expect(e) for e in writes.order_placed(d[0], v1u)])
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
        await v.op("set_status", lambda c, status=status: writes.set_status(c, order["id"], status),  # type: ignore[misc]
                   lambda d, status=status: [s.expect(e) for e in writes.status_changed(d[0], status, c1)],  # type: ignore[misc]
                   status=status)


async def cart_sync(s: Scene, round_: int) -> None:
    """000 §5.1 Cart Sync: an item added on one device shows on the other within 2 s (the devices take turns)."""
    devices = s.devices("customer-1")
    a = s.actors[devices[round_ % len(devices)]]
    product = s.world.products["vendor-2"][round_ % len(s.world.products["vendor-2"])]

    def add(client: Any) -> Any:
        return client.table("cart_items").upsert({"user_id": a.uid, "product_id": product, "quantity": round_ + 1,
                                                  "vendor_id": s.world.vendors["vendor-2"]},
                                                 on_conflict="user_id,product_id").execute()

    def expect(data: Any) -> list[Expectation]:
        row = data[0]
        typ: Literal["INSERT", "UPDATE"] = "INSERT" if row["created_at"] == row["updated_at"] else "UPDATE"
        return [s.change("cart_items", typ, {"id": row["id"], "quantity": row["quantity"],
                                             "updated_at": row["updated_at"]}, row, "cart_sync")]

    await a.op("add_to_cart", add, expect)


async def messages(s: Scene, round_: int) -> None:
    """000 §3.2: a customer's message reaches the vendor and the admin."""
    a = s.actors["customer-1/phone"]
    v1 = s.world.vendors["vendor-1"]
    if s.conversation is None:
        conv = await a.op("open_conversation", lambda c: c.table("conversations").insert(
            {"customer_id": a.uid, "vendor_id": v1, "subject": s.run.run_id}).execute())
        if not conv:
            return
        s.conversation = conv[0]["id"]
    await a.op("send_message", lambda c: c.table("messages").insert(
        {"conversation_id": s.conversation, "sender_id": a.uid, "content": f"hello {round_}"}).execute(),
        lambda d: [s.change("messages", "INSERT", {"id": d[0]["id"]}, {"customer_id": a.uid, "vendor_id": v1},
                            "realtime")])


async def low_stock(s: Scene, round_: int) -> None:
    """000 §4 phase 3: the vendor hears when a product runs low; customers see the inventory change."""
    if round_ != 0:
        return
    v = s.actors["vendor-1/portal"]
    v1u = s.world.users["vendor-1"]["id"]
    pid = s.world.products["vendor-1"][1]
    await v.op("update_inventory", lambda c: c.table("products").update({"inventory": 4}).eq("id", pid).execute(),
               lambda d: [s.change("notifications", "INSERT", {"user_id": v1u, "type": "low_stock",
                                                               "action_url": f"/products/{pid}"},
                                   {"user_id": v1u}, "notification"),
                          s.change("products", "UPDATE", {"id": pid, "updated_at": d[0]["updated_at"]}, d[0],
                                   "realtime")])


async def product_update(s: Scene, round_: int) -> None:
    """000 §3.2: a vendor adds a product (the customers' apps and the admin see it); an admin updates a product
    (the vendor portal and the customers' apps see it, and the admin's own dashboard)."""
    v = s.actors["vendor-1/portal"]
    vid = s.world.vendors["vendor-1"]
    await v.op("add_product", lambda c: c.table("products").insert(  # cleanup deletes it with the vendor's products
        {"vendor_id": vid, "name": f"New {round_} {s.run.run_id}", "price": 4.25, "inventory": 20}).execute(),
        lambda d: [s.change("products", "INSERT", {"id": d[0]["id"]}, d[0], "realtime")])
    admin = s.actors["admin/dashboard"]
    pid = s.world.products["vendor-1"][0]
    price = round(9.5 + round_, 2)
    await admin.op("update_product", lambda c: writes.update_product(c, pid, {"price": price}),
                   lambda d: [s.expect(e) for e in writes.product_updated(d[0])])


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
                   lambda d: [s.change("vendors", "INSERT", {"user_id": applicant.uid},
                                       {"user_id": applicant.uid, "is_active": True}, "realtime"),
                              s.change("notifications", "INSERT", {"user_id": applicant.uid,
                                                                   "type": "vendor_application"},
                                       {"user_id": applicant.uid}, "notification")])


async def profile_updates(s: Scene, round_: int) -> None:
    """000 §5.2: a customer updates their profile (seen by the vendor who has their orders, and nobody else's
    vendor); a vendor updates the shop profile (seen by the customers' apps and the admin)."""
    c = s.actors["customer-1/phone"]
    name = f"Customer One {s.run.run_id} r{round_}"
    # RLS: a vendor sees the profiles of customers who ordered from them
    ordered_from = sorted({str(o["vendor_id"]) for o in s.orders})
    await c.op("update_profile", lambda cl: cl.table("profiles").update({"full_name": name}).eq("id", c.uid).execute(),
               lambda d: [s.change("profiles", "UPDATE", {"id": c.uid, "full_name": name,
                                                           "updated_at": d[0]["updated_at"]},
                                   {"id": c.uid, "ordered_from": ordered_from}, "realtime")])
    v = s.actors["vendor-1/portal"]
    vid = s.world.vendors["vendor-1"]
    about = f"Baked every morning ({s.run.run_id} r{round_})"
    await v.op("update_shop", lambda cl: cl.table("vendors").update({"description": about}).eq("id", vid).execute(),
               lambda d: [s.change("vendors", "UPDATE", {"id": vid, "description": about,
                                                          "updated_at": d[0]["updated_at"]}, d[0], "realtime")])


async def presence_online(s: Scene, round_: int) -> None:
    """001 §3.2 PRESENCE: another admin tab comes online, then leaves; the dashboard sees both."""
    if round_ != 0:
        return
    admin = s.actors["admin/dashboard"]
    tab = AsyncPhoenix(s.run.target.socket_url)
    key = f"admin-tab-{s.run.run_id}"
    channel = topic(PRESENCE)

    async def open_tab() -> str:
        await tab.connect()
        rep = await tab.join(channel, {"config": {"presence": {"key": key, "enabled": True}},
                                       "access_token": admin.token})
        if rep.status != "ok":
            raise Refused(f"join {channel}: {rep.response}")
        return key

    async def track() -> str:
        rep = await tab.push(channel, "presence", {"type": "presence", "event": "track", "payload": {"role": "admin"}})
        if rep.status != "ok":
            raise Refused(f"presence track: {rep.response}")
        return key

    async def leave() -> str:
        await tab.close()
        return key

    try:
        if await admin.aop("open_tab", open_tab) and await admin.aop(
                "come_online", track, lambda _: [s.expect(PresenceEvent(PRESENCE, "join", {"key": key, "role": "admin"}))]):
            await admin.aop("go_offline", leave, lambda _: [s.expect(PresenceEvent(PRESENCE, "leave", {"key": key}))])
    finally:
        await tab.close()


async def announcement(s: Scene, round_: int) -> None:
    """001 §3.2: an admin broadcast reaches every app (on the private channel when the apps join it so: the
    admin's INSERT policy on realtime.messages lets it through)."""
    if round_ != 0:
        return
    admin = s.actors["admin/dashboard"]
    mid = uuid.uuid4().hex[:12]
    private = ANNOUNCEMENTS in s.declaration.private_topics

    def send(_: Any) -> Any:
        assert admin.http is not None  # built and warmed at sign-in: no client set-up inside the measured send
        r = admin.http.post("/realtime/v1/api/broadcast",
                            json={"messages": [{"topic": ANNOUNCEMENTS, "event": "announcement", "private": private,
                                                "payload": {"id": mid, "message": "Zora maintenance at 02:00"}}]})
        r.raise_for_status()
        return r.status_code

    await admin.op("broadcast_announcement", send,
                   lambda _: [s.expect(BroadcastEvent(ANNOUNCEMENTS, "announcement", {"id": mid}))])


async def database_broadcast(s: Scene, round_: int) -> None:
    """001 §4.1.1 (migration 016): ``public.broadcast_event(channel_name, event_type, payload)`` called in the
    database (here by the admin, through REST's rpc) reaches the subscribers of that channel. With the
    documents' ``pg_notify`` body it reaches nobody: Supabase Realtime never delivers NOTIFY to websockets."""
    if round_ != 0:
        return
    admin = s.actors["admin/dashboard"]
    mid = uuid.uuid4().hex[:12]

    def send(c: Any) -> str:
        # a void function: PostgREST answers 204 with no rows (a refusal raises instead), so no rows is no failure
        c.rpc("broadcast_event", {"channel_name": ANNOUNCEMENTS, "event_type": "platform_event",
                                  "payload": {"id": mid, "message": f"new shops this week ({s.run.run_id})"}}).execute()
        return "sent"

    await admin.op("broadcast_event", send,
                   lambda _: [s.expect(BroadcastEvent(ANNOUNCEMENTS, "platform_event", {"id": mid}))])


async def spoof_announcement(s: Scene, round_: int) -> None:
    """A security check, not a flow of the documents: a customer (any holder of the anon key) tries to send an
    announcement as if it were the admin, on the websocket and through REST, to the announcements channel
    as the apps join it and to the other kind (public / private) too. Nobody is entitled to it; a probe that
    receives one fails ``no_spoofing``. A refused join or a dropped message is the defence working, never a
    failed write."""
    if round_ != 0:
        return
    spoofer = s.actors["customer-2/phone"]
    channel = topic(ANNOUNCEMENTS)
    expected = ANNOUNCEMENTS in s.declaration.private_topics

    def spoofed(mid: str) -> Callable[[Any], list[Expectation]]:
        return lambda _: [s.expect(BroadcastEvent(ANNOUNCEMENTS, "announcement", {"id": mid}, group=SPOOFING))]

    for private in (expected, not expected):
        mid = uuid.uuid4().hex[:12]
        tab = AsyncPhoenix(s.run.target.socket_url)

        async def send_ws(tab: AsyncPhoenix = tab, private: bool = private, mid: str = mid) -> str:
            await tab.connect()
            rep = await tab.join(channel, {"config": {"private": private, "broadcast": {"ack": True}},
                                           "access_token": spoofer.token})
            if rep.status != "ok":
                return f"join refused: {rep.response}"
            try:  # acked when the server took it; a private channel's refused send is dropped without a word
                ack = await tab.push(channel, "broadcast", {"type": "broadcast", "event": "announcement", "payload": {
                    "id": mid, "message": f"zora-harness spoofing check ({s.run.run_id}): ignore"}}, timeout=1.0)
            except TimeoutError:
                return "dropped (no ack)"
            return f"sent ({ack.status})"

        try:
            await spoofer.aop("spoof_announcement_ws", send_ws, spoofed(mid), private=private)
        finally:
            await tab.close()
        rid = uuid.uuid4().hex[:12]

        def send_rest(_: Any, private: bool = private, rid: str = rid) -> Any:
            assert spoofer.http is not None
            r = spoofer.http.post("/realtime/v1/api/broadcast", json={"messages": [{
                "topic": ANNOUNCEMENTS, "event": "announcement", "private": private,
                "payload": {"id": rid, "message": f"zora-harness spoofing check ({s.run.run_id}): ignore"}}]})
            return r.status_code  # refused (4xx) or accepted and dropped: either way nobody may receive it

        await spoofer.op("spoof_announcement_rest", send_rest, spoofed(rid), private=private)


FLOWS = [order_flow, status_update, cart_sync, messages, low_stock, product_update, profile_updates, vendor_approval,
         presence_online, announcement, database_broadcast, spoof_announcement]
