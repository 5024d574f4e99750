"""The embedded stack as one object: Postgres, the Supabase base, a project's
migrations and seed, and the HTTP server with auth and REST (realtime to come).

    with EmbeddedStack.from_fixtures(seed=True) as s:
        client = supabase.create_client(s.api_url, s.anon_key)

This is the composition root of ``stack/``: it owns the cluster, the keys and
the server thread, and offers the faults the harness needs (restart Postgres,
pause Postgres).

Its own throwaway cluster gets the Supabase base, the login roles' passwords (the
stack made them) and the migrations. An existing database (``db_url``) is used as
it is: ``stack.preflight`` reads it first and refuses, before writing anything, a
database the stack cannot use (no base there without ``init_db``, Supabase roles the
base did not create, pending migrations without ``init_db``, no logical decoding);
the stack never sets a password there: it connects with the superuser DSN and assumes
``authenticator``, ``supabase_auth_admin`` and ``supabase_realtime_admin`` per
connection (``stack.db``), so other stacks on that database keep working.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import uvicorn

from stack import jwt, preflight
from stack.app import create_app
from stack.db import assumed_dsn
from stack.gc_policy import pace_for_latency
from stack.migrate import apply_base, apply_migrations, apply_sql_file, set_role_passwords
from stack.postgres import Cluster, PostgresError, free_port
from stack.settings import StackSettings

__all__ = ["FIXTURES", "EmbeddedStack", "StackConfigError", "StackError"]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LOGIN_ROLES = ("authenticator", "supabase_auth_admin", "supabase_realtime_admin")


class StackError(RuntimeError):
    """The stack could not start; the message says which part and why."""


class StackConfigError(StackError):
    """The stack refuses the database it was given (a configuration problem); nothing was written to it."""


@dataclass
class EmbeddedStack:
    migrations: list[Path] = field(default_factory=list)
    seed: list[Path] = field(default_factory=list)
    db_url: str | None = None  # an existing database (superuser DSN) instead of a throwaway cluster
    init_db: bool = False  # db_url: install the base and apply pending migrations there (else refuse)
    port: int = 0
    jwt_secret: str = ""
    jwt_exp: int = 3600
    realtime_mode: str = "streaming"
    realtime_resume: str = "supabase"  # or "keep-everything" (stack.realtime.server.RESUMES)
    db_schemas: tuple[str, ...] = ("public",)  # schemas REST exposes, the first the default (PostgREST db-schemas)
    fault_delivery_delay_ms: int = 0
    fault_refuse_joins_s: float = 0.0
    cluster: Cluster | None = None
    settings: StackSettings | None = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _role_passwords: dict[str, str] = field(default_factory=dict)
    _assume_roles: bool = False  # an existing database: login roles assumed per connection, no passwords
    _role_settings: dict[str, dict[str, str]] = field(default_factory=dict)
    _app: Any = None
    _loop: asyncio.AbstractEventLoop | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_fixtures(cls, seed: bool = False, **kw: object) -> EmbeddedStack:
        """The Zora schema from ``fixtures/migrations`` and, optionally, the demo seed."""
        seeds = [FIXTURES / "seed.sql"] if seed else []
        return cls(migrations=[FIXTURES / "migrations"], seed=seeds, **kw)  # type: ignore[arg-type]

    # -- keys and URLs ----------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def anon_key(self) -> str:
        assert self.settings is not None
        return self.settings.anon_key

    @property
    def service_role_key(self) -> str:
        assert self.settings is not None
        return self.settings.service_role_key

    @property
    def superuser_dsn(self) -> str:
        if self.db_url:
            return self.db_url
        assert self.cluster is not None
        return self.cluster.dsn()

    def target(self) -> Any:
        """This stack as the harness's ``Target`` (kind embedded: every fault allowed)."""
        from harness.targets import Target

        return Target("embedded", self.api_url, self.anon_key, self.service_role_key, self.superuser_dsn,
                      name="embedded", realtime_resume=self.realtime_resume)

    def role_dsn(self, role: str) -> str:
        """A DSN that connects as ``role``: with its password on our own cluster; on an existing database the
        superuser DSN marked to assume the role (``stack.db.connect`` and the pools honour the mark)."""
        if self._assume_roles:
            return assumed_dsn(self.superuser_dsn, role, self._role_settings.get(role))
        base = psycopg.conninfo.conninfo_to_dict(self.superuser_dsn)
        base.update(user=role, password=self._role_passwords[role])
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in base.items() if v is not None})

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> EmbeddedStack:
        t0 = time.perf_counter()
        try:
            if self.db_url is None:
                self.cluster = Cluster()
                self.cluster.start()
            self.timings["postgres"] = time.perf_counter() - t0
            self._prepare_database()
            self.timings["migrations"] = time.perf_counter() - t0 - self.timings["postgres"]
            self._start_server()
        except Exception:
            self.stop()
            raise
        self.timings["ready"] = time.perf_counter() - t0
        return self

    def _prepare_database(self) -> None:
        try:
            if self.db_url is None:
                self._prepare_own_cluster()
            else:
                self._prepare_existing(self.db_url)
        except psycopg.OperationalError as e:
            raise StackError(f"database unreachable: {str(e).strip().splitlines()[0]}") from e
        secret = self.jwt_secret or jwt.new_secret()
        self.settings = StackSettings(
            jwt_secret=secret,
            anon_key=jwt.make_api_key("anon", secret),
            service_role_key=jwt.make_api_key("service_role", secret),
            rest_dsn=self.role_dsn("authenticator"),
            auth_dsn=self.role_dsn("supabase_auth_admin"),
            realtime_dsn=self.role_dsn("supabase_realtime_admin"),
            jwt_exp=self.jwt_exp,
            realtime_mode=self.realtime_mode,
            realtime_resume=self.realtime_resume,
            db_schemas=tuple(self.db_schemas),
            fault_delivery_delay_ms=self.fault_delivery_delay_ms,
            fault_refuse_joins_s=self.fault_refuse_joins_s,
        )

    def _prepare_own_cluster(self) -> None:
        self._role_passwords = {r: secrets.token_urlsafe(18) for r in LOGIN_ROLES}
        with psycopg.connect(self.superuser_dsn, autocommit=True) as conn:
            apply_base(conn)
            set_role_passwords(conn, self._role_passwords)
            apply_migrations(conn, self.migrations)
            for path in self.seed:
                apply_sql_file(conn, path)

    def _prepare_existing(self, dsn: str) -> None:
        """Check first (read only), then write what the plan allows in one transaction; never touch a role."""
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            state = preflight.inspect(conn, dsn)
            try:
                preflight.plan(state, self.migrations, self.init_db, streaming=self.realtime_mode == "streaming")
            except preflight.PreflightError as e:
                raise StackConfigError(str(e)) from e
            with conn.transaction():
                apply_base(conn)
                apply_migrations(conn, self.migrations)
                for path in self.seed:
                    apply_sql_file(conn, path)
            self._role_settings = _role_settings(conn, LOGIN_ROLES)
        self._assume_roles = True

    def _start_server(self, timeout: float = 30.0) -> None:
        assert self.settings is not None
        if not self.port:
            self.port = free_port()
        self.settings = _with_url(self.settings, self.api_url)
        pace_for_latency()  # the process's collector: a full collection would stall every socket at once
        self._app = create_app(self.settings)
        config = uvicorn.Config(
            self._app, host="127.0.0.1", port=self.port, log_level="warning",
            lifespan="on", ws_ping_interval=None, timeout_graceful_shutdown=2,
            # Supabase Realtime's endpoint (lib/realtime_web/endpoint.ex) leaves Phoenix's websocket
            # `compress: false`: no permessage-deflate, whatever the client offers. Compressing here would
            # also cost a deflate per frame per socket (a fifth of the server's CPU in the fan-out bench).
            ws_per_message_deflate=False,
        )
        self._server = uvicorn.Server(config)
        server = self._server

        def serve() -> None:
            loop = _new_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            loop.run_until_complete(server.serve())
            loop.close()

        self._thread = threading.Thread(target=serve, name="zora-stack-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise StackError(f"HTTP server on 127.0.0.1:{self.port} failed to start")
            if time.monotonic() > deadline:
                raise StackError(f"HTTP server not ready after {timeout:.0f}s")
            time.sleep(0.005)

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None
        self._loop = None

    def stop(self) -> None:
        self._stop_server()
        if self.cluster is not None:
            self.cluster.destroy()
            self.cluster = None

    # -- faults --------------------------------------------------------------------
    def restart_postgres(self, mode: str = "fast") -> None:
        if self.cluster is None:
            raise PostgresError("restart_postgres needs the embedded cluster, not an external database")
        self.cluster.restart(mode)

    def restart_realtime(self, downtime: float = 0.0, timeout: float = 30.0) -> None:
        """Drop every realtime socket and start the realtime server again (clients rejoin by themselves)."""
        if self._server is None or self._loop is None:
            raise StackError("the stack is not running")
        fut = asyncio.run_coroutine_threadsafe(self._app.state.realtime.restart(downtime), self._loop)
        fut.result(timeout)

    def pause_postgres(self) -> None:
        if self.cluster is None:
            raise PostgresError("pause_postgres needs the embedded cluster")
        self.cluster.pause()

    def resume_postgres(self) -> None:
        if self.cluster is not None:
            self.cluster.resume()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _role_settings(conn: psycopg.Connection, roles: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Each role's ``ALTER ROLE ... SET`` values (this database's override the global ones): applied at a
    login as that role, so an assumed role gets them as connection options instead."""
    out: dict[str, dict[str, str]] = {}
    rows = conn.execute(
        "select r.rolname, unnest(s.setconfig) from pg_db_role_setting s join pg_roles r on r.oid = s.setrole"
        " where r.rolname = any(%s) and s.setdatabase in (0, (select oid from pg_database"
        " where datname = current_database())) order by s.setdatabase", (list(roles),)).fetchall()
    for role, setting in rows:
        key, _, value = str(setting).partition("=")
        out.setdefault(str(role), {})[key] = value
    return out


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (uvicorn[standard] brings it): the realtime fan-out's hot path."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _with_url(s: StackSettings, url: str) -> StackSettings:
    from dataclasses import replace

    return replace(s, api_url=url)
