"""SIGINT, SIGTERM and SIGHUP, handled alike: the run stops, cleans up, records, and reports.

SIGTERM is what CI cancellation, ``timeout``, Docker and Kubernetes send, and SIGHUP what a closed
terminal sends; both are treated as Ctrl-C is. ``SignalGuard`` (main thread only) turns the first
signal into:

* a cancellation of the task it guards, when the event loop is running it (as ``asyncio.Runner``
  does for Ctrl-C: an exception raised inside the loop's own code could land anywhere);
* an ``Interrupt`` (a ``KeyboardInterrupt``, so everything that handles Ctrl-C handles it) anywhere
  else;
* nothing yet while a ``deferred()`` block runs (cleanup on a shared database must finish): the
  signal is kept and raised when the block ends. A third signal gives up on that and interrupts at
  once.

The exit code of an interrupted command is 128 + the signal's number (130, 143, 129).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

__all__ = ["SIGNALS", "Interrupt", "SignalGuard", "exit_code", "signal_name"]

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
FORCE_AFTER = 3  # signals: the third one interrupts even a deferred block
T = TypeVar("T")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: int) -> int:
    return 128 + int(signum)


class Interrupt(KeyboardInterrupt):
    """The run was interrupted by a signal (Ctrl-C is SIGINT)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal_name(self.signum)


class SignalGuard:
    def __init__(self) -> None:
        self.received: int | None = None  # the first signal
        self.count = 0
        self._defer = 0
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Any] = {}

    @property
    def active(self) -> bool:
        return bool(self._previous)

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.received is None:
            self.received = signum
        if self._defer and self.count < FORCE_AFTER:
            return  # cleanup first; raised when the deferred block ends
        if self._task is not None and not self._task.done() and self.count == 1 and self._loop is not None:
            self._task.cancel()
            self._loop.call_soon_threadsafe(lambda: None)  # wake a loop blocked in select()
            return
        raise Interrupt(signum)

    def pending(self) -> None:
        """Raise the signal that arrived while deferred, if any."""
        if self.received is not None and not self._defer:
            raise Interrupt(self.received)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1

    async def guard(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` as the task a signal cancels."""
        self._task, self._loop = asyncio.current_task(), asyncio.get_running_loop()
        try:
            return await coro
        finally:
            self._task = None
