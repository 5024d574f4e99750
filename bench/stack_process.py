"""The embedded stack in its own process, for benchmarks: started with `zora-harness stack up --env`,
its URLs and keys read from that output, stopped with SIGTERM (the same path a user takes)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from harness.procs import wait_or_kill

ROOT = Path(__file__).resolve().parents[1]


class StackProcess:
    def __init__(self, *extra: str, jwt_secret: str | None = None) -> None:
        """``jwt_secret`` reaches the stack as ``$ZORA_JWT_SECRET``: never on its command line, where ``ps`` shows it
        and where a random secret starting with ``-`` would read as an option."""
        env = {**os.environ, "ZORA_JWT_SECRET": jwt_secret} if jwt_secret else None
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "stack", "up", "--port", "0", "--env",
                                      *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.env: dict[str, str] = {}
        assert self.proc.stdout is not None
        while "SUPABASE_SERVICE_ROLE_KEY" not in self.env:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"stack failed to start: {err.strip()[-300:]}")
            m = re.match(r'^([A-Z_]+)="(.*)"$', line.strip())
            if m:
                self.env[m.group(1)] = m.group(2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        wait_or_kill(self.proc, 60)
