"""The gate's progress display: milestones as lines, and on a terminal a live status line below them.

The status line is redrawn four times a second from the history's running counts (driver ops by
outcome, changes the probes saw, subscription errors), so a stalled run shows as numbers that stop
moving. Off a terminal (CI logs) only the milestone lines are written, each once.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from typing import TextIO

from harness.history import History

__all__ = ["Progress"]


class Progress:
    def __init__(self, history: History | None = None, *, quiet: bool = False, stream: TextIO | None = None,
                 live: bool | None = None) -> None:
        self.history = history
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = (not quiet) and (self.stream.isatty() if live is None else live)
        self.stage = "starting"
        self.started = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._drawn = False

    def say(self, msg: str) -> None:
        """A milestone: a permanent line (the status line, if any, is redrawn below it)."""
        if self.quiet:
            return
        self._clear()
        self.stream.write(f"  {time.strftime('%H:%M:%S')}  {msg}\n")
        self.stream.flush()

    def set_stage(self, stage: str) -> None:
        self.stage = stage

    def status(self) -> str:
        c = self.history.counts if self.history is not None else {}
        ops = " ".join(f"{c.get(f'op:{k}', 0)} {k}" for k in ("ok", "fail", "info"))
        errors = c.get("subscription_error", 0)
        seen = sum(c.get(k, 0) for k in ("change", "broadcast", "presence"))
        return (f"  {time.monotonic() - self.started:6.1f}s  {self.stage}  |  ops {ops}  |  "
                f"{seen} events seen" + (f"  |  {errors} subscription errors" if errors else ""))

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self._drawn = False

    def draw(self) -> None:
        if not self.live:
            return
        width = shutil.get_terminal_size((120, 20)).columns
        self.stream.write("\r\033[K" + self.status()[: max(20, width - 1)])
        self.stream.flush()
        self._drawn = True

    async def _run(self) -> None:
        while True:  # cancelled by stop(); one redraw per 250 ms
            self.draw()
            await asyncio.sleep(0.25)

    def start(self) -> None:
        if self.live and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._clear()
        self.stream.flush()
