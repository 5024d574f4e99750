"""What Supabase's API gateway (Kong) does in front of auth and REST.

Requests must carry a project API key (``apikey`` header or query parameter): a
missing key and an unknown key get Kong's 401 bodies. Bodies over the size limit
get 413 before any service reads them. A few auth paths are open, as on Supabase.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GatewayMiddleware"]

OPEN_PATHS = ("/auth/v1/verify", "/auth/v1/callback", "/auth/v1/authorize", "/auth/v1/health")
GATED_PREFIXES = ("/auth/v1", "/rest/v1", "/realtime/v1/api")


async def _json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, keys: tuple[str, ...], max_body_bytes: int) -> None:
        self.app = app
        self.keys = keys
        self.max_body = max_body_bytes

    def _key_ok(self, key: str) -> bool:
        return any(hmac.compare_digest(key.encode(), k.encode()) for k in self.keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if path.startswith(GATED_PREFIXES) and not path.startswith(OPEN_PATHS) and scope.get("method") != "OPTIONS":
            key = headers.get("apikey")
            if key is None:
                qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                key = (qs.get("apikey") or [None])[0]
            if not key:
                await _json(send, 401, b'{"message":"No API key found in request"}')
                return
            if not self._key_ok(key):
                await _json(send, 401, b'{"message":"Invalid API key"}')
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _json(send, 413, b'{"message":"Request size limit exceeded"}')
            return
        received = 0
        too_big = False

        async def limited_receive() -> Message:
            nonlocal received, too_big
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_big = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _json(send, 413, b'{"message":"Request size limit exceeded"}')


class _BodyTooLarge(Exception):
    pass
