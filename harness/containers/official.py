"""The ``supabase-official`` profile: the image set ``supabase start`` uses, wired as its CLI wires them.

For machines that can pull images (these cannot: there the profile stops earlier, at ``_ensure_images``, with
exit 6). Every service runs with host networking on 127.0.0.1 and a port of its own ("ports" in
``images.toml``, 0 = free): PostgreSQL (``supabase/postgres``, which carries the Supabase roles and schemas),
GoTrue, PostgREST, Realtime, and Kong routing ``/auth/v1``, ``/rest/v1`` and ``/realtime/v1`` as the hosted
API gateway does. The Zora migrations are applied as the superuser; keys are signed with a fresh JWT secret.
Order: PostgreSQL, GoTrue (it migrates the auth schema), the Zora migrations, PostgREST, Realtime, Kong.
Readiness: each container's wait strategy (PostgreSQL's log line, an HTTP answer from every service).

NOT RUN HERE: no registry is reachable from the machines this was written on, so this wiring follows the CLI's
documented environment and has not been exercised end to end; README says so.
"""

from __future__ import annotations

import json
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["start_official"]


def _port(cs: Any, name: str) -> int:
    from stack.postgres import free_port

    assert cs.config is not None
    return int(cs.config.ports.get(name) or 0) or free_port()


def _kong_config(gotrue: int, postgrest: int, realtime: int) -> str:
    def svc(name: str, port: int, path: str, strip: bool = True) -> dict[str, Any]:
        return {"name": name, "url": f"http://127.0.0.1:{port}/", "routes": [
            {"name": name, "strip_path": strip, "paths": [path]}]}

    rt = svc("realtime", realtime, "/realtime/v1/")
    rt["url"] = f"http://127.0.0.1:{realtime}/socket/"
    # Realtime picks its tenant from the Host header's first label; SEED_SELF_HOST seeds "realtime-dev"
    rt["plugins"] = [{"name": "request-transformer", "config": {"replace": {"headers": ["Host:realtime-dev"]}}}]
    return json.dumps({"_format_version": "2.1", "services": [
        svc("auth", gotrue, "/auth/v1/"), svc("rest", postgrest, "/rest/v1/"), rt]})


