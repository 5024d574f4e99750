"""Faults of the embedded stack itself, recorded as data: realtime restarted, PostgreSQL restarted or frozen.

    fault_id = await inject(stack, StackFault("pause_postgres", seconds=3), history)

``inject`` records the start, does the fault in a thread (the stack's methods block), and records the
end when the stack is back: ``restart_realtime`` drops every realtime socket and serves again after
``seconds`` (clients rejoin by themselves), ``restart_postgres`` stops and starts the cluster (fast
mode), ``pause_postgres`` freezes every PostgreSQL process (SIGSTOP) for ``seconds`` and thaws them
(SIGCONT) even if the caller is cancelled meanwhile. Only an ``EmbeddedStack`` can be faulted so: a
Supabase given by URL is someone else's server (network faults through ``FaultProxy`` only), and the
PostgreSQL faults need the stack's own cluster, not a database given by ``db_url``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

from harness.faults.spec import StackFault, new_fault_id, record

if TYPE_CHECKING:
    from harness.history import History
    from stack.server import EmbeddedStack

__all__ = ["FaultTargetError", "StackFault", "inject"]


class FaultTargetError(ValueError):
    """This target cannot take this fault (not the embedded stack, or no cluster of its own). One line."""


async def inject(stack: EmbeddedStack, spec: StackFault, history: History | None,
                 target: str = "embedded") -> str:
    """Do ``spec`` to ``stack``, its start and end recorded in ``history``; returns the fault id."""
    from stack.server import EmbeddedStack  # the stack only when a stack fault is really injected

    if not isinstance(spec, StackFault):
        raise FaultTargetError(f"{target}: {spec!r} is not a stack fault")
    if not isinstance(stack, EmbeddedStack):
        raise FaultTargetError(f"{target}: {spec.kind} needs the embedded stack, not {type(stack).__name__}")
    if spec.kind != "restart_realtime" and stack.cluster is None:
        raise FaultTargetError(f"{target}: {spec.kind} needs the stack's own cluster (it runs on --db-url)")
    fault_id = new_fault_id()
    record(history, fault_id, spec, "start", target)
    stop = threading.Event()
    done = asyncio.ensure_future(asyncio.to_thread(_do, stack, spec, stop))
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:  # cut short: a pause ends now; either way the end is recorded when it is over
        stop.set()
        await asyncio.wait({done})
        raise
    finally:
        error = done.exception() if done.done() and not done.cancelled() else None
        record(history, fault_id, spec, "end", target, **({"error": str(error)[:200]} if error else {}))
    return fault_id


def _do(stack: EmbeddedStack, spec: StackFault, stop: threading.Event) -> None:
    """The fault itself, in one thread (so a pause is always followed by its resume, in order)."""
    if spec.kind == "restart_realtime":
        stack.restart_realtime(spec.seconds)
    elif spec.kind == "restart_postgres":
        stack.restart_postgres()
    else:
        stack.pause_postgres()
        try:
            stop.wait(spec.seconds)
        finally:
            stack.resume_postgres()
