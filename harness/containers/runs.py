"""Which containers belong to which run, and removing them whatever happens to the run.

testcontainers' own reaper (Ryuk) is a container from a registry image, which these machines cannot pull,
so it is switched off (``TESTCONTAINERS_RYUK_DISABLED=true``) and this module does its job, by label:

* every container, network and volume a run creates carries ``org.zora.run=<run>`` and
  ``org.zora.owner=<boot id>:<pid>:<start time>`` (the owning process, as ``stack.realtime.slots`` names it);
* at exit the run removes what carries its run label (``remove_run``);
* a **reaper process** (``python -m harness.containers.runs RUN``, in a session of its own) holds the read end
  of a pipe whose write end only the owner has: when the owner dies, even by ``kill -9``, the pipe closes and
  the reaper removes the run's objects, then exits;
* at every start, ``sweep`` removes the objects whose owner is provably gone (another boot, a dead pid, or a
  pid now running another process), one log line each, so even a reaper killed with its owner leaves nothing
  for long. Objects of a live owner (another engineer's run) are never touched.

Every step is bounded: docker calls have timeouts, the reaper's wait is one blocking read.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.procs import wait_or_kill

__all__ = ["LABEL_OWNER", "LABEL_RUN", "Reaper", "labels", "owner_alive", "owner_id", "remove_run", "sweep"]

LABEL_RUN = "org.zora.run"
LABEL_OWNER = "org.zora.owner"
Log = Callable[[str], None]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def owner_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{_boot_id()}:{pid}:{_start_time(pid) or '0'}"


def owner_alive(owner: str) -> bool:
    """False only when the owner is provably gone: another boot, no such pid, or the pid is another process."""
    try:
        boot, pid, start = owner.split(":")
        n = int(pid)
    except ValueError:
        return True  # not ours to judge
    if boot != _boot_id():
        return False
    return _start_time(n) == start


def labels(run: str) -> dict[str, str]:
    return {LABEL_RUN: run, LABEL_OWNER: owner_id()}


def _client() -> Any:
    import docker

    return docker.from_env(timeout=30)


def _remove(client: Any, flt: dict[str, Any], log: Log, why: str) -> list[str]:
    """Containers first (they hold the networks and volumes), then networks, then volumes."""
    removed: list[str] = []
    for c in client.containers.list(all=True, filters=flt):
        with contextlib.suppress(Exception):
            c.remove(force=True, v=True)
            removed.append(f"container {c.name}")
    for n in client.networks.list(filters=flt):
        with contextlib.suppress(Exception):
            n.remove()
            removed.append(f"network {n.name}")
    for v in client.volumes.list(filters=flt):
        with contextlib.suppress(Exception):
            v.remove(force=True)
            removed.append(f"volume {v.name}")
    for r in removed:
        log(f"containers: removed {r} ({why})")
    return removed


def remove_run(run: str, log: Log = lambda s: None, client: Any = None) -> list[str]:
    """Remove every container, network and volume labelled with this run."""
    return _remove(client or _client(), {"label": f"{LABEL_RUN}={run}"}, log, f"run {run} ended")


def sweep(log: Log = lambda s: None, client: Any = None) -> list[str]:
    """Remove the objects of runs whose owning process is provably gone (a run killed with ``kill -9``)."""
    client = client or _client()
    dead: set[str] = set()
    objects = [*client.containers.list(all=True, filters={"label": LABEL_OWNER}),
               *client.networks.list(filters={"label": LABEL_OWNER}),
               *client.volumes.list(filters={"label": LABEL_OWNER})]
    for o in objects:
        lab = o.attrs.get("Labels") or o.attrs.get("Config", {}).get("Labels") or {}
        if not owner_alive(str(lab.get(LABEL_OWNER, ""))) and lab.get(LABEL_RUN):
            dead.add(str(lab[LABEL_RUN]))
    removed: list[str] = []
    for run in sorted(dead):
        removed += _remove(client, {"label": f"{LABEL_RUN}={run}"}, log, f"left by run {run}, whose process is gone")
    return removed


class Reaper:
    """A child in its own session that removes the run's objects when this process goes away (even ``kill -9``)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Reaper:
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.containers.runs", self.run],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, close_fds=True)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Close the pipe: the reaper removes what is left of the run (normally nothing) and exits."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        wait_or_kill(self.proc, timeout)
        self.proc = None


def _main(argv: list[str]) -> int:
    run = argv[0]
    import signal

    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)  # only the pipe's end (the owner gone) ends the wait
    with contextlib.suppress(OSError):
        sys.stdin.buffer.read()  # blocks until the owner closes the pipe or dies
    remove_run(run)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
