"""Token checks of the realtime endpoint on an injected clock: which keys open a socket, which tokens a channel runs with."""

from __future__ import annotations

import time

import pytest

from stack import jwt
from stack.realtime.tokens import TokenVerifier

SECRET = "tokens-test-secret-" + "z" * 32
ANON = jwt.make_api_key("anon", SECRET)
NOW = float(int(time.time()))


def tok(**claims: object) -> str:
    return jwt.encode({"role": "authenticated", "exp": int(NOW) + 60, **claims}, SECRET)


def test_api_keys_and_project_jwts_open_a_socket() -> None:
    v = TokenVerifier(SECRET, api_keys=("sb_publishable_abc", ANON))
    assert v.api_key_ok("sb_publishable_abc") and v.api_key_ok(ANON)
    assert v.api_key_ok(tok(exp=int(time.time()) + 60))  # any unexpired JWT signed with the project secret
    assert not v.api_key_ok(None) and not v.api_key_ok("")
    assert not v.api_key_ok("sb_publishable_abd")
    assert not v.api_key_ok(jwt.make_api_key("service_role", "w" * 40))  # wrong secret
    assert not v.api_key_ok(tok(exp=int(NOW) - 1), now=NOW)


def test_expiry_follows_the_injected_clock() -> None:
    v = TokenVerifier(SECRET)
    t = tok(exp=int(NOW) + 10)
    claims, reason = v.verify(t, NOW + 9.5)
    assert claims is not None and claims["exp"] == int(NOW) + 10 and reason == ""
    assert v.verify(t, NOW + 10) == (None, "InvalidJWTToken: Token has expired 0 seconds ago")  # exp <= now: expired
    assert v.verify(t, NOW + 75) == (None, "InvalidJWTToken: Token has expired 65 seconds ago")
    assert v.verify("Bearer " + t, NOW)[0] is not None  # a Bearer prefix is tolerated


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "MalformedJWT: The token provided is not a valid JWT"),
        ("", "MalformedJWT: The token provided is not a valid JWT"),
        (42, "MalformedJWT: The token provided is not a valid JWT"),
        ("abc.def", "MalformedJWT: invalid JWT: unable to parse or verify signature, token is malformed"),
        (jwt.encode({"role": "anon", "exp": 9999999999}, "q" * 40), "JwtSignatureError: Failed to validate JWT signature"),
        (tok(exp="soon"), "MalformedJWT: invalid JWT: Expiration Time claim (exp) must be an integer."),
        (jwt.encode({"exp": 9999999999}, SECRET), "InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
        (jwt.encode({"role": "anon"}, SECRET), "InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
        (tok(role="supabase_admin"), "Unauthorized: role 'supabase_admin' is not an API role"),
    ],
)
def test_refusals_carry_supabase_reasons(token: object, reason: str) -> None:
    assert TokenVerifier(SECRET).verify(token, NOW) == (None, reason)


def test_the_system_clock_still_decides_without_now() -> None:
    stale = tok(exp=int(time.time()) - 5)
    with pytest.raises(jwt.JWTError) as e:
        jwt.decode(stale, SECRET)
    assert e.value.expired
    assert jwt.decode(stale, SECRET, now=time.time() - 10)["role"] == "authenticated"
