"""Probes: subscribers that listen exactly as each app does, and write what they see to the history.

Our own asyncio Phoenix client (``harness.phoenix``): cheap and precise. Every frame is stamped
on arrival on the run's clock; a probe counts as live only after the server's postgres_changes
"system ok" for every channel (realtime-js#525: SUBSCRIBED alone is too early).
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass, field
from typing import Any

from harness.clock import parse_wall
from harness.phoenix import AsyncPhoenix, Closed, Message, ReconnectPolicy, Reply
from harness.run import Run

__all__ = ["ANNOUNCEMENTS", "Probe", "Sub", "quiet_heap"]

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
    client: AsyncPhoenix | None = None
    live: dict[str, asyncio.Event] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def _on_event(self, ev: Reply | Message | Closed, t: int) -> None:
        h = self.run.history
        if isinstance(ev, Message):
            if ev.event == "postgres_changes" and isinstance(ev.payload, dict):
                d = ev.payload.get("data") or {}
                commit = d.get("commit_timestamp")
                h.obs(self.name, "change", t=t, channel=ev.topic, table=d.get("table"), type=d.get("type"),
                      record=d.get("record"), old_record=d.get("old_record"),
                      commit_ns=parse_wall(commit) if isinstance(commit, str) else None)
            elif ev.event == "broadcast" and isinstance(ev.payload, dict):
                h.obs(self.name, "change", t=t, channel=ev.topic, table=f"broadcast:{ev.payload.get('event')}",
                      type="BROADCAST", record=ev.payload.get("payload") if isinstance(ev.payload.get("payload"), dict)
                      else {})
            elif ev.event == "system" and isinstance(ev.payload, dict):
                h.obs(self.name, "system", t=t, channel=ev.topic, status=ev.payload.get("status"),
                      message=ev.payload.get("message"))
                if ev.payload.get("extension") == "postgres_changes":
                    if ev.payload.get("status") != "ok":
                        # the app would carry on without these events: so do we, and the checkers notice
                        self.errors.append(f"{ev.topic}: {ev.payload.get('message')}")
                        h.obs(self.name, "subscription_error", t=t, channel=ev.topic, message=ev.payload.get("message"))
                    self.live.setdefault(ev.topic, asyncio.Event()).set()
        elif isinstance(ev, Closed):
            h.obs(self.name, "closed", t=t, channel=ev.topic, reason=ev.reason)

    def _on_state(self, state: str, t: int) -> None:
        self.run.history.obs(self.name, "state", t=t, state=state)

    async def start(self, timeout: float = 15.0) -> None:
        url = f"{self.url or self.run.target.realtime_url}?apikey={self.run.target.anon_key}&vsn=1.0.0"
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
