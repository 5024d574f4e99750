"""WebSocket inspection for the proxy, sans-IO: strip compression from the upgrade request, and find
the server's messages (RFC 6455 frames) in the down stream so that ``DropFrames`` can drop whole ones.

Only a proxy made with ``inspect_websocket=True`` uses these; without it bytes pass untouched.

* ``RequestRewriter`` (client -> upstream): if a connection's first bytes are an HTTP request with
  ``Upgrade: websocket``, its ``Sec-WebSocket-Extensions`` header lines are removed, so the server
  does not negotiate permessage-deflate and frames stay readable. Anything else (a plain request, a
  TLS ClientHello) passes untouched, and after the request header everything does.
* ``FrameFilter`` (upstream -> client): after the server's ``101`` response it follows the frames,
  emitting every byte unchanged and at once, except while a ``Dropper`` wants messages: then each new
  text or binary message is held until complete and either emitted or, if its payload contains the
  dropper's text, left out (control frames always pass). A message that began while nobody wanted
  messages passes whole; fragmented messages are held whole, with the control frames between their
  fragments kept in place (emitted, never dropped); a compressed frame (RSV1) or a message larger
  than ``MAX_HELD`` is never dropped. A response other than 101 makes the rest opaque.

The frame header parser is our own (a few lines): websockets' ``Frame.parse`` consumes a stream
through generator readers and unmasks and validates as it goes, whereas here we only need where each
frame ends, without copying payloads that pass, and with the bytes left exactly as they came.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["MAX_HEAD", "MAX_HELD", "Dropper", "FrameFilter", "RequestRewriter"]

MAX_HEAD = 64 * 1024  # an HTTP head longer than this is not inspected (passed as it is)
MAX_HELD = 16 * 1024 * 1024  # a held message larger than this is emitted undropped
_METHOD = re.compile(rb"^[A-Z]{3,10} ")
_HEAD_START = re.compile(rb"(?:[A-Z]{0,10}|[A-Z]{3,10} .*)\Z", re.S)  # what an HTTP request can begin with
_UPGRADE = re.compile(rb"(?im)^upgrade:[ \t]*websocket[ \t]*\r?$")
_EXTENSIONS = re.compile(rb"(?im)^sec-websocket-extensions:[^\n]*\n")
_DATA = (1, 2)  # text, binary: the opcodes that start a message


class Dropper:
    """Which server messages to drop: the first ``count`` whose payload contains ``contains``."""

    def __init__(self, contains: str, count: int) -> None:
        self.needle = contains.encode()
        self.left = count
        self.dropped = 0

    @property
    def wants(self) -> bool:
        return self.left > 0

    def take(self, payload: bytes) -> bool:
        """True (and counted) if this message is to be dropped."""
        if self.left > 0 and self.needle in payload:
            self.left -= 1
            self.dropped += 1
            return True
        return False


class RequestRewriter:
    """The client's first bytes: an upgrade request loses its ``Sec-WebSocket-Extensions`` lines."""

    def __init__(self) -> None:
        self.done = False
        self.upgrade = False  # the request asked for a websocket
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return data
        self._buf += data
        if not _HEAD_START.match(self._buf[:11]) or len(self._buf) > MAX_HEAD:
            return self._finish(bytes(self._buf))  # not an HTTP request (a TLS ClientHello, ...): hands off
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return b""  # the head is not complete yet: hold it (the client waits for the answer anyway)
        head, rest = bytes(self._buf[:end + 4]), bytes(self._buf[end + 4:])
        if _METHOD.match(head) and _UPGRADE.search(head):
            self.upgrade = True
            head = _EXTENSIONS.sub(b"", head)
        return self._finish(head + rest)

    def flush(self) -> bytes:
        """What is held, as it is (the client closed before its head was complete)."""
        return b"" if self.done else self._finish(bytes(self._buf))

    def _finish(self, out: bytes) -> bytes:
        self.done = True
        self._buf = bytearray()
        return out


def frame_header(buf: bytes | bytearray, off: int = 0) -> tuple[int, int, int, int] | None:
    """(first byte, header length, payload length, mask offset or -1) of the frame at ``off``, or None
    if its header is not complete yet. 7-, 16- and 64-bit payload lengths (RFC 6455 5.2)."""
    if len(buf) - off < 2:
        return None
    b0, b1 = buf[off], buf[off + 1]
    n, hl = b1 & 0x7F, 2
    if n == 126:
        hl = 4
    elif n == 127:
        hl = 10
    masked = b1 & 0x80
    if len(buf) - off < hl + (4 if masked else 0):
        return None
    if n >= 126:
        n = int.from_bytes(buf[off + 2:off + hl], "big")
    return b0, hl + (4 if masked else 0), n, (off + hl if masked else -1)


