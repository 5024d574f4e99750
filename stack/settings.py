"""Settings of one embedded stack, read once and passed to every endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["StackSettings"]


@dataclass(frozen=True)
class StackSettings:
    """What the auth, REST and realtime endpoints need to know.

    ``rest_dsn`` connects as ``authenticator`` (PostgREST's role), ``auth_dsn`` as
    ``supabase_auth_admin`` (GoTrue's), ``realtime_dsn`` as ``supabase_realtime_admin``: by
    password on the stack's own cluster, or, on an existing database, as the superuser
    assuming that role (``stack.db.assumed_dsn``; connect through ``stack.db.connect``).
    """

    jwt_secret: str
    anon_key: str
    service_role_key: str
    rest_dsn: str
    auth_dsn: str
    realtime_dsn: str = ""
    api_url: str = ""  # the public base URL, e.g. http://127.0.0.1:54321
    jwt_exp: int = 3600  # access token lifetime, seconds (GoTrue's default)
    site_url: str = "http://localhost:3000"
    max_body_bytes: int = 1 << 20  # bodies above this get 413
    db_schemas: tuple[str, ...] = ("public",)  # schemas REST exposes (PostgREST db-schemas)
    db_pool_size: int = 10
    realtime_mode: str = "streaming"  # or "hosted-polling": hosted Supabase's 100 ms / 500 ms idle cadence
    # what a realtime restart delivers: "supabase" (default) nothing committed while realtime was down, as
    # Supabase Realtime's temporary slot; "keep-everything": the slot is kept across the restart and delivers it
    realtime_resume: str = "supabase"
    fault_delivery_delay_ms: int = 0  # a fault for negative controls: hold every postgres_changes frame this long
    fault_refuse_joins_s: float = 0.0  # a fault for negative controls: refuse every join this long after a restart
    extra: dict[str, str] = field(default_factory=dict)
