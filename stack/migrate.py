"""Apply the Supabase base and a project's numbered SQL migrations, once each.

Files are applied in name order, each in its own transaction, and recorded in
``supabase_migrations.schema_migrations`` (version = the file name's numeric
prefix) as the Supabase CLI does, so re-running applies only what is new. On an
existing database the stack first checks what may be applied (``stack.preflight``)
and wraps everything in one outer transaction (each file is then a savepoint).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import psycopg
from psycopg import sql

__all__ = ["BASE_DIR", "BASE_SQL", "MigrationError", "apply_base", "apply_migrations", "migration_files",
           "migration_version", "set_role_passwords"]

BASE_DIR = Path(__file__).parent / "sql"
BASE_SQL = BASE_DIR / "000_supabase_base.sql"
_VERSION = re.compile(r"^(\d+)_?(.*)\.sql$")


class MigrationError(RuntimeError):
    """A migration file failed; the message names the file and PostgreSQL's error."""


def _base_applied(conn: psycopg.Connection) -> bool:
    row = conn.execute("select to_regclass('supabase_migrations.schema_migrations') is not null").fetchone()
    return bool(row and row[0])


def apply_base(conn: psycopg.Connection) -> list[str]:
    """Install the Supabase base (``stack/sql/*.sql``), each file once; return the files applied.

    The first file creates the bookkeeping table itself; every file is recorded with the
    version ``stack_<name>`` so the project's own numbered migrations never collide with it.
    """
    if not _base_applied(conn):
        with conn.transaction():
            conn.execute(BASE_SQL.read_text())
            conn.execute("insert into supabase_migrations.schema_migrations (version, name) values (%s, %s)",
                         (f"stack_{BASE_SQL.stem}", BASE_SQL.stem))
    done = {r[0] for r in conn.execute("select version from supabase_migrations.schema_migrations")}
    applied: list[str] = []
    for path in sorted(BASE_DIR.glob("*.sql")):
        version = f"stack_{path.stem}"
        if version in done:
            continue
        with conn.transaction():
            conn.execute(path.read_text())
            conn.execute("insert into supabase_migrations.schema_migrations (version, name) values (%s, %s)",
                         (version, path.stem))
        applied.append(path.name)
    return applied


def set_role_passwords(conn: psycopg.Connection, passwords: dict[str, str]) -> None:
    for role, password in passwords.items():
        conn.execute(sql.SQL("alter role {} with login password {}").format(sql.Identifier(role), password))


def migration_files(dirs: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        files += sorted(p for p in Path(d).glob("*.sql") if _VERSION.match(p.name))
    return files


def migration_version(path: Path) -> str:
    """The version a migration file is recorded under: its name's numeric prefix."""
    m = _VERSION.match(path.name)
    if m is None:
        raise MigrationError(f"{path.name}: not a numbered migration file")
    return m.group(1)


def apply_migrations(conn: psycopg.Connection, dirs: Iterable[Path]) -> list[str]:
    """Apply every not-yet-applied file of ``dirs``; return the names applied."""
    applied = {r[0] for r in conn.execute("select version from supabase_migrations.schema_migrations")}
    done: list[str] = []
    for path in migration_files(dirs):
        m = _VERSION.match(path.name)
        assert m is not None
        version, name = m.group(1), m.group(2)
        if version in applied:
            continue
        text = path.read_text()
        try:
            with conn.transaction():
                conn.execute(text)
                conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, name, statements)"
                    " values (%s, %s, %s)",
                    (version, name, [text]),
                )
        except psycopg.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MigrationError(f"migration {path.name} failed: {first}") from e
        applied.add(version)
        done.append(path.name)
    return done


def apply_sql_file(conn: psycopg.Connection, path: Path) -> None:
    """Run one SQL file (seed data) in a transaction."""
    try:
        with conn.transaction():
            conn.execute(path.read_text())
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MigrationError(f"{path.name} failed: {first}") from e
