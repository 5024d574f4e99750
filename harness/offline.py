"""The mobile app offline (000 §5.2 "Update while offline", 001 §9.1 "Zero data loss on optimistic updates").

The customer's phone loses its network (its device proxy resets every connection and refuses new ones), so
its writes cannot be sent: the app keeps them in a local queue, optimistically, as the app would. Meanwhile
the customer's tablet, online, changes the same cart item. When the network returns the phone flushes its
queue in order, each write carrying an **idempotency key** so that sending it again (a retry after a reply
that never came) applies it once:

* an order is inserted with the id the app chose (``on_conflict=id``, duplicates ignored);
* a cart item is upserted on its natural key (user, product): last write wins (001 §8), and before sending,
  the queue checks whether the row changed on the server since the app last saw it: a ``Conflict``;
* a profile update sets the same value again.

Then the database is asked what it holds for each queued write (``QueueVerified``), and the offline_sync
checker (``checks/offline.py``) compares the queue, the database and every subscriber's view.

``OfflineQueue(replays=2)`` sends each write twice, as a retry does; ``idempotent=False`` (a broken queue, for
the negative control) drops the keys, so a replay applies twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from postgrest.exceptions import APIError

from harness.actors import Actor, rows_of
from harness.faults import Down, Reset
from harness.records import Conflict, Expectation, Note, Queued, QueueVerified

if TYPE_CHECKING:
    from harness.flows import Scene
    from harness.lifecycle import Lifecycle

__all__ = ["OfflineQueue", "Pending", "offline"]

PHONE, TABLET = "customer-1/phone", "customer-1/tablet"


@dataclass
class Pending:
    key: str  # idempotency key
    f: str
    table: str
    row: dict[str, Any]
    on_conflict: str
    merge: bool  # merge duplicates (last write wins) or ignore them (insert once)
    expect: Callable[[Any], list[Expectation]]
    base: str | None = None  # the row's updated_at when the app last saw it (conflict detection)
    natural: dict[str, Any] = field(default_factory=dict)  # columns that find the row on the server
    send: Callable[[Any], Any] | None = None  # how to send it, when not an upsert (an update sets a value again)


class OfflineQueue:
    def __init__(self, actor: Actor, replays: int = 1, idempotent: bool = True) -> None:
        self.actor = actor
        self.replays = max(1, replays)
        self.idempotent = idempotent
        self.pending: list[Pending] = []

    def _send(self, p: Pending) -> Any:
        if p.send is not None:
            return p.send(self.actor.client)
        row = dict(p.row)
        if not self.idempotent and p.on_conflict == "id":
            row.pop("id", None)  # the broken queue: a fresh row every time it is sent
            return self.actor.client.table(p.table).insert(row).execute()
        return self.actor.client.table(p.table).upsert(row, on_conflict=p.on_conflict,
                                                          ignore_duplicates=not p.merge).execute()

    async def write(self, p: Pending) -> bool:
        """Send now if the network lets it, else queue it (``Queued``). True if it went out now."""
        try:
            await asyncio.to_thread(self._send, p)
            return True
        except (httpx.TransportError, ConnectionError, OSError):
            self.pending.append(p)
            self.actor.run.history.append(Queued(process=self.actor.name, key=p.key, f=p.f, table=p.table))
            return False

    async def _server_updated_at(self, p: Pending) -> str | None:
        q = self.actor.client.table(p.table).select("updated_at")
        for k, v in p.natural.items():
            q = q.eq(k, v)
        rows = rows_of((await asyncio.to_thread(q.execute)).data)
        return str(rows[0]["updated_at"]) if rows else None

    async def flush(self, timeout: float = 30.0, retry_s: float = 0.5) -> None:
        """Send the queue in order once the network is back (retrying, bounded by ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pending and loop.time() < deadline:
            p = self.pending[0]
            try:
                if p.base is not None and p.natural:
                    server = await self._server_updated_at(p)
                    if server is not None and server != p.base:
                        self.actor.run.history.append(Conflict(process=self.actor.name, key=p.key, table=p.table,
                                                               base=p.base, server=server))
            except (httpx.TransportError, ConnectionError, OSError):
                await asyncio.sleep(retry_s)  # still offline
                continue
            for i in range(self.replays):  # a retry of a write whose reply was lost: the key makes it harmless
                await self.actor.aop(f"flush:{p.f}", lambda p=p: asyncio.to_thread(self._send, p),  # type: ignore[misc]
                                     p.expect if i == 0 else None, idem_key=p.key, replay=i)
            self.pending.pop(0)


async def _verify(lc: Lifecycle, p: Pending, count_by: dict[str, Any]) -> None:
    admin = lc.world.admin_client
    q = admin.table(p.table).select("*")
    for k, v in count_by.items():
        q = q.eq(k, v)
    rows = rows_of((await asyncio.to_thread(q.execute)).data)
    state = rows[-1] if rows else {}
    lc.run.history.append(QueueVerified(key=p.key, table=p.table, count=len(rows),
                                        state={k: v for k, v in state.items() if isinstance(v, str | int | float)}))


async def offline(lc: Lifecycle, replays: int = 2, idempotent: bool = True, offline_s: float = 2.0) -> None:
    """The phone offline: three queued writes and a conflicting edit from the tablet; restore; flush; verify."""
    from harness.resilience import recover_seconds, wait_recovered

    assert lc.scene is not None and lc.network is not None
    s: Scene = lc.scene
    w, run = lc.world, lc.run
    phone = w.actor("customer-1", PHONE, url=lc.network.url(PHONE))  # its REST goes over the phone's network too
    await phone.sign_in()
    queue = OfflineQueue(phone, replays=replays, idempotent=idempotent)
    uid, v1 = w.users["customer-1"]["id"], w.vendors["vendor-1"]
    product, v2 = w.products["vendor-2"][0], w.vendors["vendor-2"]
    seen = rows_of((await asyncio.to_thread(phone.client.table("cart_items").select("*").eq("user_id", uid)
                                            .eq("product_id", product).execute)).data)
    base = str(seen[0]["updated_at"]) if seen else None
    lc.stage("offline: the phone loses its network")
    t0 = run.clock.now()
    proxy = lc.network.proxy(PHONE)
    await proxy.apply(Reset())
    down = await proxy.apply(Down())
    order_id = str(uuid.uuid4())
    note = f"{run.run_id} offline {order_id}"
    cart = Pending(f"{uid}:{product}", "add_to_cart", "cart_items",
                   {"user_id": uid, "product_id": product, "vendor_id": v2, "quantity": 3}, "user_id,product_id",
                   True, lambda d: [s.change("cart_items", "UPDATE" if base else "INSERT",
                                             {"id": d[0]["id"], "quantity": 3, "updated_at": d[0]["updated_at"]},
                                             d[0], "cart_sync")],
                   base=base, natural={"user_id": uid, "product_id": product})
    name = f"Customer One {run.run_id} offline"
    profile = Pending(f"profile:{uid}", "update_profile", "profiles", {"full_name": name}, "id", True,
                      lambda d: [s.change("profiles", "UPDATE", {"id": uid, "full_name": name,
                                                                 "updated_at": d[0]["updated_at"]},
                                          {"id": uid, "ordered_from": sorted({str(o["vendor_id"]) for o in s.orders})},
                                          "realtime")],
                      send=lambda c: c.table("profiles").update({"full_name": name}).eq("id", uid).execute())
    order = Pending(order_id, "place_order", "orders", {"id": order_id, "user_id": uid, "vendor_id": v1, "total": 4.5,
                                                        "notes": note}, "id", False,
                    lambda d: [s.change("orders", "INSERT", {"id": d[0]["id"]}, d[0], "order_visible")])
    for p in (cart, profile, order):
        if await queue.write(p):  # the network was not down after all: the phase did not test what it means to
            lc.run.history.append(Note(text=f"offline: {p.f} went out while the phone was offline",
                                       data={"key": p.key}))
    # the tablet, online, changes the same cart item meanwhile: the phone's queued write will conflict with it
    tablet = s.actors[TABLET]
    await tablet.op("add_to_cart", lambda c: c.table("cart_items").upsert(
        {"user_id": uid, "product_id": product, "vendor_id": v2, "quantity": 9}, on_conflict="user_id,product_id")
        .execute(), lambda d: [s.change("cart_items", "UPDATE", {"id": d[0]["id"], "quantity": 9,
                                                                 "updated_at": d[0]["updated_at"]}, d[0], "cart_sync")])
    await asyncio.sleep(max(0.0, offline_s - (run.clock.now() - t0) / 1e9))
    lc.stage("offline: the network returns; the phone flushes its queue")
    await proxy.clear(down)
    await queue.flush()
    phone.close()
    behind = await wait_recovered([p for p in s.all_probes() if p.info.via == lc.network.name(PHONE)], t0,
                                  recover_seconds(lc.policy.backoff_s), run.clock.now)
    await asyncio.sleep(1.0)  # the flush's last events reach the other devices
    lc.show.say(f"offline: {len(queue.pending)} writes left in the queue" + (f"; not back: {behind}" if behind else ""))
    for p, by in ((cart, {"user_id": uid, "product_id": product}), (profile, {"id": uid}), (order, {"notes": note})):
        try:
            await _verify(lc, p, by)
        except (APIError, httpx.HTTPError) as e:
            lc.run.history.append(QueueVerified(key=p.key, table=p.table, count=-1, state={"error": str(e)[:200]}))
