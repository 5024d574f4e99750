"""Targets from flags, env files (`supabase status -o env`) and the environment; bad ones get one-line errors;
secrets never reach the public view."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from harness.targets import TargetError, from_env, redact, redact_obj


def key(role: str) -> str:
    body = base64.urlsafe_b64encode(json.dumps({"role": role}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJIUzI1NiJ9.{body}.sig"


ANON, SERVICE = key("anon"), key("service_role")
ENV = {"SUPABASE_URL": "https://abc.supabase.co/", "SUPABASE_ANON_KEY": ANON, "SUPABASE_SERVICE_ROLE_KEY": SERVICE}


def test_from_env_and_public_view_has_no_secrets() -> None:
    t = from_env(ENV)
    assert t.url == "https://abc.supabase.co" and t.realtime_url == "wss://abc.supabase.co/realtime/v1/websocket"
    assert not t.is_loopback and t.label == "abc.supabase.co"
    assert SERVICE not in str(t.public()) and SERVICE not in repr(t) and ANON not in str(t.public())


def test_flags_win_over_the_env_file_which_wins_over_the_environment(tmp_path: Path) -> None:
    p = tmp_path / "status.env"
    p.write_text(f'API_URL="http://127.0.0.1:54321"\nANON_KEY="{ANON}"\nSERVICE_ROLE_KEY="{SERVICE}"\n'
                 'DB_URL="postgresql://postgres:postgres@127.0.0.1:54322/postgres"\n')
    t = from_env(ENV, env_file=p)
    assert t.kind == "url" and t.is_loopback and t.db_url and t.db_url.endswith("/postgres")
    t = from_env(ENV, url="http://localhost:9999", env_file=p)
    assert t.url == "http://localhost:9999"
    assert from_env(ENV).url == "https://abc.supabase.co"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "no URL"),
        ({"SUPABASE_URL": "ftp://x"}, r"not an http\(s\) URL"),
        ({"SUPABASE_URL": "http://x"}, "no anon key"),
        ({"SUPABASE_URL": "http://x", "SUPABASE_ANON_KEY": "nope", "SUPABASE_SERVICE_ROLE_KEY": SERVICE}, "not a JWT"),
        # a service-role key given as the anon key: every RLS result would mean nothing
        ({**ENV, "SUPABASE_ANON_KEY": SERVICE}, "anon key has role 'service_role'"),
        ({**ENV, "SUPABASE_SERVICE_ROLE_KEY": ANON}, "service-role key has role 'anon'"),
        ({**ENV, "SUPABASE_ANON_KEY": "sb_secret_abc"}, "anon key has role 'service_role'"),
        ({**ENV, "SUPABASE_DB_URL": "not a dsn at all = = ="}, "not a PostgreSQL connection string"),
        ({**ENV, "SUPABASE_DB_URL": "mysql://root:pw@host/db"}, "must start with postgresql://"),
    ],
)
def test_bad_targets(env: dict[str, str], needle: str) -> None:
    with pytest.raises(TargetError, match=needle) as e:
        from_env(env)
    assert "\n" not in str(e.value) and "pw@" not in str(e.value)


def test_env_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="env file"):
        from_env({}, env_file=tmp_path / "nope.env")
    bad = tmp_path / "latin1.env"
    bad.write_bytes(b"SUPABASE_URL=http://caf\xe9\n")
    with pytest.raises(TargetError, match="not UTF-8"):
        from_env({}, env_file=bad)
    with pytest.raises(TargetError, match="is a directory"):
        from_env({}, env_file=tmp_path)


def test_credentials_in_urls_are_redacted() -> None:
    t = from_env({**ENV, "SUPABASE_URL": "https://admin:hunter2@abc.supabase.co",
                  "SUPABASE_DB_URL": "postgresql://postgres:s3cret@db:5432/postgres"})
    assert "hunter2" not in json.dumps(t.public()) and "s3cret" not in json.dumps(t.public())
    assert t.safe_url == "https://admin:<redacted>@abc.supabase.co"
    assert redact("connect host=x password=abc user=y") == "connect host=x password=<redacted> user=y"
    assert redact_obj({"a": ["postgres://u:p@h/d"]}) == {"a": ["postgres://u:<redacted>@h/d"]}
