"""The blocking (gevent-friendly) transport over the same sans-IO protocol, against the stack's real socket."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from harness.phoenix import Message, ReconnectPolicy
from harness.phoenix.sync import ConnectError, SyncPhoenix
from stack.postgres import free_port
from stack.server import EmbeddedStack
from tests.stack.rt_support import ensure_rt_table, user_token, write, ws_url


def test_sync_client_joins_stamps_and_rejoins_after_restart(stack: EmbeddedStack) -> None:
    ensure_rt_table(stack)
    owner = str(uuid.uuid4())
    events: list[tuple[object, int]] = []
    states: list[str] = []
    c = SyncPhoenix(ws_url(stack), policy=ReconnectPolicy(heartbeat_s=0.2, backoff_s=(0.05, 0.1)),
                    on_event=lambda e, t: events.append((e, t)), on_state=lambda s, t: states.append(s))
    c.connect()
    cfg = {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "rt_items",
                                            "filter": f"owner=eq.{owner}"}]},
           "access_token": user_token(stack, owner)}
    assert c.join("realtime:probe", cfg).status == "ok"

    def systems() -> int:
        return sum(1 for e, _ in events if isinstance(e, Message) and e.event == "system")

    def poll_until(pred: object, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not pred() and time.monotonic() < end:  # type: ignore[operator]
            c.poll(0.05)

    poll_until(systems, 5)
    c.poll(0.6)  # three heartbeats, each answered: no timeout
    assert systems() == 1 and "heartbeat_timeout" not in states
    stack.restart_realtime()
    poll_until(lambda: systems() >= 2, 10)
    assert systems() >= 2 and states.count("open") >= 2 and c.reconnects >= 1
    before = time.perf_counter_ns()
    write(stack, "insert into rt_items (owner, note) values (%s, 'via-sync')", (owner,))
    poll_until(lambda: any(isinstance(e, Message) and e.event == "postgres_changes" for e, _ in events), 5)
    [(change, t)] = [(e, t) for e, t in events if isinstance(e, Message) and e.event == "postgres_changes"]
    assert isinstance(change, Message) and change.payload["data"]["record"]["note"] == "via-sync"
    assert before < t <= time.perf_counter_ns()  # stamped on arrival, on perf_counter's clock
    c.close()
    assert states[-1] == "closed"


def test_sync_client_refused_connection_is_a_connect_error() -> None:
    c = SyncPhoenix(f"ws://127.0.0.1:{free_port()}/realtime/v1/websocket")
    with pytest.raises(ConnectError):
        c.connect(timeout=2)


def test_sync_client_stamps_a_frame_when_it_arrived_not_when_it_was_read(stack: EmbeddedStack) -> None:
    """A change that waits in the socket while the reader is busy elsewhere (here: asleep 300 ms) carries the
    kernel's receive stamp, so the wait is not counted as latency; with another clock (no kernel stamps) the
    stamp is the read's, and the wait shows: the negative control."""
    ensure_rt_table(stack)

    def read_clock() -> int:  # the same clock, but not the default: no kernel stamps
        return time.perf_counter_ns()

    def measure(mode: str, now: Callable[[], int]) -> tuple[int, int, int]:
        owner = str(uuid.uuid4())
        events: list[tuple[object, int]] = []
        c = SyncPhoenix(ws_url(stack), on_event=lambda e, t: events.append((e, t)), now=now)
        c.connect()
        cfg = {"config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "rt_items",
                                                "filter": f"owner=eq.{owner}"}]},
               "access_token": user_token(stack, owner)}
        assert c.join("realtime:stamps", cfg).status == "ok"

        def poll_until(event: str) -> None:
            end = time.monotonic() + 5
            while not any(isinstance(e, Message) and e.event == event for e, _ in events) and time.monotonic() < end:
                c.poll(0.05)

        poll_until("system")
        write(stack, "insert into rt_items (owner, note) values (%s, 'waits')", (owner,))
        written = time.perf_counter_ns()
        time.sleep(0.3)  # the change arrives meanwhile and waits in the socket
        read_from = time.perf_counter_ns()
        poll_until("postgres_changes")
        [t] = [t for e, t in events if isinstance(e, Message) and e.event == "postgres_changes"]
        assert c.stamped[mode] > 0 and c.stamped["read" if mode == "kernel" else "kernel"] == 0
        c.close()
        return written, t, read_from

    written, t, read_from = measure("kernel", time.perf_counter_ns)
    assert written - 50_000_000 < t < read_from - 200_000_000  # when it arrived, well before the read
    written, t, read_from = measure("read", read_clock)
    assert t >= read_from  # the read's own time: the 300 ms wait is in it
