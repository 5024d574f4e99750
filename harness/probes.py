"""Probes: subscribers that listen exactly as each app does, and write what they see to the history.

Two flavours, stamping on one clock and writing the same records:

* ``Probe``: our own asyncio Phoenix client (``harness.phoenix``): cheap and precise, thousands
  per process (``bench/probe_capacity.py``). Every frame is stamped on arrival.
* ``JsProbes``: supabase-js, unchanged, under Node (``harness/js/probes.mjs``), what the apps
  really run. Node stamps with ``process.hrtime``, which reads CLOCK_MONOTONIC like Python's
  ``perf_counter_ns``; the handshake checks that before any stamp is used.

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
from pathlib import Path
from typing import Any

from harness.clock import parse_wall
from harness.history import History
from harness.phoenix import AsyncPhoenix, Closed, Message, ReconnectPolicy, Reply
from harness.run import Run

__all__ = ["ANNOUNCEMENTS", "JsProbes", "Probe", "Sub", "quiet_heap"]

ANNOUNCEMENTS = "platform-announcements"


def quiet_heap() -> None:
    """Keep the garbage collector from stalling the probes' loop once they are live.

    Everything built so far (clients, protocol state, run objects) lives until the run ends, yet
    each full collection walks it again: with hundreds of probes that is a 1-4 ms stall, during
    which arriving frames wait to be stamped. ``gc.freeze()`` moves those objects out of the
    collector's sight; what is created afterwards is still collected as usual.
    """
    gc.collect()
    gc.freeze()


def record_change(h: History, probe: str, t: int, channel: str, table: Any, type_: Any, record: Any,
                  old_record: Any = None, commit: Any = None) -> None:
    """One delivered change or broadcast, the same record whichever flavour saw it."""
    h.obs(probe, "change", t=t, channel=channel, table=table, type=type_, record=record, old_record=old_record,
          commit_ns=parse_wall(commit) if isinstance(commit, str) else None)


def record_presence(h: History, probe: str, t: int, channel: str, kind: str, key: Any, meta: Any) -> None:
    """Someone came online (``join``) or left (``leave``) a presence channel: ``presence:join`` / ``presence:leave``."""
    fields = {k: v for k, v in meta.items() if k not in ("phx_ref", "phx_ref_prev", "presence_ref")} \
        if isinstance(meta, dict) else {}
    record_change(h, probe, t, channel, f"presence:{kind}", "PRESENCE", {**fields, "key": str(key)})


def record_system(p: Probe, t: int, channel: str, status: Any, message: Any, extension: Any) -> None:
    """A server ``system`` message; postgres_changes ok (or refused) makes that channel live."""
    p.run.history.obs(p.name, "system", t=t, channel=channel, status=status, message=message)
    if extension == "postgres_changes":
        if status != "ok":
            # the app would carry on without these events: so do we, and the checkers notice
            p.errors.append(f"{channel}: {message}")
            p.run.history.obs(p.name, "subscription_error", t=t, channel=channel, message=message)
        p.live.setdefault(channel, asyncio.Event()).set()


@dataclass(frozen=True)
class Sub:
    table: str
    filter: str | None = None
    event: str = "*"


@dataclass
class Probe:
    run: Run
    name: str
    token: str
    subs: list[Sub]
    broadcasts: bool = True
    topics: list[str] = field(default_factory=list)  # further broadcast topics, beside the announcements
    url: str | None = None  # the target's realtime endpoint unless given
    presence: str | None = None  # a presence channel to watch (who comes online and leaves)
    client: AsyncPhoenix | None = None
    live: dict[str, asyncio.Event] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def _on_event(self, ev: Reply | Message | Closed, t: int) -> None:
        h = self.run.history
        if isinstance(ev, Message):
            if ev.event == "postgres_changes" and isinstance(ev.payload, dict):
                d = ev.payload.get("data") or {}
                record_change(h, self.name, t, ev.topic, d.get("table"), d.get("type"), d.get("record"),
                              d.get("old_record"), d.get("commit_timestamp"))
            elif ev.event == "broadcast" and isinstance(ev.payload, dict):
                inner = ev.payload.get("payload")
                record_change(h, self.name, t, ev.topic, f"broadcast:{ev.payload.get('event')}", "BROADCAST",
                              inner if isinstance(inner, dict) else {})
            elif ev.event == "presence_diff" and isinstance(ev.payload, dict):
                for kind in ("joins", "leaves"):
                    entries = ev.payload.get(kind)
                    for key, entry in (entries.items() if isinstance(entries, dict) else ()):
                        metas = entry.get("metas") if isinstance(entry, dict) else None
                        record_presence(h, self.name, t, ev.topic, kind[:-1], key,
                                        metas[0] if isinstance(metas, list) and metas else {})
            elif ev.event == "system" and isinstance(ev.payload, dict):
                record_system(self, t, ev.topic, ev.payload.get("status"), ev.payload.get("message"),
                              ev.payload.get("extension"))
        elif isinstance(ev, Closed):
            h.obs(self.name, "closed", t=t, channel=ev.topic, reason=ev.reason)

    def _on_state(self, state: str, t: int) -> None:
        self.run.history.obs(self.name, "state", t=t, state=state)

    async def start(self, timeout: float = 15.0) -> None:
        url = f"{self.url}?apikey={self.run.target.anon_key}&vsn=1.0.0" if self.url else self.run.target.socket_url
        self.client = AsyncPhoenix(url, on_event=self._on_event, on_state=self._on_state,
                                   now=self.run.clock.now, policy=ReconnectPolicy())
        await self.client.connect(timeout)
        for i, s in enumerate(self.subs):
            topic = f"realtime:{self.name}:{s.table}:{i}"
            pg: dict[str, Any] = {"event": s.event, "schema": "public", "table": s.table}
            if s.filter:
                pg["filter"] = s.filter
            self.live[topic] = asyncio.Event()
            rep = await self.client.join(topic, {"config": {"postgres_changes": [pg]}, "access_token": self.token})
            if rep.status != "ok":
                raise RuntimeError(f"probe {self.name}: join {s.table} refused: {rep.response}")
        if self.presence:
            rep = await self.client.join(f"realtime:{self.presence}", {
                "config": {"presence": {"key": self.name, "enabled": True}}, "access_token": self.token})
            if rep.status != "ok":
                raise RuntimeError(f"probe {self.name}: join {self.presence} refused: {rep.response}")
        for name in ([ANNOUNCEMENTS] if self.broadcasts else []) + self.topics:
            rep = await self.client.join(f"realtime:{name}", {"config": {}, "access_token": self.token})
            if rep.status != "ok":
                raise RuntimeError(f"probe {self.name}: join {name} refused: {rep.response}")
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.live.values())), timeout)
        except TimeoutError as e:
            raise RuntimeError(f"probe {self.name}: subscriptions not live in {timeout:.0f}s: {self.errors}") from e
        self.run.history.obs(self.name, "live", channels=len(self.live), errors=self.errors)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()


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

    async def start(self, timeout: float = 20.0) -> None:
        why = self.unavailable()
        if why:
            raise RuntimeError(why)
        log = (self.run.dir / "node-probes.log").open("ab")
        t0 = time.perf_counter_ns()
        self.proc = await asyncio.create_subprocess_exec(
            "node", str(JS_PROBES), cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=log, limit=16 * 1024 * 1024)
        log.close()
        assert self.proc.stdout is not None and self.proc.stdin is not None
        hello = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), timeout) or b"{}")
        t1 = time.perf_counter_ns()
        t_node = int(hello.get("t", -1))
        if not t0 <= t_node <= t1:  # Node's stamp must fall between ours, or the two clocks differ
            raise RuntimeError(f"Node's hrtime ({t_node}) is not on perf_counter's clock ({t0}..{t1})")
        self.run.history.meta(js_probes={"node": hello.get("node"), "probes": sorted(self.probes),
                                         "clock_check_ns": [t0, t_node, t1]})
        for p in self.probes.values():
            for i, s in enumerate(p.subs):
                p.live[f"realtime:{p.name}:{s.table}:{i}"] = asyncio.Event()
            for topic in ([ANNOUNCEMENTS] if p.broadcasts else []) + p.topics + ([p.presence] if p.presence else []):
                self.subscribed[(p.name, f"realtime:{topic}")] = asyncio.Event()
        cfg = {"url": self.run.target.url, "anonKey": self.run.target.anon_key, "probes": [
            {"name": p.name, "token": p.token, "subs": [s.__dict__ for s in p.subs], "presence": p.presence,
             "topics": ([ANNOUNCEMENTS] if p.broadcasts else []) + p.topics} for p in self.probes.values()]}
        self.proc.stdin.write((json.dumps(cfg) + "\n").encode())
        await self.proc.stdin.drain()
        self._reader = asyncio.get_running_loop().create_task(self._read(self.proc.stdout))
        waits = [e.wait() for p in self.probes.values() for e in p.live.values()]
        waits += [e.wait() for e in self.subscribed.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError as e:
            raise RuntimeError(f"supabase-js probes not live in {timeout:.0f}s: {self.failures[:3]}") from e
        if self.failures:
            raise RuntimeError(f"supabase-js probes: {'; '.join(self.failures[:3])}")
        for p in self.probes.values():
            self.run.history.obs(p.name, "live", channels=len(p.live) + sum(1 for k in self.subscribed
                                                                            if k[0] == p.name), errors=p.errors)

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        origin, h = self.run.clock.mono_origin, self.run.history
        while line := await stdout.readline():
            try:
                o = json.loads(line)
                t = int(o["t"]) - origin
            except (ValueError, KeyError, TypeError):
                continue
            p = self.probes.get(o.get("probe", ""))
            ev = o.get("ev")
            if ev == "error" or p is None:
                self.failures.append(str(o.get("message")))
                h.obs("supabase-js", "error", t=t, message=o.get("message"))
                continue
            ch = str(o.get("channel"))
            if ev == "change":
                record_change(h, p.name, t, ch, o.get("table"), o.get("type"), o.get("record"),
                              o.get("old_record"), o.get("commit_timestamp"))
            elif ev == "presence":
                record_presence(h, p.name, t, ch, str(o.get("kind")), o.get("key"), o.get("meta"))
            elif ev == "system":
                record_system(p, t, ch, o.get("status"), o.get("message"), o.get("extension"))
            elif ev == "status":
                h.obs(p.name, "state", t=t, channel=ch, state=o.get("status"), error=o.get("error"))
                if o.get("status") in ("CHANNEL_ERROR", "TIMED_OUT"):
                    self.failures.append(f"{p.name} {ch}: {o.get('status')} {o.get('error') or ''}".strip())
                    for e in [*p.live.values(), *(v for k, v in self.subscribed.items() if k[0] == p.name)]:
                        e.set()  # do not wait out the timeout for a channel that will not come
                elif o.get("status") == "SUBSCRIBED" and (p.name, ch) in self.subscribed:
                    self.subscribed[(p.name, ch)].set()
        if not self._stopping:  # Node went away mid-run: its twins' misses must not look like the server's
            code = await self.proc.wait() if self.proc is not None else None
            self.failures.append(f"node exited with code {code}")
            for p in self.probes.values():
                h.obs(p.name, "closed", reason=f"supabase-js process exited with code {code}")

    async def stop(self) -> None:
        self._stopping = True
        if self.proc is None:
            return
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
