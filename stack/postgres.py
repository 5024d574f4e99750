"""A throwaway PostgreSQL 15 cluster, or an existing one given by DSN.

Why by hand: the embedded stack must start without Docker (testcontainers needs an
engine; ``--target containers``, ``harness/containers/``, is the Docker path); pytest-postgresql
and friends do not set up logical decoding or run as the ``postgres`` system user when we are
root. What this module guarantees:

* the cluster listens on 127.0.0.1 only, on a free port, with ``wal_level=logical``;
* readiness is checked (a real connection and query), never slept for;
* shutdown happens on normal exit, Ctrl-C and SIGTERM (the caller's ``stop()``,
  usually through a context manager), and if our process dies anyway the
  postmaster gets a signal from the kernel (``PR_SET_PDEATHSIG``); whatever still
  survives is found through its registry entry and removed on the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from harness.procs import wait_or_kill

__all__ = ["Cluster", "PostgresError", "find_bindir", "free_port"]

REGISTRY = Path(tempfile.gettempdir()) / "zora-harness" / "clusters"
_PR_SET_PDEATHSIG = 1


class PostgresError(RuntimeError):
    """The cluster could not be created, started or reached."""


def find_bindir() -> Path:
    """Debian's PostgreSQL 15 binaries (``postgresql-15``), or ``$ZORA_PG_BINDIR``."""
    candidates = [os.environ.get("ZORA_PG_BINDIR", ""), "/usr/lib/postgresql/15/bin"]
    for c in candidates:
        if c and (Path(c) / "postgres").exists():
            return Path(c)
    raise PostgresError(
        "PostgreSQL 15 not found: install the Debian packages postgresql-15 and postgresql-15-wal2json "
        "(or set ZORA_PG_BINDIR)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie has exited and only awaits its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)  # SIGINT = PostgreSQL's fast shutdown


def cleanup_orphans() -> list[str]:
    """Stop clusters whose owning process has died and delete their data; return what was removed."""
    removed: list[str] = []
    if not REGISTRY.is_dir():
        return removed
    for entry in REGISTRY.glob("*.json"):
        try:
            info = json.loads(entry.read_text())
        except (OSError, ValueError):
            entry.unlink(missing_ok=True)
            continue
        if _pid_alive(int(info.get("owner", 0))):
            continue
        pm = int(info.get("postmaster", 0))
        if pm and _pid_alive(pm):
            with contextlib.suppress(OSError):
                os.kill(pm, signal.SIGQUIT)
            deadline = time.monotonic() + 5
            while _pid_alive(pm) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pm):
                with contextlib.suppress(OSError):
                    os.kill(pm, signal.SIGKILL)
        shutil.rmtree(info.get("root", ""), ignore_errors=True)
        entry.unlink(missing_ok=True)
        removed.append(str(info.get("root")))
    return removed


@dataclass
class Cluster:
    """A private PostgreSQL cluster started by this process.

    ``password`` is the superuser's (``postgres``) password; other login roles are
    created by the stack's migrations.
    """

    password: str = "postgres"
    port: int = 0
    fsync: bool = False  # a throwaway test cluster: durability across power loss is not needed
    extra_settings: dict[str, str] = field(default_factory=dict)
    root: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _run_as: str | None = None

    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def dsn(self, user: str = "postgres", password: str | None = None, dbname: str = "postgres") -> str:
        pw = self.password if password is None else password
        return f"postgresql://{user}:{pw}@{self.host}:{self.port}/{dbname}"

    # -- lifecycle ---------------------------------------------------------
    def _user_kwargs(self) -> dict[str, str]:
        return {"user": self._run_as, "group": self._run_as} if self._run_as else {}

    def init(self) -> None:
        cleanup_orphans()
        bindir = find_bindir()
        self._run_as = "postgres" if os.geteuid() == 0 else None
        if self._run_as:
            try:
                pw = pwd.getpwnam(self._run_as)
            except KeyError as e:
                raise PostgresError("running as root needs the 'postgres' system user (package postgresql-15)") from e
        self.root = Path(tempfile.mkdtemp(prefix="zora-pg-"))
        self._register()
        if self._run_as:
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        cmd = [
            str(bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres", "--pwfile", str(pwfile),
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        ]
        res = subprocess.run(cmd, capture_output=True, **self._user_kwargs())  # type: ignore[call-overload]
        pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise PostgresError("initdb failed: " + res.stderr.decode(errors="replace").strip().splitlines()[-1])
        self._write_conf(bindir)

    def _write_conf(self, bindir: Path) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "wal_level": "logical",
            "max_replication_slots": "20",
            "max_wal_senders": "20",
            "max_connections": "300",
            "shared_buffers": "128MB",
            "fsync": "on" if self.fsync else "off",
            "synchronous_commit": "on",
            "full_page_writes": "on" if self.fsync else "off",
            "track_commit_timestamp": "on",
            "log_min_messages": "warning",
            "logging_collector": "off",
            "timezone": "'UTC'",
        }
        # Some Debian builds only load logical decoding output plugins named here.
        probe = subprocess.run(
            [str(bindir / "postgres"), "--describe-config"], capture_output=True, text=True,
            **self._user_kwargs(),  # type: ignore[call-overload]
        )
        if "output_plugin_libraries" in probe.stdout:
            settings["output_plugin_libraries"] = "'wal2json'"
        settings.update(self.extra_settings)
        conf = self.datadir / "postgresql.auto.conf"
        with conf.open("a") as f:
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n"
            "local replication all trust\n"
        )

    def start(self, timeout: float = 30.0) -> None:
        if self.root is None:
            self.init()
        bindir = find_bindir()
        if not self.port:
            self.port = free_port()
        log = open(self.root / "postgres.log", "ab")  # type: ignore[operator]  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # The kernel's parent-death signal follows the *thread* that forked: only use it from
            # the main thread; a server started elsewhere relies on the registry cleanup alone.
            preexec_fn=_set_pdeathsig if threading.current_thread() is threading.main_thread() else None,
            # its own session: a terminal's Ctrl-C reaches us, and we stop the server in order
            start_new_session=True,
            **self._user_kwargs(),  # type: ignore[call-overload]
        )
        log.close()
        self._register()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll with real connections until a query answers, the server dies, or time runs out."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PostgresError(f"postgres exited with code {self.proc.returncode}: {self.log_tail()}")
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError as e:
                last = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        raise PostgresError(f"postgres not ready after {timeout:.0f}s: {last}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.root / "postgres.log").read_text(errors="replace")  # type: ignore[operator]
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the postmaster (``fast`` = SIGINT, ``immediate`` = SIGQUIT) and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        wait_or_kill(self.proc, timeout)
        self.proc = None

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def pause(self) -> None:
        """Freeze the postmaster and every backend (SIGSTOP), as a hung database would look."""
        for pid in self._cluster_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._cluster_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def _cluster_pids(self) -> list[int]:
        if self.proc is None:
            return []
        pids = [self.proc.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            pids += [int(c) for c in children]
        return pids

    def destroy(self) -> None:
        """Stop the server and delete its data directory and registry entry."""
        self.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            (REGISTRY / f"{self.root.name}.json").unlink(missing_ok=True)
            self.root = None

    def _register(self) -> None:
        assert self.root is not None
        REGISTRY.mkdir(parents=True, exist_ok=True)
        info = {"owner": os.getpid(), "root": str(self.root), "postmaster": self.proc.pid if self.proc else 0}
        (REGISTRY / f"{self.root.name}.json").write_text(json.dumps(info))

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()
