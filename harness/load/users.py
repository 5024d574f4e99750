"""Locust users: publishers that write as the apps write, on an open model, and subscribers that listen as the
apps listen. The concrete classes are in ``load/`` (the locustfiles); these bases are abstract.

**Publishers** (``PublisherUser``) sign in as one of the run's users (``harness.actors.Device``: the gate's
actor code, without its history) and make one of the apps' writes (``harness/writes.py``, the gate's flows
call the same functions) at ``--zora-rate`` writes per second. Each write has an intended time on a fixed
schedule; a write that is late (the server was slow) is sent at once and its latency still counts from its
intended time, so a slow server cannot hide its latency (no coordinated omission). Each write carries the
publisher's id and sequence number in the row (``orders.notes``, ``products.description``), and Locust's
``request`` event is fired for it (Locust's stats show the requests and their rates).

**Subscribers** (``SubscriberUser``) hold the subscriptions of one app (``harness/apps.py``: its screens),
signed in as one of the run's users, over ``harness.phoenix.sync`` (one greenlet, one socket). A subscriber
counts as live after the server's postgres_changes ``system`` ok on every channel. Every delivery is stamped
on arrival; write->deliver (from the intended time) and commit->deliver go into the process's HdrHistograms,
the sequence number into the subscriber's ``SeqSet``; Locust's ``request`` event is fired too (named
``deliver:<group>``) so Locust's own, rounded, statistics can be read beside ours.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, ClassVar

import httpx
from locust import User, constant, tag, task
from locust.exception import StopUser
from postgrest.exceptions import APIError
from supabase_auth.errors import AuthError

from harness import writes
from harness.actors import Device, rows_of
from harness.apps import APPS
from harness.clock import parse_wall
from harness.load.judging import LOAD_DECLARATION
from harness.load.plugin import COORDINATOR, mark, read_mark
from harness.load.tally import Stream, Watch
from harness.phoenix import SUPABASE_JS_POLICY, ChannelState, Closed, Message, Reply
from harness.phoenix.sync import ConnectError, SyncPhoenix
from harness.probes import topic
from harness.records import ProbeInfo, SubInfo
from harness.targets import Target

__all__ = ["PublisherUser", "SubscriberUser"]

_numbers = itertools.count()
MARKED = {"orders": "notes", "products": "description"}  # the column each write carries its mark in


def _yield() -> None:
    """Under gevent's monkey patching a yield to the hub: other sockets read (and stamp) before this one parses."""
    time.sleep(0)


