"""One run: its id, its directory, its clock and its history.

``reports/<UTC time>-<target>/`` receives ``history.jsonl`` as the run goes, ``config.json`` (no
secrets), ``environment.json`` (machine, versions, commit) and ``criteria.toml`` (the exact criteria
it is judged by, hashed in ``config.json``) at the start, and the results, verdict, JUnit file and
charts at the end. Everything after the run is computed from this directory alone (``zora-harness
analyze``). The lifecycle that fills it is ``harness/lifecycle.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.clock import Clock
from harness.criteria import CriteriaSet
from harness.history import History
from harness.records import FORMAT, RunStarted
from harness.targets import Target, redact, redact_obj

__all__ = ["Run", "RunDirError"]

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


def _own_version() -> str:
    try:
        return metadata.version("zora-harness")
    except metadata.PackageNotFoundError:
        return "unknown"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


class RunDirError(ValueError):
    """The report directory cannot hold a run (it is a file, or not writable); one line for the user."""


@dataclass
class Run:
    """One run: its id (the tag on every row it writes), its directory, its clock and its history."""

    target: Target
    run_id: str
    dir: Path
    clock: Clock
    history: History

    @classmethod
    def create(cls, target: Target, report_root: Path, config: dict[str, Any],
               criteria: CriteriaSet | None = None, label: str | None = None) -> Run:
        """``label`` names the directory (``<time>-<label>``; the target's label by default: ``load`` runs say
        ``load``)."""
        root = Path(report_root)
        if root.exists() and not root.is_dir():
            raise RunDirError(f"report directory {root}: exists and is not a directory")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        label = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in (label or target.label))[:40]
        try:
            root.mkdir(parents=True, exist_ok=True)
            run_dir = root / f"{stamp}-{label}"
            n = 1
            while True:  # bounded by the directories already there
                try:
                    run_dir.mkdir()
                    break
                except FileExistsError:
                    n += 1
                    run_dir = root / f"{stamp}-{label}-{n}"
        except OSError as e:
            raise RunDirError(f"report directory {root}: {e.strerror or e}") from e
        run_id = "zr" + secrets.token_hex(4)
        clock = Clock()
        crit: dict[str, Any] = {}
        if criteria is not None:  # the exact criteria, so the run can be judged again after the file changed
            (run_dir / "criteria.toml").write_text(criteria.text, encoding="utf-8")
            crit = {"criteria": {"source": redact(criteria.source), "sha256": criteria.sha256, "copy": "criteria.toml"}}
        (run_dir / "config.json").write_text(json.dumps(redact_obj({"run_id": run_id, "target": target.public(),
                                                                    **config, **crit}), indent=2, default=str))
        (run_dir / "environment.json").write_text(json.dumps({
            "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "commit": _commit(), "harness": _own_version(), "packages": _versions(),
            "js": _js_versions(), "started_utc": stamp}, indent=2))
        history = History(run_dir / "history.jsonl", clock)
        history.append(RunStarted(run_id=run_id, format=FORMAT, target=target.public(), wall_origin=clock.wall_origin))
        return cls(target, run_id, run_dir, clock, history)
