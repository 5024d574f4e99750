"""Builders for hand-written histories: a few typed records, as drivers, probes and the run write them."""

from __future__ import annotations

from typing import Any

from harness.records import (
    Broadcast,
    Change,
    Cleanup,
    ClockFacts,
    Expectation,
    Op,
    ProbeInfo,
    ProbeSet,
    Record,
    RunFinished,
    RunStarted,
)

MS = 1_000_000
WALL0 = 1_700_000_000 * 1_000_000_000


def started(run_id: str = "zr00000001", wall_origin: int = WALL0) -> RunStarted:
    return RunStarted(t=0, run_id=run_id, format=2, target={"kind": "url", "url": "https://x.test"},
                      wall_origin=wall_origin)


def clock(offset_ns: int = 0, error_ns: int = 0, wall_origin: int = WALL0) -> ClockFacts:
    return ClockFacts(t=0, wall_origin=wall_origin, offset_ns=offset_ns, error_ns=error_ns)


def finished() -> list[Record]:
    """The end of a run that cleaned up after itself and finished."""
    return [Cleanup(verified=True), RunFinished(outcome="completed")]


def expectation(eid: str, row: str, deliver_to: list[str], group: str = "order_visible", table: str = "orders",
                type_: str = "INSERT", **match: str) -> Expectation:
    return Expectation(eid=eid, source="change", subject=table, type=type_, match={"id": row, **match},
                       deliver_to=tuple(deliver_to), group=group)


def write(t: int, process: str, op_id: int, eid: str, row: str, deliver_to: list[str], group: str = "order_visible",
          table: str = "orders", type_: str = "INSERT", **match: str) -> list[Record]:
    """A driver's write (invoke at ``t``, ok 1 ms later) that must reach ``deliver_to``."""
    exp = expectation(eid, row, deliver_to, group, table, type_, **match)
    return [Op(t=t, process=process, type="invoke", f="place_order", op_id=op_id),
            Op(t=t + MS, process=process, type="ok", f="place_order", op_id=op_id, expect=(exp,))]


def seen(t: int, probe: str, row: str, table: str = "orders", type_: str = "INSERT", commit_ns: int | None = None,
         **rec: Any) -> Change:
    return Change(t=t, probe=probe, channel=f"realtime:{probe}", table=table, type=type_, record={"id": row, **rec},
                  commit_ns=commit_ns)


def broadcast(t: int, probe: str, event: str, **payload: Any) -> Broadcast:
    return Broadcast(t=t, probe=probe, channel="realtime:platform-announcements", event=event, payload=payload)


def probes(*infos: tuple[str, str, str | None]) -> ProbeSet:
    """(name, flavour, original) of each probe."""
    return ProbeSet(probes=tuple(ProbeInfo(name=n, app="app", user="u", flavour=f, original=o)  # type: ignore[arg-type]
                                 for n, f, o in infos))
