"""Drivers: the customer, vendor and admin apps, writing through supabase-py as the apps write.

Every write is an ``Op`` in the history: ``invoke``, then ``ok`` (with the ``Expectation`` of each
realtime event it must cause and who is entitled to it), ``fail`` (it definitely did not happen) or
``info`` (outcome unknown, e.g. a timeout). The world (users, shops, products) is created per run and
tagged with the run id; each object is recorded (``Created``) before the next step, and
``World.cleanup`` deletes the run's rows by that tag (``harness/cleanup.py``) and checks that none is
left.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, create_client
from supabase_auth.errors import AuthError

from harness.cleanup import CleanupReport, clean, tag_email
from harness.clock import Offset, estimate_offset, parse_wall
from harness.records import Created, Expectation, Op
from harness.run import Run
from harness.targets import Target

__all__ = ["Actor", "Device", "Refused", "World", "rows_of"]

_op_ids = itertools.count(1)


class Refused(Exception):
    """The server said no (a refused join or push): the action did not happen."""


Expect = list[Expectation]


def _client(url: str, key: str) -> Client:
    return create_client(url, key, ClientOptions(auto_refresh_token=False, persist_session=False))


class Device:
    """One app instance signed in as one user: its clients (supabase-py, and httpx for what supabase-py does
    not call), signed in and warmed. Blocking; it records nothing (``Actor`` records every write in the run's
    history; load's publishers fire Locust events instead)."""

    def __init__(self, target: Target, name: str, email: str, password: str, uid: str, url: str | None = None) -> None:
        self.target = target
        self.name = name
        self.email = email
        self.password = password
        self.uid = uid
        self.url = url or target.url  # its way to the target: through its device's fault proxy, say
        self.client = _client(self.url, target.anon_key)
        self.token = ""
        self.http: httpx.Client | None = None  # for calls no supabase-py client makes (realtime's REST broadcast)

    def login(self) -> None:
        """Sign in, then build and warm every client this app instance writes with, so that no client
        construction, TLS context or connection set-up falls inside a measured write."""
        r = self.client.auth.sign_in_with_password({"email": self.email, "password": self.password})
        assert r.session is not None
        self.token = r.session.access_token
        t = self.target
        self.http = httpx.Client(base_url=self.url, timeout=10,
                                 headers={"apikey": t.anon_key, "Authorization": f"Bearer {self.token}"})
        self._warm()

    def _warm(self) -> None:
        # supabase-py builds its REST client lazily after each sign-in: build it now, and open its connection
        self.client.table("products").select("id").limit(1).execute()
        assert self.http is not None
        self.http.get("/auth/v1/settings")

    def close(self) -> None:
        if self.http is not None:
            self.http.close()


class Actor(Device):
    """One app instance signed in as one user (a device), every write recorded in the run's history."""

    def __init__(self, run: Run, name: str, email: str, password: str, uid: str, url: str | None = None) -> None:
        super().__init__(run.target, name, email, password, uid, url)
        self.run = run

    async def sign_in(self) -> None:
        await asyncio.to_thread(self.login)

    async def op(self, f: str, call: Callable[[Client], Any], expect: Callable[[Any], Expect] | None = None,
                 **info: Any) -> Any:
        """A write through supabase-py (in a thread: the client is synchronous), recorded invoke -> outcome."""
        return await self.aop(f, lambda: asyncio.to_thread(call, self.client), expect, **info)

    async def aop(self, f: str, call: Callable[[], Awaitable[Any]], expect: Callable[[Any], Expect] | None = None,
                  **info: Any) -> Any:
        """Any action of this app instance, recorded: ``invoke``, then ``ok`` (with the events it must cause),
        ``fail`` (refused: it did not happen) or ``info`` (timed out or cut off: it may have happened)."""
        op_id = next(_op_ids)
        h = self.run.history
        h.append(Op(process=self.name, type="invoke", f=f, op_id=op_id, args=info))
        try:
            result = await asyncio.wait_for(call(), 15)
        except (APIError, AuthError, Refused) as e:
            h.append(Op(process=self.name, type="fail", f=f, op_id=op_id, error=str(getattr(e, "message", e))[:300],
                        code=str(getattr(e, "code", ""))))
            return None
        except (TimeoutError, ConnectionError, httpx.HTTPError) as e:
            h.append(Op(process=self.name, type="info", f=f, op_id=op_id, error=f"{type(e).__name__}: {e}"[:300]))
            return None
        data = getattr(result, "data", result)
        if expect is not None and isinstance(data, list) and not data:
            # a write that names its row but returns none: RLS hid the row, or it is gone; nothing happened
            h.append(Op(process=self.name, type="fail", f=f, op_id=op_id, code="no_rows",
                        error="the write returned no rows (hidden by RLS, or missing)"))
            return None
        h.append(Op(process=self.name, type="ok", f=f, op_id=op_id, expect=tuple(expect(data)) if expect else (),
                    result=_brief(data)))
        return data


def rows_of(data: Any) -> list[dict[str, Any]]:
    """The rows of a REST answer (a list of objects), whatever else it is."""
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def _brief(data: Any) -> Any:
    if isinstance(data, list):
        return [{k: v for k, v in r.items() if k in ("id", "status", "quantity", "order_number")} for r in data[:5]
                if isinstance(r, dict)]
    return data if isinstance(data, str | int | float | bool | type(None)) else None


@dataclass
class World:
    """The run's own users, shops and products."""

    run: Run
    admin_client: Client
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {id, email, password, role}
    vendors: dict[str, str] = field(default_factory=dict)  # vendor actor name -> vendor id
    products: dict[str, list[str]] = field(default_factory=dict)  # vendor name -> product ids
    report: CleanupReport | None = None  # set once cleanup() ran to its end (it runs once)

    @classmethod
    def for_run(cls, run: Run) -> World:
        return cls(run, _client(run.target.url, run.target.service_role_key))

    @property
    def cleaned(self) -> bool:
        return self.report is not None

    def _created(self, table: str, id_: str, label: str) -> None:
        self.run.history.append(Created(table=table, id=id_, label=label))

    def _create_user(self, name: str, role: str) -> dict[str, Any]:
        email = tag_email(name, self.run.run_id)
        password = secrets.token_urlsafe(12)
        r = self.admin_client.auth.admin.create_user({
            "email": email, "password": password, "email_confirm": True,
            "user_metadata": {"full_name": f"{name} ({self.run.run_id})", "zora_harness_run": self.run.run_id}})
        uid = r.user.id
        # known before the next step: if what follows fails, cleanup still knows this user
        self.users[name] = {"id": uid, "email": email, "password": password, "role": role}
        self._created("auth.users", uid, name)
        if role != "customer":
            self.admin_client.table("profiles").update({"role": role}).eq("id", uid).execute()
        return self.users[name]

    def build(self, customers: int = 2, vendors: int = 2, products_per_vendor: int = 2) -> None:
        self._create_user("admin", "admin")
        for i in range(1, customers + 1):
            self._create_user(f"customer-{i}", "customer")
        for i in range(1, vendors + 1):
            name = f"vendor-{i}"
            u = self._create_user(name, "vendor")
            v = self.admin_client.table("vendors").insert(
                {"user_id": u["id"], "shop_name": f"Shop {i} {self.run.run_id}", "is_verified": True}).execute()
            vid = str(rows_of(v.data)[0]["id"])
            self.vendors[name] = vid
            self._created("vendors", vid, name)
            rows = [{"vendor_id": vid, "name": f"Item {j} {self.run.run_id}", "price": 3.5 + j, "inventory": 500,
                     "low_stock_threshold": 5} for j in range(products_per_vendor)]
            created = self.admin_client.table("products").insert(rows).execute().data
            self.products[name] = [str(p["id"]) for p in rows_of(created)]
            for pid in self.products[name]:
                self._created("products", pid, name)

    def clock_offset(self, samples: int = 8) -> Offset:
        """The server's wall clock against ours, NTP-style (``clock.estimate_offset``).

        An upserted row's ``updated_at`` is ``now()`` on the server: the start of its transaction, which
        lies between our request and the reply. The row is the run's own cart item, deleted again
        (outside the timed part).
        """
        uid, pid = self.users["customer-1"]["id"], self.products["vendor-1"][0]
        made: list[str] = []

        def server_now() -> int:
            r = self.admin_client.table("cart_items").upsert(
                {"user_id": uid, "product_id": pid, "quantity": 1 + len(made)}, on_conflict="user_id,product_id",
                ignore_duplicates=False).execute()
            row = rows_of(r.data)[0]
            made.append(str(row["id"]))
            return parse_wall(str(row["updated_at"]))

        try:
            return estimate_offset(server_now, samples)
        finally:
            self.admin_client.table("cart_items").delete().eq("user_id", uid).in_("id", made or ["-"]).execute()

    def actor(self, user: str, name: str | None = None, url: str | None = None) -> Actor:
        """An app instance signed in as one of the run's users (``name``: the instance, e.g. customer-1/phone;
        ``url``: how it reaches the target, if not directly)."""
        u = self.users[user]
        return Actor(self.run, name or user, u["email"], u["password"], u["id"], url)

    def cleanup(self) -> CleanupReport:
        """Delete what this run created, and nothing else, found by the run's tag; then check none is left."""
        if self.report is None:
            self.report = clean(self.admin_client, self.run.run_id, [u["id"] for u in self.users.values()])
        return self.report
