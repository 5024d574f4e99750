"""The throwaway cluster: settings, readiness, faults and guaranteed cleanup."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from stack.postgres import REGISTRY, Cluster, _pid_alive, cleanup_orphans


def _wait_dead(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        # reap if it is our child
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return not _pid_alive(pid)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    c.start()
    yield c
    c.destroy()


def test_settings_loopback_logical(cluster: Cluster) -> None:
    with psycopg.connect(cluster.dsn()) as conn:
        settings: dict[str, str] = dict(conn.execute(
            "select name, setting from pg_settings where name in"
            " ('listen_addresses','wal_level','max_replication_slots','server_version_num')"
        ).fetchall())
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["wal_level"] == "logical"
    assert int(settings["max_replication_slots"]) >= 10
    assert settings["server_version_num"].startswith("15")


def test_wal2json_v2_streams_commit_timestamp(cluster: Cluster) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("create table if not exists lc_t (id int primary key, v text)")
        conn.execute("select pg_create_logical_replication_slot('lc_slot', 'wal2json')")
        try:
            conn.execute("insert into lc_t values (1, 'a')")
            rows = conn.execute(
                "select data from pg_logical_slot_get_changes('lc_slot', null, null,"
                " 'format-version', '2', 'include-timestamp', '1')"
            ).fetchall()
        finally:
            conn.execute("select pg_drop_replication_slot('lc_slot')")
    changes = [json.loads(r[0]) for r in rows]
    inserts = [c for c in changes if c["action"] == "I"]
    assert len(inserts) == 1 and inserts[0]["table"] == "lc_t"
    # microsecond precision: "2026-11-24 21:36:50.325355+00"
    assert "." in inserts[0]["timestamp"] and len(inserts[0]["timestamp"].split(".")[1]) >= 7


def test_password_required_over_tcp(cluster: Cluster) -> None:
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.dsn(password="wrong"), connect_timeout=5)


def test_restart_keeps_data(cluster: Cluster) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("create table if not exists lc_keep (id int)")
        conn.execute("insert into lc_keep values (42)")
    cluster.restart()
    with psycopg.connect(cluster.dsn()) as conn:
        assert conn.execute("select id from lc_keep").fetchall() == [(42,)]


def test_pause_and_resume(cluster: Cluster) -> None:
    cluster.pause()
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(cluster.dsn(), connect_timeout=1)
    finally:
        cluster.resume()
    with psycopg.connect(cluster.dsn(), connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_start_failure_reports_log() -> None:
    c = Cluster(extra_settings={"shared_buffers": "'nonsense'"})
    try:
        with pytest.raises(Exception, match="postgres exited"):
            c.start(timeout=20)
    finally:
        c.destroy()
    assert c.root is None


ORPHAN_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from stack.postgres import Cluster
    c = Cluster(); c.start()
    print(json.dumps({"postmaster": c.proc.pid, "root": str(c.root)}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_killed_owner_leaves_no_server_and_data_is_cleaned() -> None:
    out = subprocess.run([sys.executable, "-c", ORPHAN_SCRIPT], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == -signal.SIGKILL, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    # The kernel's parent-death signal shuts the postmaster down with its owner.
    assert _wait_dead(info["postmaster"]), "postmaster outlived its owner"
    assert Path(info["root"]).exists()  # data is removed by the next start's cleanup
    removed = cleanup_orphans()
    assert info["root"] in removed
    assert not Path(info["root"]).exists()
    assert not (REGISTRY / f"{Path(info['root']).name}.json").exists()


def test_cleanup_kills_surviving_orphan_postmaster() -> None:
    """If the parent-death signal did not reach it, the registry still finds and stops it."""
    c = Cluster()
    c.init()
    c.port = 0
    c.start()
    pm = c.proc.pid  # type: ignore[union-attr]
    entry = REGISTRY / f"{c.root.name}.json"  # type: ignore[union-attr]
    info = json.loads(entry.read_text())
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    info["owner"] = dead_owner.pid  # pretend the owner died
    entry.write_text(json.dumps(info))
    root = c.root
    c.proc = None  # forget it, as a dead owner would
    assert root is not None
    cleanup_orphans()
    assert _wait_dead(pm)
    assert not root.exists()
