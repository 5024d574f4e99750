"""GoTrue's error responses.

Clients that send ``X-Supabase-Api-Version: 2024-01-01`` (supabase-js, supabase-py) get
``{"code": "<error_code>", "message": "..."}`` and the version header back; older clients
get the legacy ``{"code": <status>, "error_code": "...", "msg": "..."}`` (supabase/auth
``internal/api/errors.go``). Both clients read the error code and message from either.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["API_VERSION", "AuthError", "error_response"]

API_VERSION = "2024-01-01"


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}


def wants_new_errors(request: Request) -> bool:
    v = request.headers.get("x-supabase-api-version", "")
    return len(v) == 10 and v >= API_VERSION


def error_response(request: Request, e: AuthError) -> JSONResponse:
    if wants_new_errors(request):
        body: dict[str, Any] = {"code": e.code, "message": e.message, **e.extra}
        return JSONResponse(body, status_code=e.status, headers={"X-Supabase-Api-Version": API_VERSION})
    return JSONResponse({"code": e.status, "error_code": e.code, "msg": e.message, **e.extra}, status_code=e.status)


# The errors GoTrue sends for the paths this stack serves.
def bad_json(detail: str) -> AuthError:
    return AuthError(400, "bad_json", f"Could not parse request body as JSON: {detail}")


def validation(message: str) -> AuthError:
    return AuthError(400, "validation_failed", message)


def invalid_credentials() -> AuthError:
    return AuthError(400, "invalid_credentials", "Invalid login credentials")


def weak_password() -> AuthError:
    return AuthError(422, "weak_password", "Password should be at least 6 characters.",
                     {"weak_password": {"reasons": ["length"]}})


def no_authorization() -> AuthError:
    return AuthError(401, "no_authorization", "This endpoint requires a valid Bearer token")


def bad_jwt(reason: str) -> AuthError:
    return AuthError(403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {reason}")


def not_admin() -> AuthError:
    return AuthError(403, "not_admin", "User not allowed")
