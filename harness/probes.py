"""Probes: subscribers that listen exactly as each app does, and write what they see to the history.

Two flavours, stamping on one clock and writing the same records (``harness/records.py``):

* ``Probe``: our own asyncio Phoenix client (``harness.phoenix``): cheap and precise, thousands
  per process (``bench/probe_capacity.py``). Every frame is stamped on arrival.
* ``JsProbes``: supabase-js, unchanged, under Node (``harness/js/probes.mjs``), what the apps
  really run. Node stamps with ``process.hrtime``, which reads CLOCK_MONOTONIC like Python's
  ``perf_counter_ns``; the handshake checks that before any stamp is used.

What a probe subscribes to is a ``ProbeInfo`` built from the apps' declaration (``harness/apps.py``);
the channel names come from ``channels`` here, for both flavours (Node is told them).

A probe counts as live only after the server's postgres_changes "system ok" for every channel
(realtime-js#525: SUBSCRIBED alone is too early).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from harness.clock import parse_wall
from harness.history import History
from harness.phoenix import AsyncPhoenix, Closed, Message, ReconnectPolicy, Reply
from harness.records import (
    Broadcast,
    Change,
    ChannelClosed,
    ConnState,
    JoinAttempt,
    JsProbesStarted,
    Presence,
    ProbeError,
    ProbeInfo,
    ProbeLive,
    Refetch,
    SubInfo,
    SubscriptionError,
    System,
)
from harness.run import Run

__all__ = ["JsProbes", "Probe", "ProbeFailure", "channels", "quiet_heap", "topic"]


class ProbeFailure(RuntimeError):
    """A probe could not subscribe as its app does (refused, never live, Node gone): a failure of the
    target or of the client under test, judged as NO-GO."""


def topic(name: str) -> str:
    """A channel's topic on the wire (supabase-js's ``channel(name)`` adds the same prefix)."""
    return f"realtime:{name}"


def channels(info: ProbeInfo) -> list[tuple[str, SubInfo]]:
    """The probe's postgres_changes channels, one per subscription: (name, subscription)."""
    return list(info.pg_channels())


def quiet_heap() -> None:
    """Keep the garbage collector from stalling the probes' loop once they are live.

    Everything built so far (clients, protocol state, run objects) lives until the run ends, yet
    each full collection walks it again: with hundreds of probes that is a 1-4 ms stall, during
    which arriving frames wait to be stamped. ``gc.freeze()`` moves those objects out of the
    collector's sight; what is created afterwards is still collected as usual.
    """
    gc.collect()
    gc.freeze()


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


def record_change(h: History, probe: str, t: int, channel: str, table: Any, type_: Any, record: Any,
                  old_record: Any = None, commit: Any = None, screen_t: int | None = None,
                  frame_t: int | None = None) -> None:
    """One delivered postgres change, the same record whichever flavour saw it (a browser probe's with the times
    it was shown and painted)."""
    h.append(Change(probe=probe, t=t, channel=channel, table=str(table), type=str(type_).upper(),
                    record=record if isinstance(record, dict) else None,
                    old_record=old_record if isinstance(old_record, dict) and old_record else None,
                    commit_ns=parse_wall(commit) if isinstance(commit, str) else None, screen_t=screen_t,
                    frame_t=frame_t))


def record_broadcast(h: History, probe: str, t: int, channel: str, event: Any, payload: Any) -> None:
    h.append(Broadcast(probe=probe, t=t, channel=channel, event=str(event), payload=_dict(payload)))


def record_presence(h: History, probe: str, t: int, channel: str, kind: str, key: Any, meta: Any) -> None:
    """Someone came online (``join``) or left (``leave``) a presence channel."""
    fields = {k: v for k, v in _dict(meta).items() if k not in ("phx_ref", "phx_ref_prev", "presence_ref")}
    h.append(Presence(probe=probe, t=t, channel=channel, event="join" if kind == "join" else "leave", key=str(key),
                      meta=fields))


REFETCH_RETRY_S = (0.5, 1.0)  # pauses before a failed refetch's 2nd and 3rd try (React Query retries a failed query 3 times)