class PublisherUser(User):
    abstract = True
    role: ClassVar[str] = "customer"
    kind: ClassVar[str] = ""
    fixed_count = 1
    wait_time = constant(0)

    def on_start(self) -> None:
        c = COORDINATOR
        world = c.wait_world()
        n = next(_numbers)
        self.member = world.pick(self.role, n)
        self.pub = f"{c.node}-{type(self).__name__}-{n}"
        target = Target("url", world.url, world.anon_key, "")
        self.device = Device(target, self.pub, self.member.email, self.member.password, self.member.uid)
        t0 = time.perf_counter_ns()
        try:
            self.device.login()
        except (AuthError, httpx.HTTPError) as e:
            self._fire("sign_in", t0, e)
            raise StopUser() from e
        self._fire("sign_in", t0, None)
        table, type_, group, facts = self.stream_of(world, n)
        self.stream = c.tally.stream(Stream(self.pub, self.kind, table, type_, group, facts))
        self.period_ns = int(1e9 / world.rate)
        self.next_ns = time.perf_counter_ns() + (n % 10) * self.period_ns // 10  # publishers spread over a period

    def stream_of(self, world: Any, n: int) -> tuple[str, str, str, dict[str, Any]]:
        raise NotImplementedError

    def write(self, world: Any, seq: int, note: str) -> Any:
        raise NotImplementedError

    def _fire(self, name: str, t0: int, exc: BaseException | None) -> None:
        self.environment.events.request.fire(request_type="REST", name=name, response_time=(time.perf_counter_ns()
                                             - t0) / 1e6, response_length=0, exception=exc, context={})

    @tag("publish")
    @task
    def publish(self) -> None:
        c = COORDINATOR
        if c.stopping.is_set():  # the run ends: subscribers listen on for the settle window, nothing more is written
            time.sleep(0.2)
            return
        intended = self.next_ns
        self.next_ns += self.period_ns
        wait = (intended - time.perf_counter_ns()) / 1e9
        if wait > 0:
            time.sleep(wait)
        s = self.stream
        seq = len(s.sent) + 1
        world = c.wait_world()
        note = mark(world.run_id, self.pub, seq, c.clock.wall_of(intended), s.group)
        s.sent.append(c.clock.wall_of(time.perf_counter_ns()))
        exc: BaseException | None = None
        try:
            result = self.write(world, seq, note)
            if not rows_of(getattr(result, "data", None)):
                raise APIError({"message": "the write returned no rows (hidden by RLS, or missing)", "code": "no_rows"})
        except (APIError, AuthError) as e:
            exc = e
            s.failed += 1
            s.bad.add(seq)
        except (httpx.HTTPError, ConnectionError, TimeoutError) as e:
            exc = e
            s.unknown += 1
            s.bad.add(seq)
        if exc is not None and len(s.errors) < 5:
            s.errors.append(f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"[:200])
        # Locust's stats: from the intended time, as our histograms count (a late start is the server's doing)
        self.environment.events.request.fire(request_type="REST", name=self.kind,
                                             response_time=(time.perf_counter_ns() - intended) / 1e6,
                                             response_length=0, exception=exc, context={})

    def on_stop(self) -> None:
        if hasattr(self, "device"):
            self.device.close()


class CustomerOrders(PublisherUser):
    """A customer places orders at one shop (000 §5.1 Order Flow)."""

    abstract = True
    role = "customer"
    kind = "place_order"

    def stream_of(self, world: Any, n: int) -> tuple[str, str, str, dict[str, Any]]:
        vendors = sorted(m.name for m in world.members.values() if m.role == "vendor")
        self.vendor_id = world.vendor_of(vendors[n % len(vendors)])
        return "orders", "INSERT", "order_visible", {"user_id": self.member.uid, "vendor_id": self.vendor_id}

    def write(self, world: Any, seq: int, note: str) -> Any:
        return writes.place_order(self.device.client, self.member.uid, self.vendor_id, 7.5, note)


class VendorStatus(PublisherUser):
    """A vendor moves its shop's order from status to status (000 §5.1 Status Update)."""

    abstract = True
    role = "vendor"
    kind = "set_status"

    def stream_of(self, world: Any, n: int) -> tuple[str, str, str, dict[str, Any]]:
        o = world.orders[self.member.name]
        self.order_id = o["id"]
        return "orders", "UPDATE", "status_update", {"user_id": world.members[o["customer"]].uid,
                                                     "vendor_id": self.member.vendor_id}

    def write(self, world: Any, seq: int, note: str) -> Any:
        return writes.set_status(self.device.client, self.order_id, writes.STATUSES[seq % len(writes.STATUSES)], note)


class AdminProducts(PublisherUser):
    """An admin edits a product (000 §3.2): every catalogue, the shop's portal and the dashboards see it."""

    abstract = True
    role = "admin"
    kind = "update_product"

    def stream_of(self, world: Any, n: int) -> tuple[str, str, str, dict[str, Any]]:
        vendors = sorted(world.products)
        vname = vendors[n % len(vendors)]
        self.product_id = world.products[vname][0]
        return "products", "UPDATE", "realtime", {"vendor_id": world.vendor_of(vname), "id": self.product_id}

    def write(self, world: Any, seq: int, note: str) -> Any:
        return writes.update_product(self.device.client, self.product_id, {"description": note})


class SubscriberUser(User):
    abstract = True
    app: ClassVar[str] = "customer-app"
    role: ClassVar[str] = "customer"
    screens: ClassVar[tuple[str, ...]] = ()
    wait_time = constant(0)

    def on_start(self) -> None:
        c = COORDINATOR
        world = self.world = c.wait_world()
        n = next(_numbers)
        m = world.pick(self.role, n)
        sid = f"{c.node}-{type(self).__name__}-{n}"
        c.subscribers.append(self)
        self.w = c.tally.watch(Watch(sid, self.app, m.name, self.screens, m.viewer()))
        app = APPS[self.app]
        from harness.apps import ProbeSpec, Viewer

        viewer = Viewer(m.uid, m.role, m.vendor_id)  # type: ignore[arg-type]
        subs = LOAD_DECLARATION.subs(ProbeSpec(sid, self.app, m.name, self.screens, twin=False))
        self.info = ProbeInfo(name=sid, app=self.app, user=m.name, flavour="ours", presence=app.presence,
                              topics=app.topics,
                              private_topics=tuple(t for t in app.topics if t in LOAD_DECLARATION.private_topics),
                              subs=tuple(SubInfo(table=s.table, filter=s.filter_for(viewer),
                                                                     event=s.event) for s in subs))
        self.pg = {topic(name) for name, _ in self.info.pg_channels()}
        self.w.channels = len(self.info.topics_joined())
        self.live: set[str] = set()
        self.dropped_at: int | None = None  # perf ns when the socket went (until every channel is live again)
        self.calm_from = 0  # deliveries before this (perf ns) are judged by completeness only
        self.raw: list[tuple[str, int]] = []
        url = f"{world.realtime_url}?apikey={world.anon_key}&vsn=1.0.0"
        self.client = SyncPhoenix(url, policy=SUPABASE_JS_POLICY, on_event=self._on_event, on_state=self._on_state,
                                  after_stamp=_yield)
        t0 = time.perf_counter_ns()
        try:
            self.client.connect(timeout=15)
            for name, s in self.info.pg_channels():
                pg: dict[str, Any] = {"event": s.event, "schema": "public", "table": s.table}
                if s.filter:
                    pg["filter"] = s.filter
                self._join(topic(name), {"config": {"postgres_changes": [pg]}, "access_token": m.token})
            if self.info.presence:
                self._join(topic(self.info.presence), {"config": {"presence": {"key": sid, "enabled": True}},
                                                       "access_token": m.token})
            for name in self.info.topics:  # as the apps join them: private channels where declared
                self._join(topic(name), {"config": {"private": name in self.info.private_topics},
                                         "access_token": m.token})
            end = time.monotonic() + 30
            while self.live < self.pg and time.monotonic() < end:
                self.client.poll(0.1)
        except (ConnectError, ConnectionError, OSError) as e:
            self.w.error = f"{type(e).__name__}: {e}"[:200]
            self._fire("join", t0, e)
            raise StopUser() from e
        if self.live < self.pg:
            e2 = TimeoutError(f"{len(self.pg - self.live)} of {len(self.pg)} channels not live in 30 s")
            self.w.error = str(e2)
            self._fire("join", t0, e2)
            raise StopUser()
        self.w.live_ns = c.clock.wall_of(time.perf_counter_ns())
        self._fire("join", t0, None)

    def _join(self, name: str, payload: dict[str, Any]) -> None:
        self.w.joins += 1
        self.client.send_join(name, payload)

    def _fire(self, name: str, t0: int, exc: BaseException | None) -> None:
        self.environment.events.request.fire(request_type="WS", name=name, response_time=(time.perf_counter_ns()
                                             - t0) / 1e6, response_length=0, exception=exc, context={})

    def _on_state(self, state: str, t: int) -> None:
        if state in ("closed", "heartbeat_timeout") and self.dropped_at is None and self.w.live_ns:
            self.dropped_at = t
            self.live = set()
        elif state == "open" and self.dropped_at is not None:  # the transport rejoins every channel it had
            self.w.joins += sum(1 for ch in self.client.proto.channels.values() if ch.state != ChannelState.CLOSED)

    def _on_event(self, ev: Reply | Message | Closed, t: int) -> None:
        w = self.w
        if isinstance(ev, Reply):
            if ev.kind == "join":
                if ev.status != "ok":
                    self._fire_at("join", 0, RuntimeError(f"join {ev.topic} refused: {ev.response}"))
                elif ev.topic not in self.pg:
                    w.joined += 1
            return
        if not isinstance(ev, Message):
            return
        p = ev.payload if isinstance(ev.payload, dict) else {}
        if ev.event == "system":
            if p.get("extension") == "postgres_changes" and ev.topic in self.pg:
                if p.get("status") == "ok":
                    w.joined += 1
                    self.live.add(ev.topic)
                    if self.dropped_at is not None and self.live >= self.pg:  # back: every channel live again
                        COORDINATOR.tally.book.record_ns("*", "reconnect", t - self.dropped_at)
                        w.reconnects += 1
                        self.dropped_at = None
                        self.calm_from = t + 1_000_000_000
                else:
                    self._fire_at("join", 0, RuntimeError(f"postgres_changes refused on {ev.topic}: {p.get('message')}"))
            return
        if ev.event != "postgres_changes":
            return
        d = p.get("data") if isinstance(p.get("data"), dict) else {}
        assert isinstance(d, dict)
        rec = d.get("record") if isinstance(d.get("record"), dict) else {}
        assert isinstance(rec, dict)
        col = MARKED.get(str(d.get("table")))
        got = read_mark(rec.get(col) if col else None, self.world.run_id)
        if got is None:
            w.foreign += 1
            return
        pub, seq, intended, group = got
        c = COORDINATOR
        seen = w.seen.get(pub)
        if seen is None:
            from harness.load.seqset import SeqSet

            seen = w.seen[pub] = SeqSet()
        seen.add(seq)
        wall = c.clock.wall_of(t)
        w2d = wall - intended
        if self.dropped_at is not None or t < self.calm_from:
            group = f"{group}~recovering"  # during a reconnect: completeness judges it, the latency criteria do not
        book = c.tally.book
        book.record_ns(group, "write_to_deliver", w2d)
        commit = d.get("commit_timestamp")
        if isinstance(commit, str):
            c2d = wall - (parse_wall(commit) - self.world.offset_ns)
            book.record_ns(group, "commit_to_deliver", c2d)
            if self.world.raw_samples:
                self.raw.append((f"{group}|commit_to_deliver", c2d))
        if self.world.raw_samples:
            self.raw.append((f"{group}|write_to_deliver", w2d))
        deadline = self.world.deadlines_ms.get(group)
        if deadline is not None and w2d / 1e6 > deadline:
            w.late[group] = w.late.get(group, 0) + 1
        self.environment.events.request.fire(request_type="WS", name=f"deliver:{group}", response_time=w2d / 1e6,
                                             response_length=0, exception=None, context={})

    def _fire_at(self, name: str, ms: float, exc: BaseException | None) -> None:
        self.environment.events.request.fire(request_type="WS", name=name, response_time=ms, response_length=0,
                                             exception=exc, context={})

    @tag("subscribe")
    @task
    def listen(self) -> None:
        self.client.poll(0.5)
        self.w.stamps_kernel, self.w.stamps_read = self.client.stamped["kernel"], self.client.stamped["read"]

    def finish(self) -> None:
        """Stop listening: the end of its window, and how many of its channels are still joined."""
        if self.w.end_ns:
            return
        self.w.end_ns = COORDINATOR.clock.wall_of(time.perf_counter_ns())
        ch = self.client.proto.channels
        self.w.held = sum(1 for c in ch.values() if c.state == ChannelState.JOINED)
        if self.raw:
            path = Path(self.world.raw_samples) / f"{self.w.sid}.txt"
            path.write_text("".join(f"{k} {v}\n" for k, v in self.raw))
            self.raw = []

    def on_stop(self) -> None:
        if hasattr(self, "client"):
            self.finish()
            self.client.close()

