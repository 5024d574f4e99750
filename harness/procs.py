"""Stopping child processes: each one (``wait_or_kill``), or with their children when they were started in a
session of their own (``start_new_session=True``, ``stop_groups``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from typing import Any

__all__ = ["stop_groups", "wait_or_kill"]

KILLED_WAIT_S = 10.0  # after SIGKILL: only a process stuck in the kernel takes longer, and then we stop waiting


def wait_or_kill(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """Wait up to ``timeout`` s for a child asked to stop (its stdin closed, a signal sent), then SIGKILL it and
    wait again, bounded. Its exit status, or None if it outlived even that."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    try:
        return proc.wait(KILLED_WAIT_S)
    except subprocess.TimeoutExpired:
        return None


def stop_groups(procs: Iterable[subprocess.Popen[Any]], grace_s: float = 30.0) -> None:
    """SIGTERM each child's process group, wait ``grace_s`` for each, then SIGKILL the groups still there."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            wait_or_kill(p, KILLED_WAIT_S)
