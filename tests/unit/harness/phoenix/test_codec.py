"""The one wire codec: Phoenix frames in both serializer versions, binary broadcasts, exact numbers, errors."""

from __future__ import annotations

import ast
import json
import struct
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.phoenix import codec
from harness.phoenix.codec import VSN1, VSN2, Frame, FrameError, RawPayload, decode, dumps, encode

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
REFS = st.none() | st.text(min_size=1, max_size=6)
FRAMES = st.builds(Frame, topic=st.text(max_size=20), event=st.text(min_size=1, max_size=12), payload=JSON, ref=REFS,
                   join_ref=REFS)


@given(FRAMES, st.sampled_from([VSN1, VSN2]))
def test_round_trip_both_versions(frame: Frame, vsn: str) -> None:
    data = encode(frame, vsn)
    assert isinstance(data, str)
    assert decode(data, vsn) == Frame(frame.topic, frame.event, frame.payload, frame.ref, frame.join_ref)


def test_layouts() -> None:
    f = Frame("realtime:a", "phx_join", {"config": {}}, ref="1", join_ref="1")
    assert json.loads(encode(f, VSN1)) == {"topic": "realtime:a", "event": "phx_join", "payload": {"config": {}},
                                           "ref": "1", "join_ref": "1"}
    assert json.loads(encode(f, VSN2)) == ["1", "1", "realtime:a", "phx_join", {"config": {}}]
    assert decode('{"topic":"t","event":"e"}') == Frame("t", "e", {}, None, None)  # payload defaults to {}
    assert decode('{"topic":"t","event":"e","ref":7,"join_ref":8,"payload":[1]}') == Frame("t", "e", [1], "7", "8")
    assert decode('[null,3,"t","e",null]', VSN2) == Frame("t", "e", None, "3", None)


@pytest.mark.parametrize(
    "data",
    ["", "nope", "[]", '[1,2,3,4]', '[1,2,3,4,5,6]', "42", '"text"', "null", '{"topic":1,"event":"e"}',
     '{"topic":"t"}', '["j","r",null,"e",{}]', '{"topic":"t","event":"e","ref":true}',
     '{"topic":"t","event":"e","join_ref":[1]}', '{"topic":"t","event":"e","ref":1.5}', "[" * 100_000],
)
def test_text_that_is_not_a_frame(data: str) -> None:
    with pytest.raises(FrameError):
        decode(data)


# -- binary broadcasts ----------------------------------------------------------------------------------

def push(join_ref: bytes, ref: bytes, topic: bytes, event: bytes, meta: bytes, encoding: int, body: bytes) -> bytes:
    """Kind 3 (user broadcast push) as realtime-js's serializer lays it out."""
    parts = [join_ref, ref, topic, event, meta]
    return bytes([3, *map(len, parts), encoding]) + b"".join(parts) + body


def test_binary_push_json_and_binary_payloads() -> None:
    f = decode(push(b"4", b"5", b"realtime:room", b"moved", b"", 1, b'{"x":[1,2]}'), VSN2)
    assert f == Frame("realtime:room", "broadcast", {"type": "broadcast", "event": "moved", "payload": {"x": [1, 2]}},
                      ref="5", join_ref="4")
    f = decode(push(b"", b"", b"realtime:room", b"blob", b"", 0, b"\x00\xff"), VSN2)
    assert f.payload == {"type": "broadcast", "event": "blob", "payload": b"\x00\xff"}
    assert f.ref is None and f.join_ref is None  # empty refs are absent refs
    meta = json.dumps({"replay": True, "event": "not-this-one"}).encode()
    f = decode(push(b"1", b"2", b"realtime:r", b"e", meta, 1, b"{}"), VSN2)
    assert f.payload == {"type": "broadcast", "event": "e", "payload": {}, "replay": True}  # meta never overrides


