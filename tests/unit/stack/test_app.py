"""The stack's one ASGI app in process, its lifespan not run (so no database): what answers before PostgreSQL.

CORS and the gateway in front of every route, auth's open endpoints, REST's token refusals (they come before a
connection is taken) and the realtime broadcast endpoint with an unstarted ``Realtime`` on ``app.state``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from stack import jwt
from stack.app import create_app
from stack.realtime.server import Realtime
from stack.settings import StackSettings

SECRET = "app-test-secret-" + "a" * 32
SETTINGS = StackSettings(jwt_secret=SECRET, anon_key=jwt.make_api_key("anon", SECRET),
                         service_role_key=jwt.make_api_key("service_role", SECRET), rest_dsn="", auth_dsn="",
                         max_body_bytes=2048)
ANON = {"apikey": SETTINGS.anon_key}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(SETTINGS)
    app.state.realtime = Realtime(SETTINGS)  # never started: no WAL source, no database
    yield TestClient(app)  # not entered: the lifespan (pools, DDL watch, realtime start) does not run


def test_cors_preflight_needs_no_key(client: TestClient) -> None:
    r = client.options("/rest/v1/orders", headers={"Origin": "http://localhost:3000",
                                                   "Access-Control-Request-Method": "PATCH",
                                                   "Access-Control-Request-Headers": "apikey,authorization,prefer"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert "PATCH" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "apikey,authorization,prefer"


def test_gateway_refusals_carry_cors_headers(client: TestClient) -> None:
    """A browser app must be able to read the 401 (CORS is outside the gateway)."""
    r = client.get("/rest/v1/orders", headers={"Origin": "http://localhost:3000"})
    assert (r.status_code, r.json()) == (401, {"message": "No API key found in request"})
    assert r.headers["access-control-allow-origin"] == "*"
    assert "Content-Range" in r.headers["access-control-expose-headers"]
    forged = jwt.make_api_key("service_role", "f" * 40)
    r = client.get("/auth/v1/user", headers={"apikey": forged})
    assert (r.status_code, r.json()) == (401, {"message": "Invalid API key"})
    r = client.post("/auth/v1/signup", headers=ANON, content=b"{" + b" " * 4096 + b"}")
    assert (r.status_code, r.json()) == (413, {"message": "Request size limit exceeded"})


def test_auth_open_endpoints(client: TestClient) -> None:
    assert client.get("/auth/v1/health").json()["name"] == "GoTrue"  # open, no key
    r = client.get("/auth/v1/settings", headers=ANON)
    assert r.status_code == 200 and r.json()["external"]["email"] is True


@pytest.mark.parametrize(
    ("authorization", "code", "message", "challenge"),
    [
        ("Bearer garbage", "PGRST301", "invalid JWT: unable to parse or verify signature, token is malformed", True),
        (f"Bearer {jwt.encode({'role': 'authenticated', 'exp': int(time.time()) - 5}, SECRET)}", "PGRST303",
         "JWT expired", True),
        (f"Bearer {jwt.encode({'role': 'authenticated', 'exp': 9999999999}, 'w' * 40)}", "PGRST301",
         "invalid JWT: unable to parse or verify signature, signature is invalid", True),
        (f"Bearer {jwt.encode({'role': '', 'exp': 9999999999}, SECRET)}", "PGRST301",
         "JWT role claim must be a string", False),
    ],
    ids=["garbage", "expired", "wrong-secret", "empty-role"],
)
def test_rest_refuses_bad_tokens_before_the_database(client: TestClient, authorization: str, code: str,
                                                     message: str, challenge: bool) -> None:
    r = client.get("/rest/v1/orders", headers={**ANON, "Authorization": authorization})
    assert r.status_code == 401
    assert r.json() == {"code": code, "details": None, "hint": None, "message": message}
    if challenge:
        assert r.headers["www-authenticate"] == f'Bearer error="invalid_token", error_description="{message}"'


def test_realtime_rest_broadcast(client: TestClient) -> None:
    url = "/realtime/v1/api/broadcast"
    assert client.post(url, json={"messages": [{"topic": "room", "event": "e"}]}).status_code == 401  # gateway
    r = client.post(url, headers=ANON, json={"messages": [{"topic": "room", "event": "e", "payload": {"x": 1}}]})
    assert r.status_code == 202
    assert client.post(url, headers=ANON, json={"messages": []}).json() == {"errors": {"messages": ["can't be blank"]}}
    r = client.post(url, headers=ANON, json={"messages": [{"topic": "room"}]})
    assert r.status_code == 422 and "topic and an event" in r.text
    assert client.post(url, headers=ANON, content=b"{nope").status_code == 400
    r = client.post(url, headers={**ANON, "Authorization": "Bearer garbage"}, json={"messages": []})
    assert r.status_code == 401