@dataclass
class Probe:
    """One app instance's subscriptions, through our client. After a reconnect it does what the apps do:
    rejoins every channel (the client's own ``rejoin_all``), and once every postgres_changes channel is live
    again, refetches over REST the rows of its subscriptions changed since it last heard from the server
    (``Refetch``), because Supabase Realtime replays nothing it missed. A refetch that fails (the network cut it)
    is tried again, as the apps' query layer does (``REFETCH_RETRY_S``); a table whose refetch still failed keeps
    its "changed since" for the next one, so a gap is closed by a later refetch or stays a loss, never skipped."""

    run: Run
    info: ProbeInfo
    token: str
    url: str | None = None  # the realtime endpoint (a fault proxy's, say) unless the target's
    rest_url: str | None = None  # the API base its refetches go to (through the same proxy) unless the target's
    server_offset_ns: int = 0  # the server's wall clock minus ours, for the refetch's "changed since"
    client: AsyncPhoenix | None = None
    live: dict[str, asyncio.Event] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    refetch_margin_s: float = 2.0
    _joining: set[str] = field(default_factory=set)
    _opened: int = 0
    _last_rx: int = 0
    _since: int | None = None  # set while a reconnect waits to refetch: the run time it last heard the server
    # (table, filter) -> the "since" (server wall ns) of a refetch that failed every try
    _unrecovered: dict[tuple[str, str | None], int] = field(default_factory=dict)
    _ready: set[str] = field(default_factory=set)
    _http: httpx.AsyncClient | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    dropped_t: int | None = None  # when its socket last went (run clock)
    refetched_t: int | None = None  # when its last refetch after a reconnect finished

    def recovered(self, since: int) -> bool:
        """Back to normal after ``since``: its socket never went since then, or it refetched after it came back."""
        if self.dropped_t is None or self.dropped_t < since:
            return True
        return self.refetched_t is not None and self.refetched_t > self.dropped_t

    @property
    def name(self) -> str:
        return self.info.name

    def on_system(self, t: int, channel: str, status: Any, message: Any, extension: Any) -> None:
        """A server ``system`` message; postgres_changes ok (or refused) makes that channel live."""
        h = self.run.history
        h.append(System(probe=self.name, t=t, channel=channel, status=_text(status), message=_text(message),
                        extension=_text(extension)))
        if extension == "postgres_changes":
            if status != "ok":
                # the app would carry on without these events: so do we, and the checkers notice
                self.errors.append(f"{channel}: {message}")
                h.append(SubscriptionError(probe=self.name, t=t, channel=channel, message=_text(message)))
            self.live.setdefault(channel, asyncio.Event()).set()
            if self._since is not None:
                self._ready.add(channel)
                if self._ready >= {topic(n) for n, _ in channels(self.info)}:
                    self._refetch_soon()

    def _on_event(self, ev: Reply | Message | Closed, t: int) -> None:
        h = self.run.history
        self._last_rx = t
        if isinstance(ev, Message):
            p = _dict(ev.payload)
            if ev.event == "postgres_changes":
                d = _dict(p.get("data"))
                record_change(h, self.name, t, ev.topic, d.get("table"), d.get("type"), d.get("record"),
                              d.get("old_record"), d.get("commit_timestamp"))
            elif ev.event == "broadcast":
                record_broadcast(h, self.name, t, ev.topic, p.get("event"), p.get("payload"))
            elif ev.event == "presence_diff":
                for kind in ("joins", "leaves"):
                    for key, entry in _dict(p.get(kind)).items():
                        metas = _dict(entry).get("metas")
                        record_presence(h, self.name, t, ev.topic, kind[:-1], key,
                                        metas[0] if isinstance(metas, list) and metas else {})
            elif ev.event == "system":
                self.on_system(t, ev.topic, p.get("status"), p.get("message"), p.get("extension"))
        elif isinstance(ev, Reply) and ev.kind == "join":
            self._joining.discard(ev.topic)
            h.append(JoinAttempt(probe=self.name, t=t, channel=ev.topic, outcome="ok" if ev.status == "ok" else "error",
                                 detail=None if ev.status == "ok" else _text(ev.response.get("reason"))))
        elif isinstance(ev, Closed):
            h.append(ChannelClosed(probe=self.name, t=t, channel=ev.topic, reason=ev.reason))

    def _on_state(self, state: str, t: int) -> None:
        self.run.history.append(ConnState(probe=self.name, t=t, state=state))
        if state == "open":
            self._opened += 1
            if self._opened > 1:  # a reconnect: the client rejoins every channel it had
                self._joining = set(self.info.topics_joined())
                self._ready = set()
                if self._since is None:
                    self._since = self._last_rx
        elif state in ("closed", "heartbeat_timeout"):
            self.dropped_t = t
            for channel in sorted(self._joining):  # joins the socket took with it
                self.run.history.append(JoinAttempt(probe=self.name, t=t, channel=channel, outcome="lost"))
            self._joining = set()
            if self._opened and self._since is None:
                self._since = self._last_rx

    def _refetch_soon(self) -> None:
        since, self._since = self._since, None
        if since is None or self._http is None:
            return
        task = asyncio.get_running_loop().create_task(self.refetch(since))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refetch(self, since_t: int) -> None:
        """Read back, as the app does after it rejoined, each subscribed table's rows changed since ``since_t``
        (run clock; less a margin, on the server's clock), with the app's own filters and token."""
        assert self._http is not None
        wall = self.run.clock.wall_origin + since_t - int(self.refetch_margin_s * 1e9) + self.server_offset_ns
        for s in self.info.subs:
            key = (s.table, s.filter)
            since = min(wall, self._unrecovered.get(key, wall))
            iso = datetime.fromtimestamp(since / 1e9, UTC).isoformat()
            params = {"select": "*", s.changed_at: f"gte.{iso}", "limit": "1000"}
            if s.filter:
                col, _, cond = s.filter.partition("=")
                params[col] = cond
            for attempt, pause in enumerate((*REFETCH_RETRY_S, None)):
                rows, error = await self._read_back(s.table, params)
                if error is not None and attempt:
                    error = f"{error} (try {attempt + 1})"
                self.run.history.append(Refetch(probe=self.name, table=s.table, since_ns=since, rows=rows,
                                                error=error))
                if error is None:
                    self._unrecovered.pop(key, None)
                    break
                if pause is None:
                    self._unrecovered[key] = since
                    break
                await asyncio.sleep(pause)
        self.refetched_t = self.run.clock.now()

    async def _read_back(self, table: str, params: dict[str, str]) -> tuple[tuple[dict[str, Any], ...], str | None]:
        """One REST read of a subscribed table: its rows, or why not."""
        assert self._http is not None
        try:
            r = await self._http.get(f"/rest/v1/{table}", params=params)
            body = r.json()
        except (httpx.HTTPError, ValueError) as e:
            return (), f"{type(e).__name__}: {e}"[:200]
        if r.status_code == 200 and isinstance(body, list):
            return tuple(x for x in body if isinstance(x, dict)), None
        return (), f"HTTP {r.status_code}"

    async def _join(self, name: str, config: dict[str, Any]) -> None:
        assert self.client is not None
        rep = await self.client.join(topic(name), {"config": config, "access_token": self.token})
        if rep.status != "ok":
            raise ProbeFailure(f"probe {self.name}: join {name} refused: {rep.response}")

    async def start(self, timeout: float = 15.0) -> None:
        url = f"{self.url}?apikey={self.run.target.anon_key}&vsn=1.0.0" if self.url else self.run.target.socket_url
        self._http = httpx.AsyncClient(base_url=self.rest_url or self.run.target.url, timeout=10, headers={
            "apikey": self.run.target.anon_key, "Authorization": f"Bearer {self.token}"})
        policy = ReconnectPolicy(heartbeat_s=self.info.heartbeat_s, backoff_s=self.info.backoff_s)
        self.client = AsyncPhoenix(url, on_event=self._on_event, on_state=self._on_state,
                                   now=self.run.clock.now, policy=policy)
        await self.client.connect(timeout)
        for name, s in channels(self.info):
            pg: dict[str, Any] = {"event": s.event, "schema": "public", "table": s.table}
            if s.filter:
                pg["filter"] = s.filter
            self.live[topic(name)] = asyncio.Event()
            await self._join(name, {"postgres_changes": [pg]})
        if self.info.presence:
            await self._join(self.info.presence, {"presence": {"key": self.name, "enabled": True}})
        for name in self.info.topics:
            await self._join(name, {"private": True} if name in self.info.private_topics else {})
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.live.values())), timeout)
        except TimeoutError as e:
            raise ProbeFailure(f"probe {self.name}: subscriptions not live in {timeout:.0f}s: {self.errors}") from e
        self.run.history.append(ProbeLive(probe=self.name, channels=len(self.live), errors=tuple(self.errors)))

    async def stop(self) -> None:
        if self.client is not None:
            # its own end: what the socket does from here on is not the target's doing
            self.run.history.append(ConnState(probe=self.name, state="stopping"))
            await self.client.close()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
        if self._http is not None:
            await self._http.aclose()


