"""Token checks of the realtime endpoint, with the reasons Supabase Realtime gives.

Two checks, both pure (no I/O, the clock is an argument):

* ``api_key_ok``: may this key open a socket at all? A project API key, or any unexpired JWT
  signed with the project secret (as the realtime server itself accepts at connect; the key's
  role does not grant anything: each join's token decides).
* ``verify``: the claims a channel runs with (join, ``access_token`` push, periodic re-check),
  or the reason the join is refused or the channel shut down: ``InvalidJWTToken: Token has
  expired N seconds ago``, ``JwtSignatureError: ...``, ``MalformedJWT: ...``, as
  supabase/realtime's ``ChannelsAuthorization`` words them.

``TokenVerifier`` is what ``Connection`` is given as its ``Auth``.
"""

from __future__ import annotations

import contextlib
import hmac
from typing import Any

from stack import jwt
from stack.db import API_ROLES

__all__ = ["TokenVerifier"]


class TokenVerifier:
    def __init__(self, secret: str, api_keys: tuple[str, ...] = ()) -> None:
        self.secret = secret
        self.api_keys = api_keys

    def api_key_ok(self, key: str | None, now: float | None = None) -> bool:
        if not key:
            return False
        if any(hmac.compare_digest(key.encode(), k.encode()) for k in self.api_keys):
            return True
        try:
            jwt.decode(key, self.secret, now=now)
        except jwt.JWTError:
            return False
        return True

    def verify(self, token: Any, now: float) -> tuple[dict[str, Any] | None, str]:
        """Claims and "", or None and the reason Supabase would give."""
        if not isinstance(token, str) or not token:
            return None, "MalformedJWT: The token provided is not a valid JWT"
        try:
            claims = jwt.decode(token.removeprefix("Bearer ").strip(), self.secret, now=now)
        except jwt.JWTError as e:
            if e.expired:
                with contextlib.suppress(Exception):
                    exp = int(jwt.decode(token, self.secret, verify_exp=False).get("exp", 0))
                    return None, f"InvalidJWTToken: Token has expired {max(0, int(now) - exp)} seconds ago"
                return None, "InvalidJWTToken: Token has expired"
            if "signature is invalid" in e.reason:
                return None, "JwtSignatureError: Failed to validate JWT signature"
            return None, f"MalformedJWT: {e.reason}"
        if "role" not in claims or "exp" not in claims:
            return None, "InvalidJWTToken: Fields `role` and `exp` are required in JWT"
        if claims["role"] not in API_ROLES:
            return None, f"Unauthorized: role {str(claims['role'])[:64]!r} is not an API role"
        return claims, ""
