"""Phoenix channel frames, both serializer versions, without any I/O: the one wire codec.

The official clients speak Phoenix's websocket protocol in two dialects:

* ``vsn=1.0.0`` (supabase-py's realtime): a JSON object
  ``{"topic", "event", "payload", "ref", "join_ref"}``;
* ``vsn=2.0.0`` (supabase-js's default): a JSON array
  ``[join_ref, ref, topic, event, payload]``, plus a binary frame for client
  broadcasts (kind 3, "user broadcast push") and, from the server, kind 4
  ("user broadcast").

Both sides use this module: the harness's client protocol (``protocol.py``) and the
embedded stack's realtime server (``stack.realtime``). It imports nothing but the
standard library, so the stack depends on it and never the reverse. Written by hand
because no Python library speaks Phoenix's server side; the layouts follow
realtime-js's ``lib/serializer.ts``.
"""

from __future__ import annotations

import functools
import json
import secrets
import struct
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["VSN1", "VSN2", "Frame", "FrameError", "RawPayload", "decode", "dumps", "encode"]

VSN1 = "1.0.0"
VSN2 = "2.0.0"
KIND_USER_BROADCAST_PUSH = 3
KIND_USER_BROADCAST = 4
ENC_BINARY = 0
ENC_JSON = 1
_NONCE = secrets.token_hex(8)  # placeholders for raw numbers; unguessable, so no user string can mimic one


class FrameError(ValueError):
    """A frame that is not a Phoenix message; the connection survives it."""


@dataclass(frozen=True)
class RawPayload:
    """A postgres_changes payload whose ``data`` is already JSON text, shared by every receiving channel."""

    ids: list[int]
    data: str


@dataclass
class Frame:
    topic: str
    event: str
    payload: Any = field(default_factory=dict)
    ref: str | None = None
    join_ref: str | None = None


def _str_or_none(v: Any, name: str) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise FrameError(f"{name} must be a string or null")


def decode(data: str | bytes, vsn: str = VSN1) -> Frame:
    """Parse one websocket message from a client."""
    if isinstance(data, bytes):
        return _decode_binary(data)
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: nested thousands deep
        raise FrameError("frame is not JSON") from e
    if isinstance(msg, list):
        if len(msg) != 5:
            raise FrameError("array frame must have 5 elements")
        join_ref, ref, topic, event, payload = msg
    elif isinstance(msg, dict):
        join_ref, ref = msg.get("join_ref"), msg.get("ref")
        topic, event, payload = msg.get("topic"), msg.get("event"), msg.get("payload", {})
    else:
        raise FrameError("frame must be a JSON object or array")
    if not isinstance(topic, str) or not isinstance(event, str):
        raise FrameError("topic and event must be strings")
    return Frame(topic=topic, event=event, payload=payload, ref=_str_or_none(ref, "ref"),
                 join_ref=_str_or_none(join_ref, "join_ref"))


def _decode_binary(buf: bytes) -> Frame:
    if len(buf) < 7 or buf[0] != KIND_USER_BROADCAST_PUSH:
        raise FrameError("unsupported binary frame")
    join_len, ref_len, topic_len, event_len, meta_len, encoding = struct.unpack_from("6B", buf, 1)
    off = 7
    parts = []
    for n in (join_len, ref_len, topic_len, event_len, meta_len):
        if off + n > len(buf):
            raise FrameError("truncated binary frame")
        try:
            parts.append(buf[off:off + n].decode("utf-8", errors="strict"))
        except UnicodeDecodeError as e:
            raise FrameError("binary frame header is not UTF-8") from e
        off += n
    join_ref, ref, topic, event, meta = parts
    body = buf[off:]
    try:
        user_payload: Any = json.loads(body) if encoding == ENC_JSON else body
        meta_obj = json.loads(meta) if meta else {}
    except (ValueError, RecursionError) as e:
        raise FrameError("binary frame payload is not JSON") from e
    payload: dict[str, Any] = {"type": "broadcast", "event": event, "payload": user_payload}
    if isinstance(meta_obj, dict):
        payload.update({k: v for k, v in meta_obj.items() if k not in payload})
    return Frame(topic=topic, event="broadcast", payload=payload, ref=ref or None, join_ref=join_ref or None)


def dumps(obj: Any) -> str:
    """JSON text in which a Decimal is written as the number it is (numeric's exact digits: 2.50)."""
    raws: list[str] = []

    def default(v: Any) -> Any:
        if isinstance(v, Decimal):
            raws.append(str(v) if v.is_finite() else f'"{v}"')
            return f"\x00{_NONCE}{len(raws) - 1}\x00"
        return str(v)

    text = json.dumps(obj, separators=(",", ":"), default=default)
    for i, raw in enumerate(raws):
        text = text.replace(f'"\\u0000{_NONCE}{i}\\u0000"', raw, 1)
    return text


def encode(frame: Frame, vsn: str = VSN1) -> str | bytes:
    """Serialize a server message in the client's dialect."""
    if isinstance(frame.payload, RawPayload):
        ids = ",".join(str(i) for i in frame.payload.ids)
        payload = f'{{"ids":[{ids}],"data":{frame.payload.data}}}'
        topic = _quoted(frame.topic)
        if vsn == VSN2:
            return f'[null,null,{topic},"postgres_changes",{payload}]'
        return f'{{"topic":{topic},"event":"postgres_changes","payload":{payload},"ref":null,"join_ref":null}}'
    if vsn == VSN2:
        if isinstance(frame.payload, dict) and isinstance(frame.payload.get("payload"), bytes | bytearray):
            return _encode_binary_broadcast(frame)
        return dumps([frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload])
    return dumps({"topic": frame.topic, "event": frame.event, "payload": frame.payload, "ref": frame.ref,
                  "join_ref": frame.join_ref})


@functools.lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    return json.dumps(text)


def _encode_binary_broadcast(frame: Frame) -> bytes:
    """Kind 4: a broadcast whose user payload is binary (only vsn 2 clients can read it)."""
    event = str(frame.payload.get("event", "")).encode()
    topic = frame.topic.encode()
    meta = frame.payload.get("meta")
    meta_b = json.dumps(meta).encode() if meta else b""
    header = struct.pack("5B", KIND_USER_BROADCAST, len(topic), len(event), len(meta_b), ENC_BINARY)
    return header + topic + event + meta_b + bytes(frame.payload["payload"])
