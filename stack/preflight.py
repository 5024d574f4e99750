"""An existing database (``--db-url``): what it holds, read before anything is written, and
whether and how the embedded stack may use it.

Other people depend on such a database (a teammate's embedded stack, a ``supabase start``
stack, a shared server), so the stack uses it as it is. ``inspect`` only reads; ``plan``
decides, refusing (``PreflightError``, one line saying why) whenever start-up would fail or
would change what is not ours:

* the DSN must be a superuser's, ``wal_level`` logical, wal2json installed, a replication
  slot (and, streaming, a WAL sender) free;
* **our base present** (``stack_000_supabase_base`` in ``supabase_migrations.schema_migrations``,
  the record ``stack.migrate`` keeps): used as it is; the stack assumes its login roles per
  connection (``stack.db``) and never alters a role or password;
* **a blank database**: refused unless ``init_db``; with it, the base is installed;
* **Supabase objects our base did not create** (its roles, which are per cluster, or the
  ``auth`` / ``realtime`` schemas, the publication, the bookkeeping table, with no record of our
  base: a ``supabase start`` database, or another database of a cluster that has our roles):
  always refused; we would have to re-create or alter them, and our realtime needs functions
  of its own in the ``realtime`` schema;
* the project's migrations not yet applied there, or base files added since: applied only with
  ``init_db``, else refused (naming the first). The demo seed is the caller's choice (the CLI
  loads it into an existing database only with ``--seed``).

Whatever is written is written in one transaction, so a migration that fails leaves nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from stack.migrate import BASE_DIR, migration_files, migration_version
from stack.realtime.slots import owner_gone, parse_slot_name

__all__ = ["BASE_ROLES", "DatabaseState", "Plan", "PreflightError", "describe_dsn", "inspect", "plan"]

BASE_ROLES = ("anon", "authenticated", "service_role", "authenticator", "supabase_auth_admin",
              "supabase_realtime_admin")
BASE_SCHEMAS = ("auth", "realtime")
FIRST_BASE = "stack_000_supabase_base"


class PreflightError(RuntimeError):
    """The database cannot be used as it is; the one-line message says why and what to pass."""


@dataclass
class DatabaseState:
    where: str  # user@host:port/dbname, no password
    superuser: bool
    wal_level: str
    wal2json: bool
    free_slots: int  # including our stale slots, which the stack drops at start
    free_senders: int
    base_done: set[str] = field(default_factory=set)  # stack_* versions recorded
    foreign: list[str] = field(default_factory=list)  # base objects present without our record
    applied: set[str] = field(default_factory=set)  # every version recorded

    @property
    def has_base(self) -> bool:
        return FIRST_BASE in self.base_done


@dataclass(frozen=True)
class Plan:
    install_base: list[Path]  # base files to apply (all of them on a blank database)
    migrations: list[Path]  # project migration files to apply


def describe_dsn(dsn: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return f"{info.get('user') or '?'}@{info.get('host') or 'localhost'}:{info.get('port') or 5432}/" \
           f"{info.get('dbname') or info.get('user') or '?'}"


def _one(conn: psycopg.Connection, query: str, params: tuple[object, ...] = ()) -> object:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def inspect(conn: psycopg.Connection, dsn: str) -> DatabaseState:
    """Read what the database holds; writes nothing."""
    superuser = bool(_one(conn, "select rolsuper from pg_roles where rolname = current_user"))
    wal_level = str(_one(conn, "select current_setting('wal_level')"))
    wal2json = False
    if superuser:  # pg_config and pg_stat_file are for superusers
        wal2json = bool(_one(conn, "select (pg_stat_file(setting || '/wal2json.so', true)).size is not null"
                                   " from pg_config where name = 'PKGLIBDIR'"))
    slots = conn.execute("select slot_name, active, temporary from pg_replication_slots").fetchall()
    stale = sum(1 for name, active, temp in slots
                if not active and not temp and (o := parse_slot_name(name)) is not None and owner_gone(o))
    max_slots = int(str(_one(conn, "select current_setting('max_replication_slots')")))
    max_senders = int(str(_one(conn, "select current_setting('max_wal_senders')")))
    senders = int(str(_one(conn, "select count(*) from pg_stat_replication")))
    state = DatabaseState(where=describe_dsn(dsn), superuser=superuser, wal_level=wal_level, wal2json=wal2json,
                          free_slots=max_slots - len(slots) + stale, free_senders=max_senders - senders)
    if _one(conn, "select to_regclass('supabase_migrations.schema_migrations') is not null"):
        state.applied = {str(r[0]) for r in conn.execute("select version from supabase_migrations.schema_migrations")}
        state.base_done = {v for v in state.applied if v.startswith("stack_")}
    if not state.has_base:
        roles = [str(r[0]) for r in conn.execute("select rolname from pg_roles where rolname = any(%s)"
                                                 " order by rolname", (list(BASE_ROLES),))]
        schemas = [str(r[0]) for r in conn.execute("select nspname from pg_namespace where nspname = any(%s)"
                                                   " order by nspname", (list(BASE_SCHEMAS),))]
        state.foreign = [*(f"role {r}" for r in roles), *(f"schema {s}" for s in schemas)]
        if _one(conn, "select count(*) from pg_publication where pubname = 'supabase_realtime'"):
            state.foreign.append("publication supabase_realtime")
        if _one(conn, "select to_regclass('supabase_migrations.schema_migrations') is not null"):
            state.foreign.append("table supabase_migrations.schema_migrations")
    return state


def plan(state: DatabaseState, migration_dirs: Iterable[Path], init_db: bool, streaming: bool) -> Plan:
    """What the stack will write to this database, or ``PreflightError`` saying why it will not start there."""
    where = state.where
    if not state.superuser:
        raise PreflightError(f"--db-url {where}: not a superuser; the embedded stack needs a superuser's DSN"
                             " (it assumes its API roles on each connection)")
    if state.wal_level != "logical":
        raise PreflightError(f"--db-url {where}: wal_level is {state.wal_level!r}; realtime needs"
                             " wal_level=logical (set it and restart PostgreSQL)")
    if not state.wal2json:
        raise PreflightError(f"--db-url {where}: the wal2json output plugin is not installed on that server"
                             " (Debian: postgresql-15-wal2json)")
    if state.free_slots < 1:
        raise PreflightError(f"--db-url {where}: no free replication slot (max_replication_slots is used up)")
    if streaming and state.free_senders < 1:
        raise PreflightError(f"--db-url {where}: no free WAL sender (max_wal_senders is used up)")
    base = sorted(BASE_DIR.glob("*.sql"))
    if not state.has_base and state.foreign:
        raise PreflightError(
            f"--db-url {where}: it has Supabase objects the embedded stack's base did not create"
            f" ({', '.join(state.foreign)}) and no record of that base in supabase_migrations.schema_migrations"
            " (a `supabase start` database, or roles of another database in that cluster); the stack will not"
            " re-create or alter them: run the gate against that Supabase (--target url), or give a blank"
            " database with --init-db")
    if not state.has_base and not init_db:
        raise PreflightError(
            f"--db-url {where}: no Supabase base there; pass --init-db to install the embedded stack's"
            f" (roles {', '.join(BASE_ROLES)}; schemas auth, realtime, extensions, supabase_migrations;"
            " publication supabase_realtime)")
    missing_base = [p for p in base if f"stack_{p.stem}" not in state.base_done]
    pending = [p for p in migration_files(migration_dirs) if migration_version(p) not in state.applied]
    if state.has_base and not init_db and (missing_base or pending):
        first = (missing_base or pending)[0].name
        what = "file(s) of the stack's base" if missing_base else "migration(s)"
        raise PreflightError(f"--db-url {where}: {len(missing_base or pending)} {what} not applied there"
                             f" (first: {first}); pass --init-db to apply them")
    return Plan(install_base=missing_base, migrations=pending)