ROOT = Path(__file__).resolve().parent.parent
JS_PROBES = ROOT / "harness" / "js" / "probes.mjs"


class JsProbes:
    """Several probes in one Node process, each with its own supabase-js client (its own socket)."""

    def __init__(self, run: Run, probes: list[Probe]) -> None:
        self.run = run
        self.probes = {p.name: p for p in probes}
        self.subscribed: dict[tuple[str, str], asyncio.Event] = {}
        self.failures: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        self._refetches: dict[str, int] = {}  # per twin: refetch lines since its socket last went
        self._opened: dict[str, int] = {}  # per twin: when its socket last opened
        self._status_t: dict[tuple[str, str], int] = {}  # per twin and channel: when its last status came

    @staticmethod
    def unavailable() -> str | None:
        """Why supabase-js probes cannot run here, or None."""
        if shutil.which("node") is None:
            return "supabase-js probes need Node.js (node) on PATH"
        if not (ROOT / "node_modules" / "@supabase" / "supabase-js").is_dir():
            return f"supabase-js probes need the npm packages: run `npm ci --prefix {ROOT}` (bash .ci/setup does)"
        if "CLOCK_MONOTONIC" not in time.get_clock_info("perf_counter").implementation:
            return "supabase-js probes need perf_counter on CLOCK_MONOTONIC (Linux), the clock Node's hrtime reads"
        return None

    LOG = "node-probes.log"
    WHAT = "supabase-js probes"
    PROCESS = "supabase-js process"

    def command(self) -> list[str]:
        return ["node", str(JS_PROBES)]

    def started(self, hello: dict[str, Any], t0: int, t1: int) -> None:
        """The process said hello: check its clock is ours, record that it started."""
        t_node = int(hello.get("t", -1))
        if not t0 <= t_node <= t1:  # Node's stamp must fall between ours, or the two clocks differ
            raise RuntimeError(f"Node's hrtime ({t_node}) is not on perf_counter's clock ({t0}..{t1})")
        self.run.history.append(JsProbesStarted(node=str(hello.get("node")), probes=tuple(sorted(self.probes)),
                                                clock_check_ns=(t0, t_node, t1)))

    def probe_config(self, p: Probe) -> dict[str, Any]:
        """What the process is told of one probe: its token, channels and client policy."""
        subs = channels(p.info)
        return {"name": p.name, "token": p.token, "presence": p.info.presence, "topics": list(p.info.topics),
                "privateTopics": list(p.info.private_topics), "url": p.rest_url or self.run.target.url,
                "heartbeatMs": int(p.info.heartbeat_s * 1000),
                "backoffMs": [int(b * 1000) for b in p.info.backoff_s],
                "subs": [{"channel": name, "table": s.table, "filter": s.filter, "event": s.event,
                          "changed_at": s.changed_at} for name, s in subs]}

    def config(self) -> dict[str, Any]:
        offset = next((p.server_offset_ns for p in self.probes.values()), 0)
        return {"url": self.run.target.url, "anonKey": self.run.target.anon_key, "serverOffsetNs": offset,
                "probes": [self.probe_config(p) for p in self.probes.values()]}

    async def start(self, timeout: float = 20.0) -> None:
        why = self.unavailable()
        if why:
            raise ProbeFailure(why)
        log = (self.run.dir / self.LOG).open("ab")
        t0 = time.perf_counter_ns()
        self.proc = await asyncio.create_subprocess_exec(
            *self.command(), cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=log, limit=16 * 1024 * 1024)
        log.close()
        assert self.proc.stdout is not None and self.proc.stdin is not None
        hello = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), timeout) or b"{}")
        t1 = time.perf_counter_ns()
        self.started(hello, t0, t1)
        for p in self.probes.values():
            for name, _ in channels(p.info):
                p.live[topic(name)] = asyncio.Event()
            others = [*p.info.topics, *([p.info.presence] if p.info.presence else [])]
            for name in others:
                self.subscribed[(p.name, topic(name))] = asyncio.Event()
        self.proc.stdin.write((json.dumps(self.config()) + "\n").encode())
        await self.proc.stdin.drain()
        self._reader = asyncio.get_running_loop().create_task(self._read(self.proc.stdout))
        waits = [e.wait() for p in self.probes.values() for e in p.live.values()]
        waits += [e.wait() for e in self.subscribed.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError as e:
            raise ProbeFailure(f"{self.WHAT} not live in {timeout:.0f}s: {self.failures[:3]}") from e
        if self.failures:
            raise ProbeFailure(f"{self.WHAT}: {'; '.join(self.failures[:3])}")
        for p in self.probes.values():
            n = len(p.live) + sum(1 for k in self.subscribed if k[0] == p.name)
            self.run.history.append(ProbeLive(probe=p.name, channels=n, errors=tuple(p.errors)))

    def _line(self, o: dict[str, Any], t: int) -> None:
        h = self.run.history
        p = self.probes.get(str(o.get("probe", "")))
        ev = o.get("ev")
        if ev == "error" or p is None:
            self.failures.append(str(o.get("message")))
            h.append(ProbeError(probe=str(o.get("probe") or self.WHAT), t=t, message=str(o.get("message"))))
            return
        ch = str(o.get("channel"))
        if ev == "change":
            record_change(h, p.name, t, ch, o.get("table"), o.get("type"), o.get("record"), o.get("old_record"),
                          o.get("commit_timestamp"), self._stamp(o.get("screen")), self._stamp(o.get("frame")))
        elif ev == "broadcast":
            record_broadcast(h, p.name, t, ch, o.get("event"), o.get("payload"))
        elif ev == "presence":
            record_presence(h, p.name, t, ch, str(o.get("kind")), o.get("key"), o.get("meta"))
        elif ev == "system":
            p.on_system(t, ch, o.get("status"), o.get("message"), o.get("extension"))
        elif ev == "socket":
            state = str(o.get("state"))
            h.append(ConnState(probe=p.name, t=t, state=state))
            if state == "open":
                self._opened[p.name] = t
            if state in ("closed", "heartbeat_timeout"):
                p.dropped_t = t
                self._refetches[p.name] = 0
        elif ev == "refetch":
            self._refetches[p.name] = self._refetches.get(p.name, 0) + 1
            if self._refetches[p.name] >= len(p.info.subs):
                p.refetched_t = t
            rows = o.get("rows")
            h.append(Refetch(probe=p.name, t=t, table=str(o.get("table")), since_ns=int(o.get("since_ns") or 0),
                             rows=tuple(r for r in rows if isinstance(r, dict)) if isinstance(rows, list) else (),
                             error=_text(o.get("error"))))
        elif ev == "status":
            status = str(o.get("status"))
            h.append(ConnState(probe=p.name, t=t, channel=ch, state=status, error=_text(o.get("error"))))
            outcome = {"SUBSCRIBED": "ok", "CHANNEL_ERROR": "error", "TIMED_OUT": "timeout"}.get(status)
            # a join was in flight only if the socket (re)opened since this channel's last status: otherwise a
            # channel error is the socket going (closed, heartbeat timeout), not a refused join
            if self._opened.get(p.name, -1) < self._status_t.get((p.name, ch), -1) and outcome != "ok":
                outcome = None
            self._status_t[(p.name, ch)] = t
            if outcome is not None:
                h.append(JoinAttempt(probe=p.name, t=t, channel=ch, outcome=outcome,  # type: ignore[arg-type]
                                     detail=_text(o.get("error"))))
            if status in ("CHANNEL_ERROR", "TIMED_OUT"):
                self.failures.append(f"{p.name} {ch}: {status} {o.get('error') or ''}".strip())
                for e in [*p.live.values(), *(v for k, v in self.subscribed.items() if k[0] == p.name)]:
                    e.set()  # do not wait out the timeout for a channel that will not come
            elif status == "SUBSCRIBED" and (p.name, ch) in self.subscribed:
                self.subscribed[(p.name, ch)].set()

    def _stamp(self, v: Any) -> int | None:
        """A stamp of the process (ns on CLOCK_MONOTONIC, as text) on the run's clock; None if it has none."""
        try:
            return int(v) - self.run.clock.mono_origin if v is not None else None
        except (TypeError, ValueError):
            return None

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        origin = self.run.clock.mono_origin
        while line := await stdout.readline():
            try:
                o = json.loads(line)
                t = int(o["t"]) - origin
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(o, dict):
                self._line(o, t)
        if not self._stopping:  # Node went away mid-run: its twins' misses must not look like the server's
            code = await self.proc.wait() if self.proc is not None else None
            self.failures.append(f"{self.command()[0]} exited with code {code}")
            for e in [*(v for p in self.probes.values() for v in p.live.values()), *self.subscribed.values()]:
                e.set()  # a start still waiting gives up now, naming the failure, not after its timeout
            for p in self.probes.values():
                self.run.history.append(ChannelClosed(probe=p.name, reason=f"{self.PROCESS} exited with code {code}"))

    async def stop(self) -> None:
        self._stopping = True
        if self.proc is None:
            return
        for p in self.probes.values():
            self.run.history.append(ConnState(probe=p.name, state="stopping"))
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            await self.proc.stdin.drain()
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
