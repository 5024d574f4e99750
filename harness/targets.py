"""What the harness runs against: the embedded stack, or any Supabase given by URL and keys.

* ``embedded`` (default): started and stopped by the harness; allows every fault.
* ``url``: ``SUPABASE_URL`` + ``SUPABASE_ANON_KEY`` + ``SUPABASE_SERVICE_ROLE_KEY`` (env or flags);
  network faults only (we do not own the server).
* ``env-file``: the output of ``supabase status -o env`` (API_URL / ANON_KEY / SERVICE_ROLE_KEY,
  or the SUPABASE_* names, quoted or not).

Secrets live in ``Target`` but never in its ``public()`` view, which is what reports record.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["Target", "TargetError", "from_env", "from_env_file", "parse_env_text"]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class TargetError(ValueError):
    """A target that cannot be used; one line for the user."""


@dataclass(frozen=True)
class Target:
    kind: str  # embedded | url | env-file
    url: str
    anon_key: str = field(repr=False)
    service_role_key: str = field(repr=False)
    db_url: str | None = field(default=None, repr=False)
    name: str = ""

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or ""

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK or self.host.startswith("127.")

    @property
    def label(self) -> str:
        return self.name or (self.kind if self.kind == "embedded" else self.host or "target")

    @property
    def realtime_url(self) -> str:
        u = urlparse(self.url)
        scheme = "wss" if u.scheme == "https" else "ws"
        return f"{scheme}://{u.netloc}{u.path.rstrip('/')}/realtime/v1/websocket"

    @property
    def socket_url(self) -> str:
        """The realtime websocket as a signed-out app opens it (vsn 1.0.0 JSON frames)."""
        return f"{self.realtime_url}?apikey={self.anon_key}&vsn=1.0.0"

    def public(self) -> dict[str, str | bool]:
        """For config.json and reports: no keys, no passwords."""
        return {"kind": self.kind, "url": self.url, "label": self.label, "loopback": self.is_loopback,
                "anon_key": "<redacted>", "service_role_key": "<redacted>",
                "db_url": "<redacted>" if self.db_url else ""}


def _check(url: str, anon: str, service: str, kind: str, db_url: str | None = None) -> Target:
    if not url:
        raise TargetError(f"{kind} target: no URL (set SUPABASE_URL or pass --url)")
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise TargetError(f"{kind} target: {url!r} is not an http(s) URL")
    for name, key in (("anon key", anon), ("service-role key", service)):
        if not key:
            raise TargetError(f"{kind} target: no {name} (set SUPABASE_ANON_KEY / SUPABASE_SERVICE_ROLE_KEY)")
        if not (key.count(".") == 2 or key.startswith(("sb_publishable_", "sb_secret_"))):
            raise TargetError(f"{kind} target: the {name} is not a JWT or an sb_ key")
    return Target(kind=kind, url=url.rstrip("/"), anon_key=anon, service_role_key=service, db_url=db_url or None)


def from_env(env: dict[str, str] | None = None, url: str | None = None, anon: str | None = None,
             service: str | None = None, db_url: str | None = None) -> Target:
    e = os.environ if env is None else env
    return _check(url or e.get("SUPABASE_URL", ""), anon or e.get("SUPABASE_ANON_KEY", ""),
                  service or e.get("SUPABASE_SERVICE_ROLE_KEY", ""), "url", db_url or e.get("SUPABASE_DB_URL"))


def parse_env_text(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r'^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)\s*=\s*(.*?)\s*$', line)
        if not m:
            continue
        v = m.group(2)
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        out[m.group(1)] = v
    return out


def from_env_file(path: Path) -> Target:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise TargetError(f"env file {path}: {e.strerror or e}") from e
    v = parse_env_text(text)
    return _check(v.get("API_URL") or v.get("SUPABASE_URL", ""), v.get("ANON_KEY") or v.get("SUPABASE_ANON_KEY", ""),
                  v.get("SERVICE_ROLE_KEY") or v.get("SUPABASE_SERVICE_ROLE_KEY", ""), "env-file",
                  v.get("DB_URL") or v.get("SUPABASE_DB_URL"))
