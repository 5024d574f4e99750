"""The auth endpoint through supabase-py unchanged, and its GoTrue error shapes on the wire."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from supabase import create_client
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError
from supabase_auth.types import SignInWithEmailAndPasswordCredentials

from stack import jwt
from stack.server import EmbeddedStack
from tests.conftest import unique_email
from tests.zora_support import sql

NEW_API = {"X-Supabase-Api-Version": "2024-01-01"}


def auth_url(stack: EmbeddedStack, path: str) -> str:
    return f"{stack.api_url}/auth/v1{path}"


def test_signup_signin_refresh_user_update_signout(stack: EmbeddedStack) -> None:
    email = unique_email("flow")
    c = create_client(stack.api_url, stack.anon_key)
    r = c.auth.sign_up({"email": email, "password": "secret-123", "options": {"data": {"full_name": "Flo"}}})
    assert r.user is not None and r.session is not None and r.user.email == email
    assert r.user.user_metadata == {"full_name": "Flo"} and r.user.email_confirmed_at is not None
    # the Zora trigger on auth.users made a customer profile
    assert sql(stack, "select role, full_name from profiles where id = %s", (r.user.id,)) == [("customer", "Flo")]
    claims = jwt.decode(r.session.access_token, stack.settings.jwt_secret)  # type: ignore[union-attr]
    assert claims["sub"] == r.user.id and claims["role"] == "authenticated" and claims["aud"] == "authenticated"
    assert claims["iss"] == f"{stack.api_url}/auth/v1" and claims["session_id"] and claims["aal"] == "aal1"
    assert claims["exp"] - claims["iat"] == 3600 and claims["email"] == email

    s = c.auth.sign_in_with_password({"email": email, "password": "secret-123"}).session
    assert s is not None
    assert c.auth.get_user().user.email == email  # type: ignore[union-attr]
    fresh = c.auth.refresh_session().session
    assert fresh is not None and fresh.refresh_token != s.refresh_token and fresh.access_token
    u = c.auth.update_user({"data": {"nick": "f"}}).user
    assert u is not None and u.user_metadata == {"full_name": "Flo", "nick": "f"}
    c.auth.sign_out()
    # the session is gone: its access token no longer gets the user
    r2 = httpx.get(auth_url(stack, "/user"), headers={"apikey": stack.anon_key, **NEW_API,
                                                      "Authorization": f"Bearer {fresh.access_token}"})
    assert r2.status_code == 403 and r2.json()["code"] == "session_not_found"


def test_refresh_token_rotates_and_reuse_is_refused(stack: EmbeddedStack, new_user: Any) -> None:
    u = new_user()
    h = {"apikey": stack.anon_key, **NEW_API}
    s = httpx.post(auth_url(stack, "/token?grant_type=password"), headers=h,
                   json={"email": u["email"], "password": u["password"]}).json()
    r1 = httpx.post(auth_url(stack, "/token?grant_type=refresh_token"), headers=h,
                    json={"refresh_token": s["refresh_token"]})
    assert r1.status_code == 200 and r1.json()["refresh_token"] != s["refresh_token"]
    again = httpx.post(auth_url(stack, "/token?grant_type=refresh_token"), headers=h,
                       json={"refresh_token": s["refresh_token"]})
    assert again.status_code == 400 and again.json()["code"] == "refresh_token_already_used"
    nope = httpx.post(auth_url(stack, "/token?grant_type=refresh_token"), headers=h, json={"refresh_token": "zzz"})
    assert nope.status_code == 400 and nope.json()["code"] == "refresh_token_not_found"


def test_wrong_password_unknown_user_and_duplicate_signup(stack: EmbeddedStack, new_user: Any) -> None:
    u = new_user()
    c = create_client(stack.api_url, stack.anon_key)
    wrong: list[SignInWithEmailAndPasswordCredentials] = [{"email": u["email"], "password": "wrong-pass"},
                                                          {"email": unique_email(), "password": "x" * 8}]
    for creds in wrong:
        with pytest.raises(AuthApiError) as e:
            c.auth.sign_in_with_password(creds)
        assert e.value.status == 400 and e.value.code == "invalid_credentials"
    with pytest.raises(AuthApiError) as e:
        c.auth.sign_up({"email": u["email"], "password": "secret-123"})
    assert e.value.status == 422 and e.value.code == "user_already_exists"
    with pytest.raises(AuthWeakPasswordError) as w:
        c.auth.sign_up({"email": unique_email(), "password": "123"})
    assert w.value.code == "weak_password" and w.value.status == 422


def test_legacy_error_shape_without_api_version(stack: EmbeddedStack) -> None:
    r = httpx.post(auth_url(stack, "/token?grant_type=password"), headers={"apikey": stack.anon_key},
                   json={"email": "x@example.test", "password": "nopenope"})
    assert r.status_code == 400
    assert r.json() == {"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"}


def _none_token(claims: dict[str, Any]) -> str:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


@pytest.mark.parametrize("kind", ["expired", "wrong-secret", "alg-none", "garbage", "missing"])
def test_bad_bearer_tokens(stack: EmbeddedStack, new_user: Any, kind: str) -> None:
    u = new_user()
    now = int(time.time())
    claims = {"sub": u["id"], "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 3600}
    token = {
        "expired": jwt.encode({**claims, "exp": now - 10}, stack.settings.jwt_secret),  # type: ignore[union-attr]
        "wrong-secret": jwt.encode(claims, "z" * 40),
        "alg-none": _none_token({**claims, "role": "service_role"}),
        "garbage": "not.a.jwt",
        "missing": "",
    }[kind]
    headers = {"apikey": stack.anon_key, **NEW_API}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    r = httpx.get(auth_url(stack, "/user"), headers=headers)
    assert r.status_code == (401 if kind == "missing" else 403)
    assert r.json()["code"] in ("bad_jwt", "no_authorization") and "Traceback" not in r.text
    # none of them opens the admin API either
    r = httpx.get(auth_url(stack, "/admin/users"), headers=headers)
    assert r.status_code in (401, 403)
    assert httpx.get(auth_url(stack, "/health")).status_code == 200  # still up


def test_admin_users_api(stack: EmbeddedStack) -> None:
    admin = create_client(stack.api_url, stack.service_role_key)
    email = unique_email("adm")
    made = admin.auth.admin.create_user({"email": email, "password": "secret-123", "email_confirm": True,
                                         "user_metadata": {"full_name": "Made"}, "app_metadata": {"plan": "x"}})
    assert made.user.email == email and made.user.app_metadata["plan"] == "x"
    assert made.user.app_metadata["provider"] == "email"
    listed = admin.auth.admin.list_users(page=1, per_page=1000)
    assert email in [u.email for u in listed]
    r = httpx.get(auth_url(stack, "/admin/users?page=1&per_page=2"),
                  headers={"apikey": stack.service_role_key, "Authorization": f"Bearer {stack.service_role_key}"})
    assert len(r.json()["users"]) == 2 and int(r.headers["x-total-count"]) >= 3 and 'rel="next"' in r.headers["link"]
    assert admin.auth.admin.get_user_by_id(made.user.id).user.email == email
    upd = admin.auth.admin.update_user_by_id(made.user.id, {"user_metadata": {"nick": "m"}})
    assert upd.user.user_metadata == {"full_name": "Made", "nick": "m"}
    with pytest.raises(AuthApiError) as e:
        admin.auth.admin.create_user({"email": email, "password": "secret-123"})
    assert e.value.status == 422
    admin.auth.admin.delete_user(made.user.id)
    with pytest.raises(AuthApiError) as e:
        admin.auth.admin.get_user_by_id(made.user.id)
    assert e.value.status == 404
    assert sql(stack, "select count(*) from profiles where id = %s", (made.user.id,)) == [(0,)]


def test_a_user_token_is_not_an_admin(stack: EmbeddedStack, new_user: Any) -> None:
    u = new_user()
    s = httpx.post(auth_url(stack, "/token?grant_type=password"), headers={"apikey": stack.anon_key},
                   json={"email": u["email"], "password": u["password"]}).json()
    r = httpx.post(auth_url(stack, "/admin/users"), json={"email": unique_email()},
                   headers={"apikey": stack.anon_key, "Authorization": f"Bearer {s['access_token']}", **NEW_API})
    assert r.status_code == 403 and r.json()["code"] == "not_admin"


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{not json", "bad_json"), (b"[1,2]", "bad_json"), (b'{"email": 5, "password": "secret-123"}', "validation_failed"),
     (b'{"email": "not-an-email", "password": "secret-123"}', "validation_failed"),
     (b'{"password": "secret-123"}', "validation_failed")],
)
def test_malformed_signup_bodies(stack: EmbeddedStack, body: bytes, code: str) -> None:
    r = httpx.post(auth_url(stack, "/signup"), content=body,
                   headers={"apikey": stack.anon_key, "Content-Type": "application/json", **NEW_API})
    assert r.status_code == 400 and r.json()["code"] == code


def test_seeded_user_signs_in(stack: EmbeddedStack) -> None:
    c = create_client(stack.api_url, stack.anon_key)
    r = c.auth.sign_in_with_password({"email": "admin@zora.test", "password": "zora-admin-pass"})
    assert r.user is not None and r.user.id == "00000000-0000-4000-a000-000000000001"
    assert uuid.UUID(r.user.id)
