"""One run: its id, its directory, its clock and its history (the composition root of a gate run).

``reports/<UTC time>-<target>/`` receives ``history.jsonl`` as the run goes, ``config.json``
(no secrets) and ``environment.json`` (machine, versions, commit) at the start, and the
results, verdict, JUnit file and charts at the end. Everything after the run is computed
from this directory alone (``zora-harness analyze``).
"""

from __future__ import annotations

import contextlib
import json
import platform
import secrets
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.clock import Clock, Offset
from harness.history import History
from harness.targets import Target

__all__ = ["Run"]

ROOT = Path(__file__).resolve().parent.parent


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("supabase", "realtime", "postgrest", "supabase-auth", "psycopg", "websockets", "uvicorn", "starlette"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _js_versions() -> dict[str, str]:
    """Node and supabase-js, as the supabase-js probes run them (empty when not installed)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    for pkg in ("@supabase/supabase-js", "@supabase/realtime-js", "ws"):
        try:
            out[pkg] = json.loads((ROOT / "node_modules" / pkg / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            continue
    return out


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


@dataclass
class Run:
    target: Target
    run_id: str
    dir: Path
    clock: Clock
    history: History
    offset: Offset

    @classmethod
    def create(cls, target: Target, report_root: Path, config: dict[str, Any], offset: Offset | None = None) -> Run:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        label = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in target.label)[:40]
        run_dir = Path(report_root) / f"{stamp}-{label}"
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = Path(report_root) / f"{stamp}-{label}-{n}"
        run_dir.mkdir(parents=True)
        run_id = "zr" + secrets.token_hex(4)
        clock = Clock()
        off = offset or Offset()
        (run_dir / "config.json").write_text(json.dumps({"run_id": run_id, "target": target.public(), **config},
                                                        indent=2, default=str))
        (run_dir / "environment.json").write_text(json.dumps({
            "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "cpus": __import__("os").cpu_count(), "commit": _commit(), "packages": _versions(),
            "js": _js_versions(),
            "started_utc": stamp}, indent=2))
        history = History(run_dir / "history.jsonl", clock)
        history.meta(run_id=run_id, target=target.public(),
                     clock={"wall_origin": clock.wall_origin, "offset_ns": off.offset_ns, "error_ns": off.error_ns})
        return cls(target, run_id, run_dir, clock, history, off)
