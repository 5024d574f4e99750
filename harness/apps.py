"""The one declaration of the apps (001 §4.5): each app -> its subscriptions -> who is entitled to what.

Probes are built from it (``PROBES``: which user runs which app, with which screens open), and flows
ask it who is entitled to an event instead of naming probes. Entitlement is the documents' rule,
written once: a probe is entitled to a change when one of its subscriptions accepts the row (table,
event and filter) *and* the RLS policies of ``fixtures/migrations/003_zora_rls_realtime.sql`` let its
user see the row (``VISIBLE``). So adding a probe here needs no edit to any flow, and a policy the
apps rely on is stated where the checkers can hold the server to it.

The snoops are apps of another customer and another vendor that subscribe to everything without a
filter: by the same rule they are entitled to their own user's rows and to nothing of others', so
RLS alone must keep other people's rows from them (a leak shows as an "unexpected" delivery).

Rules Supabase Realtime applies that this follows: DELETE events are not checked against RLS (the
row is gone): every subscriber whose filter accepts the old row is entitled. Entitlement is decided when the
write is made; the server checks RLS when it processes the change, so a change held up past a write that
widens who may see it (a new order lets its vendor see the customer's profile) can reach one more
subscriber than the write entitled: flows keep such writes apart in time. Broadcasts reach every
probe that joined the topic; presence diffs every probe that watches the channel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ANNOUNCEMENTS", "APPS", "CHANGED_AT", "DECLARATION", "EVENT_GROUPS", "PRESENCE", "PRIVATE_TOPICS", "PROBES",
           "SPOOFING", "VISIBLE", "App", "BroadcastEvent", "ChangeEvent", "Declaration", "Event", "PresenceEvent",
           "ProbeSpec", "Sub", "Viewer"]

ANNOUNCEMENTS = "platform-announcements"  # the admin's broadcast topic every app joins (001 §3.2)
# Broadcast topics the apps join as private channels: only what realtime.messages' policies allow reaches them,
# and only an admin may send there (fixtures/migrations/004). The documents had announcements public, where any
# holder of the anon key can send "as the admin" (the gate's no_spoofing criterion catches that).
PRIVATE_TOPICS = frozenset({ANNOUNCEMENTS})
PRESENCE = "admin-dashboard"  # the admin dashboard's presence channel (001 §3.2, AdminRealtimeProvider)

# The column an app reads "changed since" by when it refetches after a reconnect (001 §4.2: apps refetch).
CHANGED_AT: dict[str, str] = {"order_items": "created_at", "notifications": "created_at", "reviews": "created_at",
                              "messages": "created_at", "conversations": "created_at"}

# The event groups drivers give their expectations; criteria (fixtures/criteria.toml) judge by group.
EVENT_GROUPS = frozenset({"order_visible", "status_update", "cart_sync", "notification", "realtime",
                          "realtime_message"})
# The group of the gate's spoofing attempts: broadcasts nobody is entitled to, judged by ``no_spoofing`` (not by
# ``delivery`` or ``no_leaks``)
SPOOFING = "spoofing"


@dataclass(frozen=True)
class Viewer:
    """The signed-in user behind a probe, as RLS sees them."""

    uid: str
    role: Literal["customer", "vendor", "admin"]
    vendor_id: str | None = None  # the shop a vendor owns

    @property
    def admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Sub:
    """One postgres_changes subscription. ``own`` is the column filtered to the viewer: ``user_id`` (and
    ``id``) to their user id, ``vendor_id`` to their shop; None subscribes to the whole table."""

    table: str
    own: Literal["user_id", "vendor_id", "id"] | None = None
    event: str = "*"

    def value(self, v: Viewer) -> str | None:
        return v.vendor_id if self.own == "vendor_id" else v.uid

    def filter_for(self, v: Viewer) -> str | None:
        """The filter as the app sends it (``vendor_id=eq.<id>``)."""
        return None if self.own is None else f"{self.own}=eq.{self.value(v)}"

    def accepts(self, type_: str, row: Mapping[str, Any], v: Viewer) -> bool:
        if self.event != "*" and self.event != type_:
            return False
        return self.own is None or str(row.get(self.own)) == str(self.value(v))


def _orders(r: Mapping[str, Any], v: Viewer) -> bool:
    return v.admin or r["user_id"] == v.uid or (v.vendor_id is not None and r["vendor_id"] == v.vendor_id)


def _conversation(r: Mapping[str, Any], v: Viewer) -> bool:
    return v.admin or r["customer_id"] == v.uid or (v.vendor_id is not None and r["vendor_id"] == v.vendor_id)


# Who may see a row, per table: the SELECT policies of migration 003, over the facts a flow gives
# (the row's own columns, plus, for messages, its conversation's customer_id and vendor_id, and for
# profiles the shops the customer has ordered from). A missing fact is a KeyError: a flow bug, loudly.
VISIBLE: dict[str, Callable[[Mapping[str, Any], Viewer], bool]] = {
    "orders": _orders,
    "order_items": _orders,  # follow their order: the facts are the order's
    "notifications": lambda r, v: v.admin or r["user_id"] == v.uid,
    "cart_items": lambda r, v: r["user_id"] == v.uid,
    "products": lambda r, v: True,
    "reviews": lambda r, v: True,
    "vendors": lambda r, v: bool(r.get("is_active", True)) or r["user_id"] == v.uid or v.admin,
    "profiles": lambda r, v: v.admin or r["id"] == v.uid or (v.vendor_id is not None
                                                            and v.vendor_id in r["ordered_from"]),
    "conversations": _conversation,
    "messages": _conversation,  # the facts are the conversation's
}


@dataclass(frozen=True)
class App:
    """One app as it subscribes: screens (named sets of subscriptions), the presence channel it watches,
    the broadcast topics it joins."""

    name: str
    screens: Mapping[str, tuple[Sub, ...]]
    presence: str | None = None
    topics: tuple[str, ...] = (ANNOUNCEMENTS,)


@dataclass(frozen=True)
class ProbeSpec:
    """One running app instance: which user, which app, which screens open; ``twin``: also through
    supabase-js under Node (``<name>@js``)."""

    name: str
    app: str
    user: str
    screens: tuple[str, ...]
    twin: bool = True


APPS: dict[str, App] = {
    # 001 §4.5.1: the mobile app follows the user's notifications, orders and cart; the browse screen
    # the catalogue (products, shops)
    "customer-app": App("customer-app", {
        "session": (Sub("orders", "user_id"), Sub("notifications", "user_id"), Sub("cart_items", "user_id")),
        "catalogue": (Sub("products"), Sub("vendors")),
    }),
    # 001 §4.5.2: the vendor portal follows its shop's orders and its notifications; the shop screen its
    # products, the customers' messages and profiles
    "vendor-portal": App("vendor-portal", {
        "session": (Sub("orders", "vendor_id"), Sub("notifications", "user_id")),
        "shop": (Sub("products", "vendor_id"), Sub("messages"), Sub("profiles")),
    }),
    # 001 §4.5.3: the admin dashboard follows all orders, shops, messages and products, with presence
    "admin-dashboard": App("admin-dashboard", {
        "dashboard": (Sub("orders"), Sub("vendors"), Sub("messages"), Sub("products")),
    }, presence=PRESENCE),
    # snoops: another user's token, no filters; RLS alone must keep others' rows away
    "customer-snoop": App("customer-snoop", {
        "everything": (Sub("orders"), Sub("notifications"), Sub("cart_items"), Sub("profiles")),
    }),
    "vendor-snoop": App("vendor-snoop", {
        "everything": (Sub("orders"), Sub("messages"), Sub("profiles")),
    }),
}

PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec("customer-1/phone", "customer-app", "customer-1", ("session", "catalogue")),
    ProbeSpec("customer-1/tablet", "customer-app", "customer-1", ("session", "catalogue")),
    ProbeSpec("customer-2/phone", "customer-app", "customer-2", ("session",)),
    ProbeSpec("customer-2/snoop", "customer-snoop", "customer-2", ("everything",), twin=False),
    ProbeSpec("vendor-1/portal", "vendor-portal", "vendor-1", ("session", "shop")),
    ProbeSpec("vendor-2/portal", "vendor-portal", "vendor-2", ("session",)),
    ProbeSpec("vendor-2/snoop", "vendor-snoop", "vendor-2", ("everything",), twin=False),
    ProbeSpec("admin/dashboard", "admin-dashboard", "admin", ("dashboard",)),
)


@dataclass(frozen=True)
class ChangeEvent:
    """A row change a write causes: ``key`` identifies it among the probes' observations (compared as
    text), ``facts`` decide who may see it (``VISIBLE``) and which filters accept it."""

    table: str
    type: Literal["INSERT", "UPDATE", "DELETE"]
    key: Mapping[str, Any]
    facts: Mapping[str, Any]
    group: str


@dataclass(frozen=True)
class BroadcastEvent:
    topic: str
    event: str
    key: Mapping[str, Any]
    group: str = "realtime_message"


@dataclass(frozen=True)
class PresenceEvent:
    channel: str
    event: Literal["join", "leave"]
    key: Mapping[str, Any]
    group: str = "realtime_message"


Event = ChangeEvent | BroadcastEvent | PresenceEvent


@dataclass(frozen=True)
class Declaration:
    apps: Mapping[str, App] = field(default_factory=lambda: dict(APPS))
    probes: tuple[ProbeSpec, ...] = PROBES
    private_topics: frozenset[str] = PRIVATE_TOPICS  # broadcast topics joined (and sent to) as private channels

    def __post_init__(self) -> None:
        names = [p.name for p in self.probes]
        if len(set(names)) != len(names):
            raise ValueError("probe names must be unique")
        for p in self.probes:
            app = self.apps[p.app]
            unknown = set(p.screens) - set(app.screens)
            if unknown:
                raise ValueError(f"probe {p.name}: app {p.app} has no screen {sorted(unknown)}")

    def app(self, spec: ProbeSpec) -> App:
        return self.apps[spec.app]

    def subs(self, spec: ProbeSpec) -> tuple[Sub, ...]:
        app = self.app(spec)
        return tuple(s for screen in spec.screens for s in app.screens[screen])

    def users(self) -> list[str]:
        return sorted({p.user for p in self.probes})

    def entitled(self, event: Event, viewers: Mapping[str, Viewer]) -> list[str]:
        """The probe specs (names) entitled to the event, given each user's viewer facts."""
        return [spec.name for spec in self.probes if self.accepts(spec, event, viewers[spec.user])]

    def accepts(self, spec: ProbeSpec, event: Event, viewer: Viewer) -> bool:
        """Whether this app instance (signed in as ``viewer``) is entitled to the event: the one rule, for the
        gate's probes and for load's subscribers (which are not in ``probes``)."""
        app = self.app(spec)
        if isinstance(event, BroadcastEvent):  # a spoofed message: nobody is entitled to it
            return event.topic in app.topics and event.group != SPOOFING
        if isinstance(event, PresenceEvent):
            return app.presence == event.channel
        subs = [s for s in self.subs(spec) if s.table == event.table]
        return any(s.accepts(event.type, event.facts, viewer) for s in subs) and (
            event.type == "DELETE" or VISIBLE[event.table](event.facts, viewer))


DECLARATION = Declaration()
