"""The Kong-like gateway: API key required, unknown keys refused, oversize bodies cut off."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from stack import jwt
from stack.server import EmbeddedStack


def test_missing_api_key(stack: EmbeddedStack) -> None:
    for path in ("/rest/v1/products", "/auth/v1/user", "/auth/v1/admin/users"):
        r = httpx.get(stack.api_url + path, timeout=5)
        assert r.status_code == 401, path
        assert r.json() == {"message": "No API key found in request"}


def test_unknown_api_key(stack: EmbeddedStack) -> None:
    forged = jwt.make_api_key("service_role", "x" * 40)  # well-formed, wrong secret
    r = httpx.get(stack.api_url + "/rest/v1/products", headers={"apikey": forged}, timeout=5)
    assert r.status_code == 401
    assert r.json() == {"message": "Invalid API key"}


def test_api_key_as_query_parameter(stack: EmbeddedStack) -> None:
    r = httpx.get(stack.api_url + "/auth/v1/settings", params={"apikey": stack.anon_key}, timeout=5)
    assert r.status_code == 200


def test_health_is_open(stack: EmbeddedStack) -> None:
    assert httpx.get(stack.api_url + "/auth/v1/health", timeout=5).status_code == 200


def test_oversize_body_413_and_server_stays_up(stack: EmbeddedStack) -> None:
    headers = {"apikey": stack.anon_key, "Content-Type": "application/json"}
    big = b'{"name":"' + b"x" * (stack.settings.max_body_bytes + 10) + b'"}'  # type: ignore[union-attr]
    r = httpx.post(stack.api_url + "/auth/v1/signup", content=big, headers=headers, timeout=10)
    assert r.status_code == 413
    assert r.json() == {"message": "Request size limit exceeded"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold on the streamed body too
        for _ in range(20):
            yield b"y" * 100_000

    r = httpx.post(stack.api_url + "/auth/v1/signup", content=chunks(), headers=headers, timeout=10)
    assert r.status_code == 413
    assert httpx.get(stack.api_url + "/auth/v1/health", timeout=5).status_code == 200
