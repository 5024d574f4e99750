"""The Kong-like gateway in process (Starlette's TestClient), around a trivial app: no stack, no database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from stack.gateway import GatewayMiddleware

KEYS = ("anon-key", "service-key")
LIMIT = 1000


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"path": request.url.path, "read": len(body)})


async def ws_echo(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(await ws.receive_text())
    await ws.close()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    routes = [Route(p, echo, methods=["GET", "POST", "OPTIONS"]) for p in
              ("/rest/v1/items", "/auth/v1/health", "/auth/v1/verify", "/auth/v1/user", "/realtime/v1/api/broadcast",
               "/elsewhere")]
    app = Starlette(routes=[*routes, WebSocketRoute("/realtime/v1/websocket", ws_echo)],
                    middleware=[Middleware(GatewayMiddleware, keys=KEYS, max_body_bytes=LIMIT)])
    yield TestClient(app)


@pytest.mark.parametrize("path", ["/rest/v1/items", "/auth/v1/user", "/realtime/v1/api/broadcast"])
def test_gated_paths_need_a_known_key(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert (r.status_code, r.json()) == (401, {"message": "No API key found in request"})
    r = client.get(path, headers={"apikey": ""})
    assert (r.status_code, r.json()) == (401, {"message": "No API key found in request"})
    r = client.get(path, headers={"apikey": "anon-keyX"})
    assert (r.status_code, r.json()) == (401, {"message": "Invalid API key"})
    for headers, params in (({"apikey": "anon-key"}, {}), ({"apikey": "service-key"}, {}), ({}, {"apikey": "anon-key"})):
        r = client.get(path, headers=headers, params=params)
        assert (r.status_code, r.json()["path"]) == (200, path)


def test_open_and_ungated_paths_and_preflights(client: TestClient) -> None:
    for path in ("/auth/v1/health", "/auth/v1/verify", "/elsewhere"):
        assert client.get(path).status_code == 200, path
    assert client.options("/rest/v1/items").status_code == 200  # a browser's preflight carries no key


def test_the_header_key_wins_over_the_query_key(client: TestClient) -> None:
    r = client.get("/rest/v1/items", headers={"apikey": "nope"}, params={"apikey": "anon-key"})
    assert r.status_code == 401 and r.json() == {"message": "Invalid API key"}


def test_bodies_over_the_limit_get_413_before_the_route(client: TestClient) -> None:
    headers = {"apikey": "anon-key"}
    assert client.post("/rest/v1/items", content=b"x" * LIMIT, headers=headers).json()["read"] == LIMIT
    r = client.post("/rest/v1/items", content=b"x" * (LIMIT + 1), headers=headers)
    assert (r.status_code, r.json()) == (413, {"message": "Request size limit exceeded"})

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds on the streamed body too
        for _ in range(5):
            yield b"y" * 300

    r = client.post("/rest/v1/items", content=chunks(), headers=headers)
    assert (r.status_code, r.json()) == (413, {"message": "Request size limit exceeded"})
    r = client.post("/elsewhere", content=b"z" * (LIMIT + 1))  # the limit holds on ungated paths too
    assert r.status_code == 413


def test_websockets_pass_through_untouched(client: TestClient) -> None:
    with client.websocket_connect("/realtime/v1/websocket") as ws:  # the realtime endpoint checks its own key
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
