"""The realtime websocket endpoint and its transport in process (Starlette's TestClient), no database.

``app.state.realtime`` is a ``Realtime`` that was never started, its publication a fake. What runs for real:
the endpoint's key checks, ``WebSocketTransport`` (reader, writer, timer), the sans-IO ``Connection``, the hub,
and the client side of the protocol (``PhoenixProtocol``) reading what arrives.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from harness.phoenix import ChannelState, Closed, Message, PhoenixProtocol, Reply
from harness.phoenix.codec import VSN1, VSN2
from stack import jwt
from stack.gateway import GatewayMiddleware
from stack.realtime.filters import Subscription
from stack.realtime.server import Realtime, routes
from stack.settings import StackSettings

SECRET = "server-test-secret-" + "b" * 32
SETTINGS = StackSettings(jwt_secret=SECRET, anon_key=jwt.make_api_key("anon", SECRET),
                         service_role_key=jwt.make_api_key("service_role", SECRET), rest_dsn="", auth_dsn="")
ITEMS = {"postgres_changes": [{"event": "*", "schema": "public", "table": "items"}]}


class StreamComesUp:
    """A publication that serves ``public.items``; its WAL stream is down until the transport waits for it."""

    def __init__(self) -> None:
        self.live = False
        self.waited = 0

    async def validate(self, subs: list[Subscription]) -> str:
        return "" if all(s.table == "items" for s in subs) else "Unable to subscribe to changes"

    def streaming(self) -> bool:
        return self.live

    async def wait_streaming(self, timeout: float) -> bool:
        self.waited += 1
        await asyncio.sleep(0)  # a yield: the stream "connects" while the transport waits
        self.live = True
        return True


@pytest.fixture
def rt() -> Realtime:
    r = Realtime(SETTINGS)
    r.publication = StreamComesUp()  # type: ignore[assignment]
    r.accepting = True
    return r


@pytest.fixture
def client(rt: Realtime) -> Iterator[TestClient]:
    """The realtime routes behind the gateway, as ``create_app`` mounts them, without the app's lifespan (it needs
    PostgreSQL). Entered, so every websocket session runs on one event loop, as under uvicorn."""
    app = Starlette(routes=[Mount("/realtime/v1", routes=routes(SETTINGS))],
                    middleware=[Middleware(GatewayMiddleware, keys=(SETTINGS.anon_key, SETTINGS.service_role_key),
                                           max_body_bytes=SETTINGS.max_body_bytes)])
    app.state.realtime = rt
    with TestClient(app) as c:
        yield c


def url(key: str | None = SETTINGS.anon_key, vsn: str = VSN1) -> str:
    return "/realtime/v1/websocket?" + (f"apikey={key}&" if key is not None else "") + f"vsn={vsn}"


def token(exp_in: float, role: str = "authenticated") -> str:
    return jwt.encode({"sub": "u1", "role": role, "exp": int(time.time() + exp_in)}, SECRET)


class Client:
    """Our client protocol over TestClient's websocket session."""

    def __init__(self, ws: Any, vsn: str = VSN1) -> None:
        self.ws = ws
        self.proto = PhoenixProtocol(vsn)
        self.raw: list[str | bytes] = []

    def send(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            self.ws.send_bytes(data)
        else:
            self.ws.send_text(data)

    def receive(self, timeout: float = 5.0) -> Any:
        """TestClient's ``receive`` waits forever; a broken server must fail the test, not hang it."""
        async def bounded() -> Any:
            with anyio.fail_after(timeout):
                return await self.ws._send_rx.receive()

        return self.ws.portal.call(bounded)

    def next(self) -> Reply | Message | Closed:
        while True:
            msg = self.receive()
            if msg["type"] == "websocket.close":
                raise WebSocketDisconnect(msg.get("code", 1000))
            data = msg.get("text") if msg.get("text") is not None else msg["bytes"]
            self.raw.append(data)
            events = self.proto.receive(data)
            if events:
                return events[0]

    def join(self, topic: str, config: dict[str, Any], tok: str | None = None) -> Reply:
        payload: dict[str, Any] = {"config": config}
        if tok:
            payload["access_token"] = tok
        self.send(self.proto.join(topic, payload))
        rep = self.next()
        assert isinstance(rep, Reply) and rep.kind == "join"
        return rep


@pytest.mark.parametrize(
    ("key", "code"),
    [(None, 1008), ("nope", 1008), (jwt.make_api_key("anon", "x" * 40), 1008),
     (jwt.encode({"role": "anon", "exp": int(time.time()) - 1}, SECRET), 1008)],
    ids=["missing", "garbage", "wrong-secret", "expired"],
)
def test_bad_keys_are_refused_before_the_upgrade(client: TestClient, key: str | None, code: int) -> None:
    with pytest.raises(WebSocketDisconnect) as e, client.websocket_connect(url(key)):
        pass
    assert e.value.code == code


def test_not_accepting_means_try_again_later(client: TestClient, rt: Realtime) -> None:
    rt.accepting = False
    with pytest.raises(WebSocketDisconnect) as e, client.websocket_connect(url()):
        pass
    assert e.value.code == 1013


def test_join_heartbeat_and_the_system_message_once_streaming(client: TestClient, rt: Realtime) -> None:
    with client.websocket_connect(url(token(3600))) as ws:  # any project JWT opens the socket
        c = Client(ws)
        assert len(rt.sockets) == 1
        rep = c.join("realtime:room", ITEMS)
        assert rep.status == "ok" and isinstance(rep.response["postgres_changes"][0]["id"], int)
        system = c.next()  # sent by the transport's timer once the stream came up
        assert isinstance(system, Message) and system.payload["message"] == "Subscribed to PostgreSQL"
        assert rt.publication.waited >= 1  # type: ignore[attr-defined]
        c.send(c.proto.heartbeat() or "")
        hb = c.next()
        assert isinstance(hb, Reply) and hb.kind == "heartbeat" and hb.status == "ok"
        c.send(c.proto.push("realtime:nobody", "broadcast", {"event": "x"})[1])
        unmatched = c.next()
        assert isinstance(unmatched, Reply) and unmatched.response == {"reason": "unmatched topic"}
    assert rt.sockets == {} and not rt.hub.topics  # the socket went away: its channels left the hub


def test_expiry_closes_the_channel_on_time(client: TestClient) -> None:
    with client.websocket_connect(url()) as ws:
        c = Client(ws)
        assert c.join("realtime:exp", {}, token(1.0)).status == "ok"
        started = time.monotonic()
        system, closed = c.next(), c.next()
        assert time.monotonic() - started < 3
        assert isinstance(system, Message) and system.payload["extension"] == "system"
        assert "Token has expired" in system.payload["message"]
        assert closed == Closed("realtime:exp", "phx_close")
        assert c.proto.channels["realtime:exp"].state == ChannelState.CLOSED
        c.send(c.proto.heartbeat() or "")
        assert isinstance(c.next(), Reply)  # the socket stays up


def test_broadcast_between_sockets_and_from_rest(client: TestClient) -> None:
    with client.websocket_connect(url()) as w1, client.websocket_connect(url()) as w2:
        a, b = Client(w1), Client(w2)
        a.join("realtime:room", {"broadcast": {"ack": True}})
        b.join("realtime:room", {})
        a.send(a.proto.push("realtime:room", "broadcast", {"type": "broadcast", "event": "hi", "payload": {"n": 1}})[1])
        ack = a.next()
        assert isinstance(ack, Reply) and ack.status == "ok"
        assert b.next() == Message("realtime:room", "broadcast", {"type": "broadcast", "event": "hi", "payload": {"n": 1}})
        r = client.post("/realtime/v1/api/broadcast", headers={"apikey": SETTINGS.anon_key},
                        json={"messages": [{"topic": "room", "event": "news", "payload": {}}]})
        assert r.status_code == 202
        for c in (a, b):
            got = c.next()
            assert isinstance(got, Message) and got.payload["event"] == "news"


def test_vsn2_binary_broadcast_goes_out_as_kind_4(client: TestClient) -> None:
    with client.websocket_connect(url(vsn=VSN2)) as w1, client.websocket_connect(url(vsn=VSN2)) as w2:
        a, b = Client(w1, VSN2), Client(w2, VSN2)
        rep = a.join("realtime:bin", {})
        b.join("realtime:bin", {})
        assert json.loads(a.raw[0])[2:4] == ["realtime:bin", "phx_reply"]  # vsn 2: array frames
        join_ref = (rep.ref or "").encode()
        parts = [join_ref, b"2", b"realtime:bin", b"blob", b""]
        w1.send_bytes(bytes([3, *map(len, parts), 0]) + b"".join(parts) + b"\x00\x01")
        frame = b.receive()["bytes"]
        assert frame[0] == 4 and frame.endswith(b"realtime:binblob\x00\x01")
