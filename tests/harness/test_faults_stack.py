"""Our Phoenix client through the fault proxy to the embedded stack: a reset is noticed at once and rejoined by
itself, a black hole only by the heartbeat and left after it ends; a stack fault is recorded with its start
and end, and refused for anything but the embedded stack."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness.faults import Blackhole, FaultProxy, FaultTargetError, Reset, StackFault, inject
from harness.history import History
from harness.phoenix import AsyncPhoenix, Message, ReconnectPolicy
from harness.targets import Target
from stack.server import EmbeddedStack
from tests.harness.fault_support import faults_in, run, until
from tests.stack.rt_support import ensure_rt_table, user_token, write


class Subscriber:
    """``AsyncPhoenix`` joined to a postgres_changes channel for one owner's rt_items rows, noting everything."""

    def __init__(self, stack: EmbeddedStack, url: str, policy: ReconnectPolicy) -> None:
        self.stack = stack
        self.owner = str(uuid.uuid4())
        self.events: list[tuple[Any, int]] = []
        self.states: list[tuple[str, int]] = []
        self.client = AsyncPhoenix(url, policy=policy, on_event=lambda e, t: self.events.append((e, t)),
                                   on_state=lambda s, t: self.states.append((s, t)))

    async def join(self) -> None:
        await self.client.connect()
        cfg = {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "rt_items",
                                                "filter": f"owner=eq.{self.owner}"}]},
               "access_token": user_token(self.stack, self.owner)}
        assert (await self.client.join("realtime:faults", cfg)).status == "ok"
        assert await until(lambda: self.systems() == 1, 10)

    def systems(self) -> int:
        """postgres_changes 'system ok' messages: one per (re)join that is live."""
        return sum(1 for e, _ in self.events if isinstance(e, Message) and e.event == "system"
                   and isinstance(e.payload, dict) and e.payload.get("status") == "ok")

    def notes(self) -> list[str]:
        return [e.payload["data"]["record"]["note"] for e, _ in self.events
                if isinstance(e, Message) and e.event == "postgres_changes"]

    def times(self, state: str) -> list[int]:
        return [t for s, t in self.states if s == state]

    async def write_and_see(self, note: str) -> bool:
        await asyncio.to_thread(write, self.stack, "insert into rt_items (owner, note) values (%s, %s)",
                                (self.owner, note))
        return await until(lambda: note in self.notes(), 10)


def test_phoenix_client_rejoins_by_itself_after_a_reset(stack: EmbeddedStack) -> None:
    ensure_rt_table(stack)

    async def go() -> None:
        async with FaultProxy("127.0.0.1", stack.port, name="realtime") as p:
            sub = Subscriber(stack, p.url_for(stack.target().socket_url),
                             ReconnectPolicy(heartbeat_s=5, backoff_s=(0.05, 0.1)))
            await sub.join()
            assert await sub.write_and_see("before")
            t0 = time.perf_counter_ns()
            await p.apply(Reset())
            assert await until(lambda: sub.systems() == 2, 10)  # reconnected and rejoined, live again
            assert sub.times("closed") and sub.times("closed")[0] >= t0 and not sub.times("heartbeat_timeout")
            assert (time.perf_counter_ns() - t0) / 1e9 < 5  # noticed at once, not by a heartbeat
            assert await sub.write_and_see("after") and p.accepted == 2
            await sub.client.close()

    run(go())


def test_phoenix_heartbeat_notices_a_black_hole_and_reconnects_after_it(stack: EmbeddedStack) -> None:
    ensure_rt_table(stack)

    async def go() -> None:
        async with FaultProxy("127.0.0.1", stack.port, name="realtime") as p:
            sub = Subscriber(stack, p.url_for(stack.target().socket_url),
                             ReconnectPolicy(heartbeat_s=0.2, backoff_s=(0.05, 0.1)))
            await sub.join()
            async with p.fault(Blackhole(), seconds=1.5):
                t_start = time.perf_counter_ns()
                assert await until(lambda: bool(sub.times("heartbeat_timeout")), 1.4)  # noticed during it
                assert sub.systems() == 1 and len(sub.times("open")) == 1  # and nothing came back yet
            t_end = time.perf_counter_ns()
            assert await until(lambda: sub.systems() == 2, 15)
            assert t_start < sub.times("heartbeat_timeout")[0] < t_end < sub.times("open")[1]
            assert await sub.write_and_see("after-blackhole")
            await sub.client.close()

    run(go())


def test_a_stack_fault_is_recorded_and_the_client_rejoins(stack: EmbeddedStack, tmp_path: Path) -> None:
    ensure_rt_table(stack)

    async def go() -> None:
        with History(tmp_path / "h.jsonl") as h:
            sub = Subscriber(stack, stack.target().socket_url, ReconnectPolicy(heartbeat_s=5, backoff_s=(0.05, 0.1)))
            await sub.join()
            fid = await inject(stack, StackFault("restart_realtime"), h)
            assert await until(lambda: sub.systems() == 2, 15)
            await sub.client.close()
        start, end = faults_in(tmp_path / "h.jsonl")
        assert (start.fault_id, start.name, start.phase, start.target, start.params) == \
            (fid, "restart_realtime", "start", "embedded", {"seconds": 0})
        assert (end.fault_id, end.phase) == (fid, "end") and start.t < end.t

    run(go())


def test_stack_faults_are_refused_for_anything_but_an_embedded_stack(tmp_path: Path) -> None:
    async def go() -> None:
        with History(tmp_path / "h.jsonl") as h:
            with pytest.raises(FaultTargetError, match="needs the embedded stack, not Target"):
                await inject(Target("url", "https://x.supabase.co", "a", "s"), StackFault("restart_realtime"), h)  # type: ignore[arg-type]
            with pytest.raises(FaultTargetError, match="own cluster"):
                await inject(EmbeddedStack(db_url="postgresql://x"), StackFault("pause_postgres", 1), h)
        assert faults_in(tmp_path / "h.jsonl") == []  # refused before anything was recorded

    run(go())
