"""Users, sessions and refresh tokens in GoTrue's own tables (auth.users, auth.identities,
auth.sessions, auth.refresh_tokens), with GoTrue's column values, so triggers on auth.users
(the Zora profile trigger) see what they see on Supabase."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import bcrypt
from anyio import to_thread
from psycopg import AsyncConnection
from psycopg.rows import dict_row

__all__ = ["Store", "hash_password", "user_json", "verify_password"]

INSTANCE = "00000000-0000-0000-0000-000000000000"
BCRYPT_COST = 10  # GoTrue's

USER_COLUMNS = ("id, aud, role, email, phone, encrypted_password, email_confirmed_at, phone_confirmed_at, "
                "confirmed_at, last_sign_in_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, "
                "is_anonymous, is_sso_user, banned_until, deleted_at, invited_at, confirmation_sent_at")


async def hash_password(password: str) -> str:
    """bcrypt, cost 10, in a worker thread (about 60 ms of CPU: never on the event loop)."""
    def work() -> str:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
    return await to_thread.run_sync(work)


async def verify_password(password: str, hashed: str | None) -> bool:
    if not hashed:
        return False

    def work() -> bool:
        try:  # pgcrypto writes $2a$ hashes (the seed data); bcrypt reads them
            return bcrypt.checkpw(password.encode(), hashed.encode())
        except ValueError:
            return False
    return await to_thread.run_sync(work)


def _iso(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return v


def user_json(row: dict[str, Any], identities: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The user object GoTrue returns (no password hash, ever)."""
    out: dict[str, Any] = {
        "id": str(row["id"]), "aud": row["aud"] or "authenticated", "role": row["role"] or "authenticated",
        "email": row["email"] or "", "phone": row["phone"] or "",
        "app_metadata": row["raw_app_meta_data"] or {}, "user_metadata": row["raw_user_meta_data"] or {},
        "identities": [
            {"identity_id": str(i["id"]), "id": i["provider_id"], "user_id": str(i["user_id"]),
             "identity_data": i["identity_data"], "provider": i["provider"], "email": i.get("email"),
             "last_sign_in_at": _iso(i["last_sign_in_at"]), "created_at": _iso(i["created_at"]),
             "updated_at": _iso(i["updated_at"])}
            for i in (identities or [])
        ],
        "created_at": _iso(row["created_at"]), "updated_at": _iso(row["updated_at"]),
        "is_anonymous": bool(row["is_anonymous"]),
    }
    for k in ("email_confirmed_at", "phone_confirmed_at", "confirmed_at", "last_sign_in_at", "invited_at",
              "confirmation_sent_at", "banned_until"):
        if row.get(k) is not None:
            out[k] = _iso(row[k])
    return out