def start_official(cs: Any) -> None:
    from testcontainers.core.wait_strategies import HttpWaitStrategy, LogMessageWaitStrategy

    from stack import jwt
    from stack.migrate import apply_migrations
    from stack.server import FIXTURES

    assert cs.config is not None
    img = cs.config.images
    secret = secrets.token_urlsafe(32)
    pw = cs._pg_password
    ports = {n: _port(cs, n) for n in ("api", "postgres", "gotrue", "postgrest", "realtime")}
    cs.pg_port = ports["postgres"]

    def run(name: str, image: str, env: dict[str, str], wait: Any, command: str | None = None) -> Any:
        c = cs._container(image, name=f"zora-{cs.run}-{name}", command=command)
        for k, v in env.items():
            c.with_env(k, v)
        c.waiting_for(wait.with_startup_timeout(120))
        cs.containers.append(c)
        c.start()
        return c

    run("db", img["postgres"], {"POSTGRES_PASSWORD": pw, "PGPORT": str(ports["postgres"]), "JWT_SECRET": secret},
        LogMessageWaitStrategy(re.compile(r"database system is ready to accept connections"), times=2),
        command=f"postgres -c config_file=/etc/postgresql/postgresql.conf -c port={ports['postgres']} "
                "-c listen_addresses=127.0.0.1")
    db = f"postgresql://supabase_admin:{pw}@127.0.0.1:{ports['postgres']}/postgres"
    api = f"http://127.0.0.1:{ports['api']}"
    run("auth", img["gotrue"], {
        "GOTRUE_API_HOST": "127.0.0.1", "PORT": str(ports["gotrue"]), "API_EXTERNAL_URL": api,
        "GOTRUE_DB_DRIVER": "postgres",
        "GOTRUE_DB_DATABASE_URL": f"postgresql://supabase_auth_admin:{pw}@127.0.0.1:{ports['postgres']}/postgres",
        "GOTRUE_SITE_URL": api, "GOTRUE_JWT_SECRET": secret, "GOTRUE_JWT_EXP": "3600",
        "GOTRUE_JWT_AUD": "authenticated", "GOTRUE_JWT_ADMIN_ROLES": "service_role",
        "GOTRUE_JWT_DEFAULT_GROUP_NAME": "authenticated", "GOTRUE_EXTERNAL_EMAIL_ENABLED": "true",
        "GOTRUE_MAILER_AUTOCONFIRM": "true", "GOTRUE_DISABLE_SIGNUP": "false"},
        HttpWaitStrategy(ports["gotrue"], "/health").for_status_code(200))
    # GoTrue has migrated the auth schema by now (its health answers after its migrations): the Zora schema,
    # which references auth.users, goes in before PostgREST reads its schema cache and Realtime its publication
    import psycopg

    with psycopg.connect(db, autocommit=True, connect_timeout=10) as conn:
        apply_migrations(conn, [FIXTURES / "migrations"])
    run("rest", img["postgrest"], {
        "PGRST_DB_URI": f"postgresql://authenticator:{pw}@127.0.0.1:{ports['postgres']}/postgres",
        "PGRST_DB_SCHEMAS": "public", "PGRST_DB_ANON_ROLE": "anon", "PGRST_JWT_SECRET": secret,
        "PGRST_SERVER_HOST": "127.0.0.1", "PGRST_SERVER_PORT": str(ports["postgrest"])},
        HttpWaitStrategy(ports["postgrest"], "/").for_status_code_matching(lambda s: s < 500))
    run("realtime", img["realtime"], {
        "PORT": str(ports["realtime"]), "DB_HOST": "127.0.0.1", "DB_PORT": str(ports["postgres"]),
        "DB_USER": "supabase_admin", "DB_PASSWORD": pw, "DB_NAME": "postgres",
        "DB_AFTER_CONNECT_QUERY": "SET search_path TO _realtime", "DB_ENC_KEY": "supabaserealtime",
        "API_JWT_SECRET": secret, "SECRET_KEY_BASE": secrets.token_urlsafe(48), "ERL_AFLAGS": "-proto_dist inet_tcp",
        "DNS_NODES": "''", "RLIMIT_NOFILE": "10000", "APP_NAME": "realtime", "SEED_SELF_HOST": "true",
        "RUN_JANITOR": "true"},
        HttpWaitStrategy(ports["realtime"], "/api/health").for_status_code_matching(lambda s: s < 500))
    kong_dir = Path(tempfile.mkdtemp(prefix="zora-kong-"))
    cs.scratch.append(kong_dir)
    (kong_dir / "kong.json").write_text(_kong_config(ports["gotrue"], ports["postgrest"], ports["realtime"]))
    kong = cs._container(img["kong"], name=f"zora-{cs.run}-kong")
    kong.with_volume_mapping(str(kong_dir), "/var/lib/zora-kong", "ro")
    for k, v in {"KONG_DATABASE": "off", "KONG_DECLARATIVE_CONFIG": "/var/lib/zora-kong/kong.json",
                 "KONG_PROXY_LISTEN": f"127.0.0.1:{ports['api']}", "KONG_ADMIN_LISTEN": "off",
                 "KONG_DNS_ORDER": "LAST,A,CNAME", "KONG_PLUGINS": "request-transformer,cors"}.items():
        kong.with_env(k, v)
    kong.waiting_for(HttpWaitStrategy(ports["api"], "/auth/v1/health")
                     .for_status_code_matching(lambda s: s < 500).with_startup_timeout(120))
    cs.containers.append(kong)
    kong.start()
    cs.official = {"url": api, "anon_key": jwt.make_api_key("anon", secret),
                   "service_role_key": jwt.make_api_key("service_role", secret), "db_url": db}
