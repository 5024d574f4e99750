"""Running ``locust -f load`` as its users do, as child processes that are always stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.procs import stop_groups

ROOT = Path(__file__).resolve().parents[2]


def locust_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(ROOT / "load"), *args]


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Children started into the list are killed (their process groups) when the block ends, however it ends."""
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        stop_groups(procs)


def _as_from_a_terminal() -> None:
    """In the child, before exec: SIGINT and SIGTERM as a terminal's job has them. A test suite started in the
    background by a non-interactive shell (``cmd &``) inherits SIGINT ignored, and so would every Locust it starts:
    Ctrl-C (SIGINT) would then never reach it."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def start(procs: list[subprocess.Popen[str]], args: list[str], log: Path) -> subprocess.Popen[str]:
    f = log.open("w")
    p = subprocess.Popen(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_as_from_a_terminal)
    f.close()
    procs.append(p)
    return p


def run_dir(root: Path) -> Path:
    [d] = [p for p in root.iterdir() if p.is_dir() and p.name.endswith("-load")]
    return d


def results(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    d = run_dir(root)
    return json.loads((d / "results.json").read_text()), json.loads((d / "load.json").read_text())