class Store:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def _one(self, query: str, params: Any) -> dict[str, Any] | None:
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return await cur.fetchone()

    async def user_by_email(self, email: str) -> dict[str, Any] | None:
        return await self._one(f"select {USER_COLUMNS} from auth.users where lower(email) = lower(%s)"
                               " and deleted_at is null", (email,))

    async def user_by_phone(self, phone: str) -> dict[str, Any] | None:
        return await self._one(f"select {USER_COLUMNS} from auth.users where phone = %s and deleted_at is null",
                               (phone,))

    async def user_by_id(self, uid: str) -> dict[str, Any] | None:
        try:
            uuid.UUID(uid)
        except ValueError:
            return None
        return await self._one(f"select {USER_COLUMNS} from auth.users where id = %s and deleted_at is null", (uid,))

    async def identities(self, uid: str) -> list[dict[str, Any]]:
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("select id, provider_id, user_id, identity_data, provider, email, last_sign_in_at,"
                              " created_at, updated_at from auth.identities where user_id = %s order by created_at",
                              (uid,))
            return await cur.fetchall()

    async def create_user(self, *, email: str | None, phone: str | None, password_hash: str | None,
                          user_metadata: dict[str, Any], app_metadata: dict[str, Any], confirmed: bool,
                          role: str = "authenticated") -> dict[str, Any]:
        uid = str(uuid.uuid4())
        provider = "email" if email else "phone"
        app = {"provider": provider, "providers": [provider], **app_metadata}
        row = await self._one(
            "insert into auth.users (instance_id, id, aud, role, email, phone, encrypted_password,"
            " email_confirmed_at, phone_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at,"
            " is_sso_user, is_anonymous)"
            " values (%s, %s, 'authenticated', %s, %s, %s, %s, case when %s and %s::text is not null then now() end,"
            " case when %s and %s::text is not null then now() end, %s, %s, now(), now(), false, false)"
            f" returning {USER_COLUMNS}",
            (INSTANCE, uid, role, email, phone, password_hash, confirmed, email, confirmed, phone,
             json.dumps(app), json.dumps(user_metadata)))
        assert row is not None
        ident = {"sub": uid, "email": email, "email_verified": bool(confirmed and email), "phone_verified": False}
        await self.conn.execute(
            "insert into auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at,"
            " last_sign_in_at) values (%s, %s, %s, %s, now(), now(), now())",
            (uid, uid, json.dumps({k: v for k, v in ident.items() if v is not None}), provider))
        return row

    async def update_user(self, uid: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        sets = []
        params: list[Any] = []
        for col, val in fields.items():
            if col in ("raw_user_meta_data", "raw_app_meta_data"):
                sets.append(f"{col} = coalesce({col}, '{{}}'::jsonb) || %s::jsonb")
                params.append(json.dumps(val))
            elif col in ("email", "phone", "encrypted_password", "banned_until", "role"):
                sets.append(f"{col} = %s")
                params.append(val)
            elif col in ("email_confirmed_at", "phone_confirmed_at", "last_sign_in_at"):
                sets.append(f"{col} = {'now()' if val else 'null'}")
        sets.append("updated_at = now()")
        return await self._one(f"update auth.users set {', '.join(sets)} where id = %s returning {USER_COLUMNS}",
                               (*params, uid))

    async def delete_user(self, uid: str) -> bool:
        cur = await self.conn.execute("delete from auth.users where id = %s", (uid,))
        return cur.rowcount > 0

    async def list_users(self, page: int, per_page: int) -> tuple[list[dict[str, Any]], int]:
        total_row = await self._one("select count(*) as n from auth.users where deleted_at is null", ())
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"select {USER_COLUMNS} from auth.users where deleted_at is null"
                              " order by created_at, id limit %s offset %s", (per_page, (page - 1) * per_page))
            rows = await cur.fetchall()
        return rows, int(total_row["n"]) if total_row else 0

    # -- sessions ----------------------------------------------------------------------------------
    async def new_session(self, uid: str, user_agent: str | None, ip: str | None) -> tuple[str, str]:
        sid = str(uuid.uuid4())
        await self.conn.execute("insert into auth.sessions (id, user_id, created_at, updated_at, aal, user_agent, ip)"
                                " values (%s, %s, now(), now(), 'aal1', %s, %s)", (sid, uid, user_agent, ip))
        await self.conn.execute("update auth.users set last_sign_in_at = now() where id = %s", (uid,))
        return sid, await self.new_refresh_token(uid, sid, parent=None)

    async def new_refresh_token(self, uid: str, sid: str, parent: str | None) -> str:
        token = secrets.token_urlsafe(24)
        await self.conn.execute("insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at,"
                                " updated_at, parent, session_id) values (%s, %s, %s, false, now(), now(), %s, %s)",
                                (INSTANCE, token, uid, parent, sid))
        return token

    async def refresh_token(self, token: str) -> dict[str, Any] | None:
        return await self._one("select t.token, t.user_id, t.revoked, t.session_id from auth.refresh_tokens t"
                               " join auth.sessions s on s.id = t.session_id where t.token = %s for update of t",
                               (token,))

    async def revoke_token(self, token: str) -> None:
        await self.conn.execute("update auth.refresh_tokens set revoked = true, updated_at = now() where token = %s",
                                (token,))

    async def session_exists(self, sid: str) -> bool:
        return await self._one("select 1 as ok from auth.sessions where id = %s", (sid,)) is not None

    async def end_sessions(self, uid: str, sid: str | None, scope: str) -> None:
        if scope == "local":
            await self.conn.execute("delete from auth.sessions where id = %s", (sid,))
        elif scope == "others":
            await self.conn.execute("delete from auth.sessions where user_id = %s and id <> %s", (uid, sid))
        else:
            await self.conn.execute("delete from auth.sessions where user_id = %s", (uid,))
