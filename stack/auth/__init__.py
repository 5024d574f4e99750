"""The auth endpoint: the GoTrue subset supabase-py and supabase-js use, at ``/auth/v1``.

Signup (autoconfirmed, as the Supabase CLI's local stack), password and refresh-token grants
(refresh tokens rotate; a revoked one is refused), ``/user`` read and update, logout with
scopes, and the admin users API for the service role. Access tokens carry GoTrue's claims,
including ``session_id``, which must still name a live session. Behaviour read from
supabase/auth and the two clients; see docs/protocol/auth.md.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from stack import jwt
from stack.auth import errors as E
from stack.auth.errors import API_VERSION, AuthError, error_response
from stack.auth.store import Store, hash_password, user_json, verify_password
from stack.settings import StackSettings

log = logging.getLogger("stack.auth")

__all__ = ["routes"]

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
Handler = Callable[[Request], Awaitable[Response]]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"X-Supabase-Api-Version": API_VERSION, **(headers or {})})


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise E.bad_json(str(e).split(":")[0]) from e
    if not isinstance(data, dict):
        raise E.bad_json("expected a JSON object")
    return data


def _str(body: dict[str, Any], key: str) -> str | None:
    v = body.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise E.validation(f"{key} must be a string")
    return v


def _obj(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    for k in keys:
        v = body.get(k)
        if v is None:
            continue
        if not isinstance(v, dict):
            raise E.validation(f"{k} must be an object")
        return v
    return {}


def _check_password(pw: str | None) -> None:
    if pw is None or len(pw) < 6:
        raise E.weak_password()
    if len(pw) > 72:  # bcrypt's limit, as GoTrue enforces
        raise E.validation("Password cannot be longer than 72 characters")


def _check_email(email: str) -> None:
    if not EMAIL.match(email) or len(email) > 255:
        raise E.validation("Unable to validate email address: invalid format")


class AuthAPI:
    def __init__(self, settings: StackSettings) -> None:
        self.s = settings

    def endpoint(self, fn: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except AuthError as e:
                return error_response(request, e)
            except psycopg.Error as e:  # as GoTrue: a 500 naming no internals (a foreign key, the database gone)
                log.warning("database error on %s %s: %s", request.method, request.url.path,
                            str(e).strip().splitlines()[:1])
                return error_response(request, AuthError(500, "unexpected_failure", "Database error processing the "
                                                                                    "request"))
        return wrapped

    # -- tokens -------------------------------------------------------------------------------------
    def _issuer(self) -> str:
        return f"{self.s.api_url}/auth/v1" if self.s.api_url else "supabase"

    def _session(self, user: dict[str, Any], sid: str, refresh: str, method: str) -> dict[str, Any]:
        now = int(time.time())
        u = user_json(user)
        claims = {
            "aud": "authenticated", "exp": now + self.s.jwt_exp, "iat": now, "iss": self._issuer(), "sub": u["id"],
            "email": u["email"], "phone": u["phone"], "app_metadata": u["app_metadata"],
            "user_metadata": u["user_metadata"], "role": u["role"], "aal": "aal1",
            "amr": [{"method": method, "timestamp": now}], "session_id": sid, "is_anonymous": u["is_anonymous"],
        }
        return {"access_token": jwt.encode(claims, self.s.jwt_secret), "token_type": "bearer",
                "expires_in": self.s.jwt_exp, "expires_at": now + self.s.jwt_exp, "refresh_token": refresh, "user": u}

    def _claims(self, request: Request) -> dict[str, Any]:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise E.no_authorization()
        try:
            return jwt.decode(auth[7:].strip(), self.s.jwt_secret)
        except jwt.JWTError as e:
            if e.expired:
                raise AuthError(403, "bad_jwt", "invalid JWT: unable to parse or verify signature, token has "
                                                "invalid claims: token is expired") from e
            raise E.bad_jwt(e.reason.removeprefix("invalid JWT: ").split(", ")[-1]) from e

    async def _current_user(self, store: Store, request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        claims = self._claims(request)
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise AuthError(403, "bad_jwt", "invalid claim: missing sub claim")
        user = await store.user_by_id(sub)
        if user is None:
            raise AuthError(403, "user_not_found", "User from sub claim in JWT does not exist")
        sid = claims.get("session_id")
        if isinstance(sid, str) and not await store.session_exists(sid):
            raise AuthError(403, "session_not_found", "Session from session_id claim in JWT does not exist")
        return claims, user

    def _require_admin(self, request: Request) -> None:
        if self._claims(request).get("role") not in ("service_role", "supabase_admin"):
            raise E.not_admin()

    def _store(self, request: Request) -> Any:
        return request.app.state.pools.auth.connection()

    # -- public endpoints ---------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return _json({"version": "zora-embedded", "name": "GoTrue", "description": "GoTrue-compatible auth "
                      "(Zora embedded stack)"})

    async def settings(self, request: Request) -> Response:
        return _json({"external": {"email": True, "phone": False, "anonymous_users": False},
                      "disable_signup": False, "mailer_autoconfirm": True, "phone_autoconfirm": False,
                      "sms_provider": "", "saml_enabled": False})

    async def signup(self, request: Request) -> Response:
        body = await _body(request)
        email, phone, password = _str(body, "email"), _str(body, "phone"), _str(body, "password")
        if not email and not phone:
            raise E.validation("To signup, please provide your email")
        if email:
            _check_email(email)
        _check_password(password)
        assert password is not None
        hashed = await hash_password(password)
        async with self._store(request) as conn, conn.transaction():
            store = Store(conn)
            existing = await (store.user_by_email(email) if email else store.user_by_phone(phone or ""))
            if existing is not None:
                raise AuthError(422, "user_already_exists", "User already registered")
            user = await store.create_user(email=email, phone=phone, password_hash=hashed,
                                           user_metadata=_obj(body, "data"), app_metadata={}, confirmed=True)
            sid, refresh = await store.new_session(str(user["id"]), request.headers.get("user-agent"), _ip(request))
            user = await store.user_by_id(str(user["id"])) or user
            return _json(self._session(user, sid, refresh, "password"))

    async def token(self, request: Request) -> Response:
        grant = request.query_params.get("grant_type")
        body = await _body(request)
        if grant == "password":
            return await self._password_grant(request, body)
        if grant == "refresh_token":
            return await self._refresh_grant(request, body)
        raise AuthError(400, "validation_failed", "unsupported_grant_type")

    async def _password_grant(self, request: Request, body: dict[str, Any]) -> Response:
        email, phone, password = _str(body, "email"), _str(body, "phone"), _str(body, "password")
        if not password or not (email or phone):
            raise E.invalid_credentials()
        async with self._store(request) as conn, conn.transaction():
            store = Store(conn)
            user = await (store.user_by_email(email) if email else store.user_by_phone(phone or ""))
            if user is None or not await verify_password(password, user["encrypted_password"]):
                raise E.invalid_credentials()
            if user.get("banned_until") and user["banned_until"].timestamp() > time.time():
                raise AuthError(400, "user_banned", "User is banned")
            sid, refresh = await store.new_session(str(user["id"]), request.headers.get("user-agent"), _ip(request))
            user = await store.user_by_id(str(user["id"])) or user
            return _json(self._session(user, sid, refresh, "password"))

    async def _refresh_grant(self, request: Request, body: dict[str, Any]) -> Response:
        token = _str(body, "refresh_token")
        if not token:
            raise AuthError(400, "validation_failed", "refresh_token required")
        async with self._store(request) as conn, conn.transaction():
            store = Store(conn)
            row = await store.refresh_token(token)
            if row is None:
                raise AuthError(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
            if row["revoked"]:
                raise AuthError(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used")
            user = await store.user_by_id(str(row["user_id"]))
            if user is None:
                raise AuthError(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
            await store.revoke_token(token)
            new = await store.new_refresh_token(str(user["id"]), str(row["session_id"]), parent=token)
            return _json(self._session(user, str(row["session_id"]), new, "token_refresh"))

    async def get_user(self, request: Request) -> Response:
        async with self._store(request) as conn:
            store = Store(conn)
            _, user = await self._current_user(store, request)
            return _json(user_json(user, await store.identities(str(user["id"]))))

    async def put_user(self, request: Request) -> Response:
        body = await _body(request)
        async with self._store(request) as conn, conn.transaction():
            store = Store(conn)
            _, user = await self._current_user(store, request)
            fields: dict[str, Any] = {}
            email, password = _str(body, "email"), _str(body, "password")
            if email:
                _check_email(email)
                other = await store.user_by_email(email)
                if other is not None and other["id"] != user["id"]:
                    raise AuthError(422, "email_exists", "A user with this email address has already been registered")
                fields["email"] = email
            if password is not None:
                _check_password(password)
                fields["encrypted_password"] = await hash_password(password)
            if body.get("data") is not None:
                fields["raw_user_meta_data"] = _obj(body, "data")
            updated = await store.update_user(str(user["id"]), fields) if fields else user
            assert updated is not None
            return _json(user_json(updated, await store.identities(str(user["id"]))))

    async def logout(self, request: Request) -> Response:
        scope = request.query_params.get("scope", "global")
        if scope not in ("global", "local", "others"):
            raise E.validation("Unsupported logout scope")
        async with self._store(request) as conn, conn.transaction():
            store = Store(conn)
            claims, user = await self._current_user(store, request)
            await store.end_sessions(str(user["id"]), claims.get("session_id"), scope)
        return Response(status_code=204)

    # -- admin --------------------------------------------------------------------------------------
    async def admin_create(self, request: Request) -> Response:
        self._require_admin(request)
        body = await _body(request)
        email, phone, password = _str(body, "email"), _str(body, "phone"), _str(body, "password")
        if email:
            _check_email(email)
        if password is not None:
            _check_password(password)
        role = _str(body, "role") or "authenticated"
        hashed = await hash_password(password) if password else None
        async with self._store(request) as conn, conn.transaction():
            store = Store(conn)
            if email and await store.user_by_email(email) is not None:
                raise AuthError(422, "email_exists", "A user with this email address has already been registered")
            if phone and await store.user_by_phone(phone) is not None:
                raise AuthError(422, "phone_exists", "A user with this phone number has already been registered")
            user = await store.create_user(
                email=email, phone=phone, password_hash=hashed, role=role,
                user_metadata=_obj(body, "user_metadata", "data"), app_metadata=_obj(body, "app_metadata"),
                confirmed=bool(body.get("email_confirm") or body.get("phone_confirm")))
            return _json(user_json(user, await store.identities(str(user["id"]))))

    async def admin_list(self, request: Request) -> Response:
        self._require_admin(request)
        try:
            page = max(1, int(request.query_params.get("page") or "1"))
            per_page = min(1000, max(1, int(request.query_params.get("per_page") or "50")))
        except ValueError as e:
            raise E.validation("page and per_page must be integers") from e
        async with self._store(request) as conn:
            rows, total = await Store(conn).list_users(page, per_page)
        last = max(1, -(-total // per_page))
        links = []
        if page < last:
            links.append(f'</admin/users?page={page + 1}&per_page={per_page}>; rel="next"')
        links.append(f'</admin/users?page={last}&per_page={per_page}>; rel="last"')
        return _json({"users": [user_json(r) for r in rows], "aud": "authenticated"},
                     headers={"X-Total-Count": str(total), "Link": ", ".join(links)})

    async def admin_user(self, request: Request) -> Response:
        self._require_admin(request)
        uid = request.path_params["uid"]
        async with self._store(request) as conn, conn.transaction():
            store = Store(conn)
            user = await store.user_by_id(uid)
            if user is None:
                raise AuthError(404, "user_not_found", "User not found")
            if request.method == "GET":
                return _json(user_json(user, await store.identities(uid)))
            if request.method == "DELETE":
                await store.delete_user(uid)
                return _json({})
            body = await _body(request)
            fields: dict[str, Any] = {}
            email, password, phone = _str(body, "email"), _str(body, "password"), _str(body, "phone")
            if email:
                _check_email(email)
                fields["email"] = email
            if phone:
                fields["phone"] = phone
            if password is not None:
                _check_password(password)
                fields["encrypted_password"] = await hash_password(password)
            if body.get("user_metadata") is not None:
                fields["raw_user_meta_data"] = _obj(body, "user_metadata")
            if body.get("app_metadata") is not None:
                fields["raw_app_meta_data"] = _obj(body, "app_metadata")
            if body.get("email_confirm") is True:
                fields["email_confirmed_at"] = True
            if body.get("ban_duration") == "none":
                fields["banned_until"] = None
            updated = await store.update_user(uid, fields) if fields else user
            assert updated is not None
            return _json(user_json(updated, await store.identities(uid)))


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def routes(settings: StackSettings) -> list[BaseRoute]:
    api = AuthAPI(settings)
    ep = api.endpoint
    return [
        Route("/health", ep(api.health), methods=["GET"]),
        Route("/settings", ep(api.settings), methods=["GET"]),
        Route("/signup", ep(api.signup), methods=["POST"]),
        Route("/token", ep(api.token), methods=["POST"]),
        Route("/user", ep(api.get_user), methods=["GET"]),
        Route("/user", ep(api.put_user), methods=["PUT"]),
        Route("/logout", ep(api.logout), methods=["POST"]),
        Route("/admin/users", ep(api.admin_create), methods=["POST"]),
        Route("/admin/users", ep(api.admin_list), methods=["GET"]),
        Route("/admin/users/{uid}", ep(api.admin_user), methods=["GET", "PUT", "DELETE"]),
    ]
