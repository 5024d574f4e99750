"""What the harness runs against: the embedded stack, or any Supabase given by URL and keys.

* ``embedded`` (default): started and stopped by the harness; allows every fault.
* ``containers``: started by ``harness.containers`` in Docker (testcontainers); network faults, and packet faults
  through its netem link.
* ``url``: ``SUPABASE_URL`` + ``SUPABASE_ANON_KEY`` + ``SUPABASE_SERVICE_ROLE_KEY`` (and optionally
  ``SUPABASE_DB_URL``), taken from flags, else from an env file (``--env-file``: the output of
  ``supabase status -o env``, with its API_URL / ANON_KEY / SERVICE_ROLE_KEY / DB_URL names, or the
  SUPABASE_* names), else from the environment. Network faults only (we do not own the server).

Keys are checked for what they claim to be: an anon key that is really a service-role key would make
every RLS result meaningless, so it is refused. Secrets live in ``Target`` but never in its
``public()`` view, which is what reports record; ``redact`` removes passwords from URLs and
connection strings wherever text is written.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["Target", "TargetError", "from_env", "parse_env_file", "parse_env_text", "redact", "redact_obj"]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_KV_PASSWORD = re.compile(r"(?i)\b(password|passwd|pwd)\s*=\s*('[^']*'|\S+)")


def redact(text: str) -> str:
    """The text without passwords in URLs (``scheme://user:<redacted>@``) or conninfo (``password=``)."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:<redacted>@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group(1)}=<redacted>", text)


def redact_obj(obj: Any) -> Any:
    """``redact`` applied to every string in a JSON-like structure."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v) for v in obj]
    return obj


class TargetError(ValueError):
    """A target that cannot be used; one line for the user."""


@dataclass(frozen=True)
class Target:
    kind: str  # embedded | containers | url
    url: str
    anon_key: str = field(repr=False)
    service_role_key: str = field(repr=False)
    db_url: str | None = field(default=None, repr=False)
    name: str = ""
    devices_via: str = ""  # host:port the device networks reach the target through (the containers netem link)
    realtime_resume: str = ""  # the embedded stack's: what a realtime restart delivers (supabase | keep-everything)

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
    def safe_url(self) -> str:
        """The URL as it may be printed and recorded (no credentials)."""
        return redact(self.url)

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
        out: dict[str, str | bool] = {"kind": self.kind, "url": self.safe_url, "label": self.label,
                                      "loopback": self.is_loopback, "anon_key": "<redacted>",
                                      "service_role_key": "<redacted>", "db_url": redact(self.db_url) if self.db_url
                                      else ""}
        if self.realtime_resume:
            out["realtime_resume"] = self.realtime_resume
        return out


def _claims(key: str) -> dict[str, Any] | None:
    """A JWT's payload, unverified (what the key says it is), or None if it is not a JWT."""
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _check_key(kind: str, name: str, key: str, want: str) -> None:
    if not key:
        env = "SUPABASE_ANON_KEY" if want == "anon" else "SUPABASE_SERVICE_ROLE_KEY"
        raise TargetError(f"{kind} target: no {name} ({env})")
    if key.startswith(("sb_publishable_", "sb_secret_")):
        role = "anon" if key.startswith("sb_publishable_") else "service_role"
    else:
        claims = _claims(key)
        if claims is None:
            raise TargetError(f"{kind} target: the {name} is not a JWT or an sb_ key")
        role = str(claims.get("role", ""))
    if role != want:
        extra = " (RLS results would mean nothing)" if want == "anon" and role == "service_role" else ""
        raise TargetError(f"{kind} target: the {name} has role {role or 'none'!r}, not {want!r}{extra}")


def _check_db_url(kind: str, db_url: str) -> None:
    import psycopg

    if "://" in db_url and not db_url.startswith(("postgres://", "postgresql://")):
        raise TargetError(f"{kind} target: the database URL must start with postgresql://")
    try:
        psycopg.conninfo.conninfo_to_dict(db_url)
    except psycopg.Error as e:
        raise TargetError(f"{kind} target: the database URL is not a PostgreSQL connection string "
                          f"({redact(str(e).strip().splitlines()[0])})") from None


def _check(url: str, anon: str, service: str, kind: str, db_url: str | None = None) -> Target:
    if not url:
        raise TargetError(f"{kind} target: no URL (SUPABASE_URL)")
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise TargetError(f"{kind} target: {redact(url)!r} is not an http(s) URL")
    _check_key(kind, "anon key", anon, "anon")
    _check_key(kind, "service-role key", service, "service_role")
    if db_url:
        _check_db_url(kind, db_url)
    return Target(kind=kind, url=url.rstrip("/"), anon_key=anon, service_role_key=service, db_url=db_url or None)


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


def parse_env_file(path: Path) -> dict[str, str]:
    """An env file's values under the SUPABASE_* names (``supabase status -o env``'s API_URL etc. too)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except IsADirectoryError:
        raise TargetError(f"env file {path}: is a directory") from None
    except UnicodeDecodeError:
        raise TargetError(f"env file {path}: not UTF-8 text") from None
    except OSError as e:
        raise TargetError(f"env file {path}: {e.strerror or e}") from None
    v = parse_env_text(text)
    names = {"SUPABASE_URL": ("SUPABASE_URL", "API_URL"), "SUPABASE_ANON_KEY": ("SUPABASE_ANON_KEY", "ANON_KEY"),
             "SUPABASE_SERVICE_ROLE_KEY": ("SUPABASE_SERVICE_ROLE_KEY", "SERVICE_ROLE_KEY"),
             "SUPABASE_DB_URL": ("SUPABASE_DB_URL", "DB_URL")}
    return {k: next(v[a] for a in aliases if v.get(a)) for k, aliases in names.items() if any(v.get(a) for a in aliases)}


def from_env(env: Mapping[str, str] | None = None, url: str | None = None, anon: str | None = None,
             service: str | None = None, db_url: str | None = None, env_file: Path | None = None) -> Target:
    """A url target: flags first, then the env file, then the environment."""
    e = os.environ if env is None else env
    f = parse_env_file(env_file) if env_file is not None else {}

    def pick(flag: str | None, name: str) -> str:
        return flag or f.get(name) or e.get(name, "")

    return _check(pick(url, "SUPABASE_URL"), pick(anon, "SUPABASE_ANON_KEY"), pick(service, "SUPABASE_SERVICE_ROLE_KEY"),
                  "url", pick(db_url, "SUPABASE_DB_URL") or None)
