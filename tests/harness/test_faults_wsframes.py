"""The proxy's WebSocket inspection, sans-IO: the upgrade request loses its extensions header, and the frame
filter drops exactly the first k matching server messages of a stream cut anywhere, leaving every other byte
as it was. Frames are built with websockets' own serializer, so our header parser is checked against it."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from harness.faults.wsframes import Dropper, FrameFilter, RequestRewriter, frame_header

RESPONSE = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
UPGRADE = (b"GET /realtime/v1/websocket?vsn=1.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")


def frame(opcode: Opcode, data: bytes, fin: bool = True, mask: bool = False) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=mask)


def message(payload: bytes, opcode: Opcode = Opcode.TEXT, pieces: int = 1, ping_between: bool = False) -> list[bytes]:
    """One message as frames: fragmented into ``pieces``, a ping between fragments if asked."""
    step = max(1, len(payload) // pieces)
    parts = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
    out: list[bytes] = []
    for i, part in enumerate(parts):
        out.append(frame(opcode if i == 0 else Opcode.CONT, part, fin=i == len(parts) - 1))
        if ping_between and i < len(parts) - 1:
            out.append(frame(Opcode.PING, b"p%d" % i))
    return out


def run(stream: bytes, droppers: list[Dropper], cuts: list[int], upgrade: bool = True) -> bytes:
    f = FrameFilter()
    f.upgrade_requested(upgrade)
    out, at = bytearray(), 0
    for c in [*sorted(cuts), len(stream)]:
        out += f.feed(stream[at:c], droppers)
        at = c
    return bytes(out)


def test_the_header_parser_reads_7_16_and_64_bit_lengths_and_masks() -> None:
    for n, hl in ((0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)):
        raw = frame(Opcode.BINARY, b"x" * n)
        assert frame_header(raw) == (raw[0], hl, n, -1)
        assert frame_header(raw[:hl - 1]) is None
        masked = frame(Opcode.BINARY, b"x" * n, mask=True)
        assert frame_header(masked) == (masked[0], hl + 4, n, hl)


def test_exactly_k_matching_messages_are_dropped_and_the_rest_is_byte_identical() -> None:
    msgs = [message(b'{"event":"postgres_changes","n":%d%s}' % (i, b',"mark":1' if i % 2 else b""))
            for i in range(12)]
    stream = RESPONSE + b"".join(b"".join(m) for m in msgs)
    d = Dropper("mark", 3)
    out = run(stream, [d], cuts=[5, 90, 91, 200])
    expected = RESPONSE + b"".join(b"".join(m) for i, m in enumerate(msgs) if i not in (1, 3, 5))
    assert out == expected and d.dropped == 3 and not d.wants
    assert not d.take(b"mark") and d.dropped == 3  # spent: it drops no more
    assert run(stream, [], cuts=[7, 300]) == stream  # nobody wants messages: untouched


def test_fragmented_large_and_masked_messages() -> None:
    big = b"mark" + b"y" * 70_000  # a 64-bit length
    mid = b"z" * 300 + b"mark"  # a 16-bit length
    frag = message(b"mark-fragmented-" + b"q" * 500, pieces=4, ping_between=True)
    keep_frag = message(b"plain-fragmented-" + b"q" * 500, opcode=Opcode.BINARY, pieces=3, ping_between=True)
    pong = frame(Opcode.PONG, b"")
    units = [[frame(Opcode.TEXT, big)], [pong], [frame(Opcode.BINARY, mid, mask=True)], frag, keep_frag,
             [frame(Opcode.TEXT, b"mark-last")]]
    stream = RESPONSE + b"".join(b"".join(u) for u in units)
    d = Dropper("mark", 3)
    out = run(stream, [d], cuts=list(range(0, len(stream), 997)))
    pings = b"".join(f for f in frag if f[0] & 0x0F == Opcode.PING)  # a dropped message's pings stay
    assert out == RESPONSE + pong + pings + b"".join(keep_frag) + frame(Opcode.TEXT, b"mark-last")
    assert d.dropped == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3000), st.integers(1, 3), st.booleans()), min_size=1,
                max_size=12),
       st.integers(0, 6), st.lists(st.integers(0, 40_000), max_size=25))
def test_any_stream_cut_anywhere(spec: list[tuple[bool, int, int, bool]], k: int, cuts: list[int]) -> None:
    units = [message((b"mark" if marked else b"") + b"a" * size, pieces=pieces, ping_between=ping)
             for marked, size, pieces, ping in spec]
    stream = RESPONSE + b"".join(b"".join(u) for u in units)
    dropped_idx = [i for i, (marked, *_) in enumerate(spec) if marked][:k]
    expected = RESPONSE + b"".join(
        b"".join(f for f in u if i not in dropped_idx or f[0] & 0x0F >= 8) for i, u in enumerate(units))
    d = Dropper("mark", k) if k else None
    assert run(stream, [d] if d else [], [c for c in cuts if c < len(stream)]) == expected
    assert (d.dropped if d else 0) == len(dropped_idx)


def test_a_message_under_way_when_dropping_starts_passes_whole() -> None:
    first = frame(Opcode.TEXT, b"mark-" + b"x" * 1000)
    second = frame(Opcode.TEXT, b"mark-second")
    f = FrameFilter()
    f.upgrade_requested(True)
    d = Dropper("mark", 1)
    out = f.feed(RESPONSE + first[:300], []) + f.feed(first[300:] + second, [d])
    assert out == RESPONSE + first and d.dropped == 1  # the first had begun: it passed; the second was dropped


def test_no_upgrade_a_refused_upgrade_and_compressed_frames_pass_untouched() -> None:
    msgs = frame(Opcode.TEXT, b"mark")
    assert run(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmark", [Dropper("mark", 1)], [3]) .endswith(b"mark")
    refused = b"HTTP/1.1 403 Forbidden\r\n\r\n" + msgs
    assert run(refused, [Dropper("mark", 1)], [10]) == refused
    assert run(RESPONSE + msgs, [Dropper("mark", 1)], [], upgrade=False) == RESPONSE + msgs
    compressed = bytes([msgs[0] | 0x40]) + msgs[1:]  # RSV1: permessage-deflate, unreadable: never dropped
    assert run(RESPONSE + compressed, [Dropper("mark", 1)], []) == RESPONSE + compressed


def test_the_upgrade_request_loses_its_extensions_header_and_nothing_else() -> None:
    r = RequestRewriter()
    out = r.feed(UPGRADE[:40]) + r.feed(UPGRADE[40:] + b"\x81\x85rest")
    assert r.done and r.upgrade
    assert out == UPGRADE.replace(b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
                                  b"") + b"\x81\x85rest"
    assert r.feed(b"later bytes") == b"later bytes"
    plain = b"GET /rest/v1/orders HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Extensions: kept\r\n\r\n"
    r = RequestRewriter()
    assert r.feed(plain) == plain and not r.upgrade
    tls = bytes([0x16, 0x03, 0x01, 0x02, 0x00]) + random.Random(1).randbytes(300)  # a TLS ClientHello
    r = RequestRewriter()
    assert r.feed(tls[:3]) == tls[:3] and r.done  # not HTTP: hands off at once
    r = RequestRewriter()
    assert r.feed(b"GE") == b"" and r.flush() == b"GE"  # a request cut short is released as it was
