"""Child processes started in a session of their own (``start_new_session=True``), stopped with their children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from typing import Any

__all__ = ["stop_groups"]


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
            p.wait()
