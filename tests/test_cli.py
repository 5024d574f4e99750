"""``zora-harness`` as a user types it: stack up, SIGTERM, bad usage."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "harness.cli"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["frobnicate"], "invalid choice"),
        (["stack", "up", "--port", "99999"], "not a TCP port"),
        (["stack", "up", "--port", "0", "--migrations", "/nonexistent"], "not a directory"),
        (["stack", "up", "--port", "0", "--jwt-secret", "short"], "at least 32"),
        (["stack", "up", "--port", "0", "--init-db"], "--init-db goes with --db-url"),
        (["stack", "up", "--port", "0", "--seed", "--no-seed"], "contradict"),
        (["stack", "up", "--port", "0", "--realtime-resume", "sometimes"], "invalid choice"),
        (["gate", "--url", "http://127.0.0.1:9", "--anon-key", "x", "--service-key", "y", "--realtime-resume",
          "supabase"], "--realtime-resume"),
        (["stack", "up", "--port", "0", "--db-schemas", "public,bad;name"], "comma-separated list of schema names"),
        (["stack", "up", "--port", "0", "--db-schemas", ""], "comma-separated list of schema names"),
        ([], "required"),
    ],
)
def test_bad_usage_is_one_line_exit_2(args: list[str], needle: str) -> None:
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unreachable_database_exit_3() -> None:
    r = run_cli("stack", "up", "--port", "0", "--db-url", "postgresql://postgres:x@127.0.0.1:1/postgres")
    assert r.returncode == 3, r.stderr
    assert "database unreachable" in r.stderr and "Traceback" not in r.stderr


def test_stack_up_env_then_sigterm_cleans_up() -> None:
    proc = subprocess.Popen([*CLI, "stack", "up", "--port", "0", "--env"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    values: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while "SUPABASE_SERVICE_ROLE_KEY" not in values and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.match(r'^([A-Z_]+)="(.*)"$', line.strip())
            if m:
                values[m.group(1)] = m.group(2)
        assert {"API_URL", "DB_URL", "ANON_KEY", "SERVICE_ROLE_KEY", "SUPABASE_URL"} <= values.keys()
        r = httpx.get(values["API_URL"] + "/auth/v1/health", timeout=5)
        assert r.status_code == 200
        with psycopg.connect(values["DB_URL"]) as conn:
            row = conn.execute("select count(*) from public.products").fetchone()
            assert row is not None and row[0] > 0  # seeded
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert rc == 0
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(values["DB_URL"], connect_timeout=2)
    with pytest.raises(httpx.HTTPError):
        httpx.get(values["API_URL"] + "/auth/v1/health", timeout=2)


def test_version_and_help_show_what_a_user_needs() -> None:
    from importlib import metadata

    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"zora-harness {metadata.version('zora-harness')}"
    h = run_cli("gate", "--help")
    assert h.returncode == 0
    for needle in ("(default: 3)", "(default: reports)", "exit codes:", "143", "examples:", "SUPABASE_ANON_KEY",
                   "imply --target url"):
        assert needle in h.stdout, needle


def test_realtime_resume_choices_are_the_stacks() -> None:
    from harness.cli import RESUMES
    from stack.realtime.server import RESUMES as STACK_RESUMES

    assert RESUMES == STACK_RESUMES and RESUMES[0] == "supabase"  # the default is Supabase's behaviour


def test_headline_names_the_realtime_resume() -> None:
    from harness.report.text import headline

    class V:  # the two fields headline reads, besides the label
        label = "GO"
        skipped: tuple[str, ...] = ()
        target = {"kind": "embedded", "url": "http://127.0.0.1:1", "realtime_resume": "keep-everything"}

    assert headline(V()).endswith("(target: embedded http://127.0.0.1:1, realtime resume: keep-everything)")  # type: ignore[arg-type]
