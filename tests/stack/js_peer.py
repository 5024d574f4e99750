"""supabase-js under Node as a test peer: pytest writes commands, reads events (JSON lines)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).resolve().parents[1] / "js"
ROOT = JS_DIR.parents[1]  # package.json and node_modules live at the repository root


class JsPeer:
    def __init__(self, url: str, key: str) -> None:
        if not (ROOT / "node_modules" / "@supabase" / "supabase-js").is_dir():
            raise RuntimeError(f"supabase-js is not installed: run `npm ci --prefix {ROOT}` (.ci/setup does)")
        self.proc = subprocess.Popen(["node", str(JS_DIR / "realtime_driver.mjs"), url, key], cwd=JS_DIR,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait(lambda e: e["ev"] == "ready", 20)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self._cv:
                self.events.append(ev)
                self._cv.notify_all()

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
                    raise TimeoutError(f"no such event from supabase-js; last: {self.events[-5:]} {err[-500:]}")
                self._cv.wait(left)

    def of(self, ev: str, name: str | None = None) -> list[dict[str, Any]]:
        with self._cv:
            return [e for e in self.events if e["ev"] == ev and (name is None or e.get("name") == name)]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(op="quit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
