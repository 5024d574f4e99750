"""Blocking transport for ``PhoenixProtocol``: one socket, read in the caller's own thread or greenlet.

Made for Locust (``load/``): it uses only the standard library's ``socket``, ``ssl`` and ``time``, which
gevent's monkey patching turns cooperative, so one greenlet per subscriber holds its connection and
thousands share a process; without gevent it works the same in a plain thread. The WebSocket layer is
websockets' own sans-IO ``ClientProtocol`` (no second WebSocket implementation), the Phoenix layer the
project's ``PhoenixProtocol`` (no second Phoenix implementation): this module only moves bytes and keeps
time.

Every chunk read off the socket is stamped, before websockets parses it; each message it completes carries
that stamp. On a plain socket with the default clock the stamp is the kernel's (``harness.phoenix.rxstamp``:
when the chunk's last packet reached the socket), so the time a ready socket waits for its greenlet is not
counted as latency; on TLS, or with another ``now``, it is ``now()`` the moment ``recv`` returns. There,
``after_stamp`` (load's subscribers pass a ``time.sleep(0)``: a yield under gevent) has the reader yield between
the stamp and the parse, so when one event reaches many sockets at once every greenlet reads and stamps before
any of them parses (a kernel stamp needs no such turn).

``poll`` reads for a bounded time, sends the heartbeat when due (a heartbeat still unanswered at the next beat
means the connection is dead, as supabase-js decides), and reconnects with the policy's backoff
(bounded by ``max_reconnects``), rejoining every channel. Every loop is bounded by its deadline.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from harness.phoenix import rxstamp
from harness.phoenix.codec import VSN1
from harness.phoenix.protocol import SUPABASE_JS_POLICY, Closed, Message, PhoenixProtocol, ReconnectPolicy, Reply

__all__ = ["ConnectError", "SyncPhoenix"]

Event = Reply | Message | Closed
_READ = 65536


class ConnectError(ConnectionError):
    """The first connection could not be made (refused, unreachable, not a WebSocket endpoint)."""


class SyncPhoenix:
    def __init__(self, url: str, *, policy: ReconnectPolicy = SUPABASE_JS_POLICY,
                 on_event: Callable[[Event, int], None] | None = None,
                 on_state: Callable[[str, int], None] | None = None,
                 now: Callable[[], int] = time.perf_counter_ns, vsn: str = VSN1, max_reconnects: int = 1000,
                 after_stamp: Callable[[], None] | None = None) -> None:
        self.url = url
        self.policy = policy
        self.proto = PhoenixProtocol(vsn)
        self.on_event = on_event or (lambda e, t: None)
        self.on_state = on_state or (lambda s, t: None)
        self.now = now
        self.max_reconnects = max_reconnects
        # under gevent: called between a read's stamp and its parse, to let every other socket that is ready read
        # and stamp first (``time.sleep(0)``, a yield to the hub under monkey patching), so a stamp waits for
        # other sockets' reads, not for their handling
        self.after_stamp = after_stamp
        self.state = "closed"
        self.reconnects = 0  # connections re-made after a loss
        self.kernel_stamps = now is time.perf_counter_ns  # rxstamp's stamps are on that clock only
        self.stamped = {"kernel": 0, "read": 0}  # reads stamped by the kernel, and when the read returned
        self._stamping = False  # this socket's reads carry the kernel's stamps
        self._sock: socket.socket | None = None
        self._ws: ClientProtocol | None = None
        self._closing = False
        self._tries = 0
        self._next_attempt = 0.0  # time.monotonic() of the next reconnect attempt
        self._next_beat = 0.0
        self._replies: dict[str, Reply | None] = {}  # refs someone waits for -> their reply once it came
        self._fragments: list[bytes] = []
        self._fragment_text = False

    def _set_state(self, s: str) -> None:
        self.state = s
        self.on_state(s, self.now())

    # -- the socket ------------------------------------------------------------------------------
    def _open(self, timeout: float) -> None:
        """TCP (TLS for wss), then the WebSocket handshake; leftover frames are dispatched."""
        try:
            uri = parse_uri(self.url)
        except InvalidURI as e:
            raise ConnectError(f"not a websocket URL: {e}") from e
        deadline = time.monotonic() + timeout
        sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if uri.secure:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=uri.host)
            ws = ClientProtocol(uri, max_size=None)
            ws.send_request(ws.connect())
            sock.sendall(b"".join(ws.data_to_send()))
            response: Response | None = None
            leftover: list[Any] = []
            while response is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("websocket handshake timed out")
                sock.settimeout(left)
                data = sock.recv(_READ)
                if not data:
                    raise ConnectError("the server closed the connection during the websocket handshake")
                ws.receive_data(data)
                for ev in ws.events_received():
                    if isinstance(ev, Response):
                        response = ev
                    else:
                        leftover.append(ev)
            if ws.handshake_exc is not None:
                raise ConnectError(f"websocket handshake refused: {ws.handshake_exc}")
        except BaseException:
            sock.close()
            raise
        self._sock, self._ws = sock, ws
        self._stamping = self.kernel_stamps and rxstamp.enable(sock)
        self._next_beat = time.monotonic() + self.policy.heartbeat_s
        t = self.now()
        for ev in leftover:
            self._frame(ev, t)

    def _flush(self) -> None:
        assert self._ws is not None and self._sock is not None
        out = [b for b in self._ws.data_to_send() if b]
        if out:
            self._sock.sendall(b"".join(out))

    def send(self, data: str | bytes) -> None:
        """Send one Phoenix frame now (a ``ConnectionError`` if there is no connection)."""
        if self._ws is None or self._sock is None:
            raise ConnectionError("not connected")
        if isinstance(data, str):
            self._ws.send_text(data.encode())
        else:
            self._ws.send_binary(data)
        try:
            self._flush()
        except OSError:
            self._lost()
            raise ConnectionError("connection lost while sending") from None

    def _lost(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = self._ws = None
        self.proto.connection_lost()
        self._fragments = []
        for ref in self._replies:
            self._replies[ref] = None
        if self._closing:
            return
        self._set_state("closed")
        self._tries = 1
        self._next_attempt = time.monotonic() + self.policy.backoff(1)

    # -- frames in ---------------------------------------------------------------------------------
    def _frame(self, frame: Any, t: int) -> None:
        op = frame.opcode
        if op in (Opcode.TEXT, Opcode.BINARY):
            self._fragments, self._fragment_text = [frame.data], op == Opcode.TEXT
        elif op == Opcode.CONT and self._fragments:
            self._fragments.append(frame.data)
        else:
            return  # ping (answered by websockets), pong, close (the state says so)
        if not frame.fin:
            return
        body = b"".join(self._fragments)
        self._fragments = []
        payload: str | bytes = body.decode("utf-8", errors="replace") if self._fragment_text else body
        for ev in self.proto.receive(payload):
            if isinstance(ev, Reply) and ev.ref in self._replies:
                self._replies[ev.ref] = ev
            self.on_event(ev, t)

    # -- the caller's loop ---------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> None:
        """The first connection; ``ConnectError`` (or ``OSError`` / ``TimeoutError``) when it cannot be made."""
        self._closing = False
        self._set_state("connecting")
        try:
            self._open(timeout)
        except (OSError, InvalidHandshake) as e:
            self._set_state("closed")
            if isinstance(e, ConnectError):
                raise
            raise ConnectError(f"{type(e).__name__}: {e}") from e
        self._set_state("open")

    def _reconnect(self) -> None:
        self._set_state("connecting")
        try:
            self._open(min(self.policy.open_timeout_s, 30.0))
        except (OSError, InvalidHandshake):
            self._set_state("closed")
            self._tries += 1
            self._next_attempt = time.monotonic() + self.policy.backoff(self._tries)
            return
        self.reconnects += 1
        self._tries = 0
        self._set_state("open")
        for data in self.proto.rejoin_all():
            self.send(data)

    def poll(self, timeout: float) -> None:
        """Read and dispatch for up to ``timeout`` seconds: heartbeats when due, reconnects with backoff."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._closing:
            now = time.monotonic()
            if now >= deadline:
                return
            if self._sock is None:
                if self._tries > self.max_reconnects:
                    time.sleep(deadline - now)
                    return
                if now < self._next_attempt:
                    time.sleep(min(deadline, self._next_attempt) - now)
                    continue
                self._reconnect()
                continue
            if now >= self._next_beat:
                self._next_beat = now + self.policy.heartbeat_s
                beat = self.proto.heartbeat()
                if beat is None:  # the last one went unanswered: dead, as supabase-js decides
                    self._set_state("heartbeat_timeout")
                    self._lost()
                    continue
                try:
                    self.send(beat)
                except ConnectionError:
                    continue
            sock, ws = self._sock, self._ws
            assert sock is not None and ws is not None
            sock.settimeout(max(0.001, min(deadline, self._next_beat) - now))
            try:
                if self._stamping:
                    data, kt = rxstamp.recv_stamped(sock, _READ)
                else:
                    data, kt = sock.recv(_READ), None
            except TimeoutError:
                continue
            except OSError:
                self._lost()
                continue
            if kt is None:
                t = self.now()  # first thing after the bytes arrived
                self.stamped["read"] += 1
            else:
                t = kt
                self.stamped["kernel"] += 1
            if self.after_stamp is not None and kt is None:  # a kernel stamp cannot wait for other sockets
                self.after_stamp()
            if not data:
                ws.receive_eof()
                self._lost()
                continue
            ws.receive_data(data)
            for ev in ws.events_received():
                self._frame(ev, t)
            if self._ws is ws:
                try:
                    self._flush()  # pongs, the close handshake
                except OSError:
                    self._lost()
                    continue
                if ws.state is State.CLOSED:
                    self._lost()

    def request(self, ref: str, data: str | bytes, timeout: float | None = None) -> Reply:
        """Send a frame and read until its reply (``TimeoutError``, or ``ConnectionError`` if the socket went)."""
        self._replies[ref] = None
        try:
            self.send(data)
            deadline = time.monotonic() + (timeout or self.policy.push_timeout_s)
            while (rep := self._replies.get(ref)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to ref {ref}")
                if self._sock is None:
                    raise ConnectionError("connection lost before the reply")
                self.poll(min(left, 0.25))
            return rep
        finally:
            self._replies.pop(ref, None)

    def join(self, topic: str, payload: dict[str, Any], timeout: float | None = None) -> Reply:
        data = self.proto.join(topic, payload)
        ref = self.proto.channels[topic].join_ref
        assert ref is not None
        return self.request(ref, data, timeout)

    def send_join(self, topic: str, payload: dict[str, Any]) -> str:
        """Send a join without waiting: its reply comes to ``on_event`` (as every reply does)."""
        data = self.proto.join(topic, payload)
        self.send(data)
        ref = self.proto.channels[topic].join_ref
        assert ref is not None
        return ref

    def push(self, topic: str, event: str, payload: Any, timeout: float | None = None) -> Reply:
        ref, data = self.proto.push(topic, event, payload)
        return self.request(ref, data, timeout)

    def close(self) -> None:
        self._closing = True
        ws, sock = self._ws, self._sock
        if ws is not None and sock is not None:
            try:
                ws.send_close()
                sock.settimeout(1.0)
                self._flush()
            except OSError:
                pass
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._sock = self._ws = None
        self.proto.connection_lost()
        self._set_state("closed")
