"""The world a load run writes in and listens to, built once (by the master, or the only process) and handed to
every worker: the run's own users (signed in once: their tokens), shops, products and one order per shop for the
vendors to move on; the target's URLs and anon key (never the service-role key); the settle window, the
deadlines per event group, and the server clock's offset.

Users are picked round-robin per role (``pick``), so any number of Locust users maps onto a small world.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from harness.actors import World, rows_of
from harness.records import Created
from harness.run import Run

__all__ = ["LoadWorld", "Member", "build_world"]


@dataclass(frozen=True)
class Member:
    name: str  # customer-1, vendor-2, admin
    uid: str
    role: str
    email: str
    password: str
    token: str
    vendor_id: str | None = None

    def viewer(self) -> dict[str, Any]:
        return {"uid": self.uid, "role": self.role, "vendor_id": self.vendor_id}


@dataclass
class LoadWorld:
    run_id: str
    url: str  # the API, as publishers write to it
    anon_key: str
    realtime_url: str  # the realtime websocket as subscribers open it (through the fault proxy when there is one)
    members: dict[str, Member]
    products: dict[str, list[str]]  # vendor name -> product ids
    orders: dict[str, dict[str, str]]  # vendor name -> {"id", "customer"}: the order its publishers move on
    settle_s: float = 3.0
    guard_s: float = 1.0
    deadlines_ms: dict[str, float] = field(default_factory=dict)  # event group -> its latency criterion's limit
    offset_ns: int = 0  # server wall clock minus the master's
    rate: float = 1.0  # writes per second per publisher
    raw_samples: str = ""  # a directory for every raw sample (tests only)

    def pick(self, role: str, n: int) -> Member:
        pool = sorted((m for m in self.members.values() if m.role == role), key=lambda m: m.name)
        return pool[n % len(pool)]

    def vendor_of(self, name: str) -> str:
        v = self.members[name].vendor_id
        assert v is not None
        return v

    def to_wire(self) -> dict[str, Any]:
        return {**asdict(self), "members": {k: asdict(v) for k, v in self.members.items()}}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> LoadWorld:
        return cls(**{**d, "members": {k: Member(**v) for k, v in d["members"].items()}})


def _token(url: str, anon: str, email: str, password: str) -> str:
    r = httpx.post(f"{url}/auth/v1/token", params={"grant_type": "password"}, timeout=15,
                   headers={"apikey": anon}, json={"email": email, "password": password})
    r.raise_for_status()
    return str(r.json()["access_token"])


def build_world(run: Run, world: World, customers: int, vendors: int, realtime_url: str) -> LoadWorld:
    """Users, shops and products (``World.build``, each recorded before the next step), one order per shop, and
    a token per user."""
    world.build(customers=customers, vendors=vendors, products_per_vendor=2)
    t = run.target
    orders: dict[str, dict[str, str]] = {}
    for i, (vname, vid) in enumerate(sorted(world.vendors.items())):
        cname = f"customer-{i % customers + 1}"
        o = world.admin_client.table("orders").insert({"user_id": world.users[cname]["id"], "vendor_id": vid,
                                                       "total": 5.0, "notes": f"{run.run_id} load"}).execute()
        oid = str(rows_of(o.data)[0]["id"])
        run.history.append(Created(table="orders", id=oid, label=vname))
        orders[vname] = {"id": oid, "customer": cname}
    members = {name: Member(name=name, uid=str(u["id"]), role=str(u["role"]), email=str(u["email"]),
                            password=str(u["password"]), token=_token(t.url, t.anon_key, u["email"], u["password"]),
                            vendor_id=world.vendors.get(name))
               for name, u in world.users.items()}
    return LoadWorld(run_id=run.run_id, url=t.url, anon_key=t.anon_key, realtime_url=realtime_url, members=members,
                     products={k: list(v) for k, v in world.products.items()}, orders=orders)
