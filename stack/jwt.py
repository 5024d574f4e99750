"""JWTs as Supabase issues and checks them: HS256 signed with the project's JWT secret.

PyJWT does the work; this module pins the algorithm (``alg: none`` and every
other algorithm are refused) and turns PyJWT's exceptions into one error with a
reason the REST and auth endpoints can put in their own error shapes.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt as pyjwt

__all__ = ["JWTError", "decode", "encode", "make_api_key", "new_secret"]

ALGORITHM = "HS256"


class JWTError(ValueError):
    """A token that must not be trusted; ``reason`` is safe to show the caller."""

    def __init__(self, reason: str, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


def new_secret() -> str:
    """A fresh secret of the length Supabase requires (at least 32 characters)."""
    return secrets.token_urlsafe(48)


def encode(claims: dict[str, Any], secret: str) -> str:
    return pyjwt.encode(claims, secret, algorithm=ALGORITHM)


def decode(token: str, secret: str, *, verify_exp: bool = True, now: float | None = None) -> dict[str, Any]:
    """Verify signature, algorithm and expiry; return the claims.

    ``now`` (epoch seconds) replaces the system clock for the expiry check, with PyJWT's own
    rule (expired when ``exp <= now``): the realtime connection takes its time from an
    injected clock, so token expiry is tested without waiting.
    """
    try:
        header = pyjwt.get_unverified_header(token)
    except pyjwt.PyJWTError as e:
        raise JWTError("invalid JWT: unable to parse or verify signature, token is malformed") from e
    if header.get("alg") != ALGORITHM:
        raise JWTError(f"invalid JWT: signing method {header.get('alg')} is invalid")
    try:
        claims = pyjwt.decode(
            token, secret, algorithms=[ALGORITHM],
            options={"verify_exp": verify_exp and now is None, "verify_aud": False}, leeway=0,
        )
    except pyjwt.ExpiredSignatureError as e:
        raise JWTError("JWT expired", expired=True) from e
    except pyjwt.InvalidSignatureError as e:
        raise JWTError("invalid JWT: unable to parse or verify signature, signature is invalid") from e
    except pyjwt.PyJWTError as e:
        raise JWTError(f"invalid JWT: {e}") from e
    if not isinstance(claims, dict):
        raise JWTError("invalid JWT: claims are not an object")
    if verify_exp and now is not None and "exp" in claims:
        try:
            exp = int(claims["exp"])
        except (ValueError, TypeError, OverflowError):
            raise JWTError("invalid JWT: Expiration Time claim (exp) must be an integer.") from None
        if exp <= now:
            raise JWTError("JWT expired", expired=True)
    return claims


def make_api_key(role: str, secret: str, years: int = 10) -> str:
    """An anon or service_role API key, shaped like the ones `supabase status` prints."""
    now = int(time.time())
    return encode({"iss": "supabase-demo", "role": role, "iat": now, "exp": now + years * 365 * 86400}, secret)