def _payload(buf: bytes | bytearray, start: int, hl: int, n: int, mask_at: int) -> bytes:
    data = bytes(buf[start + hl:start + hl + n])
    if mask_at < 0:
        return data
    mask = bytes(buf[mask_at:mask_at + 4]) * (n // 4 + 1)
    return bytes(a ^ b for a, b in zip(data, mask, strict=False))


class FrameFilter:
    """The server's bytes, frame by frame (see the module docstring). ``feed`` returns what to emit now."""

    def __init__(self) -> None:
        self.phase = "request"  # request (no upgrade seen yet) | http | frames | opaque
        self._head = bytearray()  # http: the response head so far
        self._buf = bytearray()  # frames: the bytes from the current frame's start not yet emitted
        self._pass = 0  # bytes of the current (passing) frame still to emit as they come
        self._held: list[tuple[int, int]] = []  # a held message's frames in _buf: (start, end) of its data frames
        self._holding = False  # _buf holds a message (and the control frames between its fragments)
        self._size = 0  # holding: how much of _buf is whole frames of the held message

    def upgrade_requested(self, upgrade: bool) -> None:
        """The client's request was read: frames follow a 101 only if it asked for a websocket."""
        if self.phase == "request":
            self.phase = "http" if upgrade else "opaque"

    def feed(self, data: bytes, droppers: Sequence[Dropper]) -> bytes:
        if self.phase == "frames" and not self._buf and not self._holding and self._pass >= len(data):
            self._pass -= len(data)  # the common case: the middle of a passing frame
            return data
        if self.phase in ("opaque", "request"):
            self.phase = "opaque"  # the server spoke first, or this is not a websocket: hands off
            return data
        out = bytearray()
        if self.phase == "http":
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    self.phase = "opaque"
                return data
            rest = bytes(self._head[end + 4:])
            self.phase = "frames" if self._head.startswith((b"HTTP/1.1 101", b"HTTP/1.0 101")) else "opaque"
            self._head = bytearray()
            out += data[:len(data) - len(rest)]
            if self.phase == "opaque" or not rest:
                return bytes(out) + (rest if self.phase == "opaque" else b"")
            data = rest
        self._frames(data, droppers, out)
        return bytes(out)

    def _frames(self, data: bytes, droppers: Sequence[Dropper], out: bytearray) -> None:
        view = memoryview(data)
        while len(view):
            if self._pass:
                n = min(self._pass, len(view))
                out += view[:n]
                view = view[n:]
                self._pass -= n
                continue
            self._buf += view
            view = view[len(view):]
            self._consume(droppers, out)

    def _consume(self, droppers: Sequence[Dropper], out: bytearray) -> None:
        """Act on every frame whose header (passing) or whole (held) is in ``_buf``."""
        pos = self._size if self._holding else 0
        for _ in range(len(self._buf) + 1):  # each pass consumes at least one byte, or stops
            h = frame_header(self._buf, pos)
            if h is None:
                break
            b0, hl, n, _ = h
            fin, rsv1, opcode = b0 & 0x80, b0 & 0x40, b0 & 0x0F
            control = opcode >= 8
            if not self._holding:
                start_message = opcode in _DATA
                hold = start_message and any(d.wants for d in droppers) and not rsv1 and hl + n <= MAX_HELD
                if not hold:  # emit the header now, the payload as it comes (a passing message's
                    take = min(len(self._buf), hl + n)
                    out += self._buf[:take]
                    self._pass = hl + n - take
                    del self._buf[:take]  # continuations never start a hold, so they pass too)
                    pos = 0
                    if self._pass:
                        return
                    continue
                self._holding = True
            if len(self._buf) - pos < hl + n:
                break  # the held frame is not complete yet
            end = pos + hl + n
            if not control:
                self._held.append((pos, end))
            pos = end
            self._size = pos
            if control or not fin:
                if pos > MAX_HELD:
                    self._release(droppers, out, drop=False)  # its continuations will pass
                    pos = 0
                continue
            self._release(droppers, out)
            pos = 0

    def _release(self, droppers: Sequence[Dropper], out: bytearray, drop: bool | None = None) -> None:
        """The held message is complete (or too large): emit it, or only its control frames if dropped."""
        end = self._size
        if drop is None:
            payload = b"".join(_payload(self._buf, s, *_hdr(self._buf, s)) for s, _ in self._held)
            drop = any(d.take(payload) for d in droppers)  # the first that wants it counts it
        if drop:
            keep, at = bytearray(), 0
            for s, e in self._held:
                keep += self._buf[at:s]
                at = e
            keep += self._buf[at:end]
            out += keep
        else:
            out += self._buf[:end]
        del self._buf[:end]
        self._held, self._holding, self._size = [], False, 0


def _hdr(buf: bytes | bytearray, start: int) -> tuple[int, int, int]:
    h = frame_header(buf, start)
    assert h is not None
    return h[1], h[2], h[3]