@pytest.mark.parametrize(
    "data",
    [b"", b"\x03\x00", bytes([4, 0, 0, 0, 0, 0, 1]), push(b"", b"", b"t", b"e", b"", 1, b"{nope"),
     push(b"", b"", b"t", b"e", b"{nope", 1, b"{}"), push(b"", b"", b"t", b"e", b"", 1, b"[" * 100_000),
     bytes([3, 9, 0, 0, 0, 0, 1]) + b"ab", bytes([3, 1, 0, 0, 0, 0, 1]) + b"\xff"],
    ids=["empty", "short", "kind-4-from-a-client", "bad-json", "bad-meta", "deep-json", "truncated", "not-utf8"],
)
def test_binary_that_is_not_a_frame(data: bytes) -> None:
    with pytest.raises(FrameError):
        decode(data, VSN2)


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_frame_error(data: bytes) -> None:
    try:
        f = decode(data, VSN2)
    except FrameError:
        return
    assert f.event == "broadcast" and isinstance(f.payload, dict)


def test_server_binary_broadcast_is_kind_4_in_vsn2_only() -> None:
    f = Frame("realtime:room", "broadcast", {"type": "broadcast", "event": "blob", "payload": b"\x01\x02",
                                              "meta": {"id": 1}}, join_ref="3")
    data = encode(f, VSN2)
    assert isinstance(data, bytes)
    kind, topic_len, event_len, meta_len, enc = struct.unpack_from("5B", data)
    rest = data[5:]
    assert (kind, enc) == (4, 0)
    assert rest[:topic_len] == b"realtime:room" and rest[topic_len:topic_len + event_len] == b"blob"
    assert json.loads(rest[topic_len + event_len:topic_len + event_len + meta_len]) == {"id": 1}
    assert rest[topic_len + event_len + meta_len:] == b"\x01\x02"
    assert isinstance(encode(f, VSN1), str)  # vsn 1 has no binary frames: JSON text


# -- postgres_changes and exact numbers ---------------------------------------------------------------------

def test_raw_payload_is_spliced_in_verbatim() -> None:
    data = '{"type":"INSERT","record":{"n":2.50}}'
    f = Frame('realtime:a"b', "postgres_changes", RawPayload(ids=[3, 11], data=data))
    v1 = encode(f, VSN1)
    assert v1 == ('{"topic":"realtime:a\\"b","event":"postgres_changes","payload":{"ids":[3,11],"data":'
                  + data + '},"ref":null,"join_ref":null}')
    v2 = encode(f, VSN2)
    assert v2 == '[null,null,"realtime:a\\"b","postgres_changes",{"ids":[3,11],"data":' + data + "}]"
    assert '"n":2.50' in str(v2) and json.loads(v2)[4]["ids"] == [3, 11]


def test_dumps_writes_decimals_as_the_numbers_they_are() -> None:
    assert dumps({"n": Decimal("2.50"), "m": [Decimal("-0.001"), Decimal("1E+3")]}) == '{"n":2.50,"m":[-0.001,1E+3]}'
    assert dumps([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")]) == '["NaN","Infinity","-Infinity"]'
    uid = uuid.UUID(int=5)
    assert dumps({"id": uid}) == f'{{"id":"{uid}"}}'  # anything else: its text
    # a user string that looks like the placeholder stays a string
    assert json.loads(dumps(["\x000\x00", Decimal("1.0")])) == ["\x000\x00", 1.0]


@given(st.lists(st.decimals(allow_nan=False, allow_infinity=False, places=2) | st.text(max_size=5), max_size=6))
def test_dumps_keeps_every_digit(values: list[Decimal | str]) -> None:
    back = json.loads(dumps(values), parse_float=Decimal)
    assert [str(v) for v in back] == [str(v) for v in values]


def test_imports_nothing_but_the_standard_library() -> None:
    """The stack's server imports this module; it must not pull the harness or the stack in with it."""
    tree = ast.parse(Path(codec.__file__).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert names and names <= sys.stdlib_module_names | {"__future__"}, names - sys.stdlib_module_names
