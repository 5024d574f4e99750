"""Targets from the environment and from `supabase status -o env`; bad ones get one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.targets import TargetError, from_env, from_env_file

KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.sig"


def test_from_env_and_public_view_has_no_secrets() -> None:
    t = from_env({"SUPABASE_URL": "https://abc.supabase.co/", "SUPABASE_ANON_KEY": KEY,
                  "SUPABASE_SERVICE_ROLE_KEY": KEY + "x"})
    assert t.url == "https://abc.supabase.co" and t.realtime_url == "wss://abc.supabase.co/realtime/v1/websocket"
    assert not t.is_loopback and t.label == "abc.supabase.co"
    assert KEY not in str(t.public()) and KEY not in repr(t)


def test_supabase_status_env_file(tmp_path: Path) -> None:
    p = tmp_path / "status.env"
    p.write_text(f'API_URL="http://127.0.0.1:54321"\nANON_KEY="{KEY}"\nSERVICE_ROLE_KEY="{KEY}"\n'
                 'DB_URL="postgresql://postgres:postgres@127.0.0.1:54322/postgres"\n')
    t = from_env_file(p)
    assert t.kind == "env-file" and t.is_loopback and t.db_url and t.db_url.endswith("/postgres")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "no URL"),
        ({"SUPABASE_URL": "ftp://x"}, r"not an http\(s\) URL"),
        ({"SUPABASE_URL": "http://x"}, "no anon key"),
        ({"SUPABASE_URL": "http://x", "SUPABASE_ANON_KEY": "nope", "SUPABASE_SERVICE_ROLE_KEY": KEY}, "not a JWT"),
    ],
)
def test_bad_targets(env: dict[str, str], needle: str) -> None:
    with pytest.raises(TargetError, match=needle) as e:
        from_env(env)
    assert "\n" not in str(e.value)


def test_missing_env_file(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="env file"):
        from_env_file(tmp_path / "nope.env")
