"""What a fault is, as data: frozen specifications, validated when built, recorded by name and params.

A spec says nothing about how it is done: ``proxy.FaultProxy`` applies the network faults (between
the probes and the target, on loopback), ``stack.inject`` the stack faults (the embedded stack's own
restart and pause). Each spec has a ``name`` (the ``Fault`` record's ``name``) and ``params()`` (its
``params``: plain JSON values), so a history says exactly which fault ran, and ``parse_fault`` /
``format_fault`` turn the command line's text into a spec and back.

Directions: ``down`` is upstream -> client (server to probe), ``up`` is client -> upstream, ``both``
is each of them on its own (a latency of 200 ms "both" delays each way by 200 ms).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from harness.records import Fault

if TYPE_CHECKING:
    from harness.history import History

__all__ = [
    "DIRECTIONS",
    "STACK_KINDS",
    "Bandwidth",
    "Blackhole",
    "Direction",
    "Down",
    "DropFrames",
    "FaultSpec",
    "FaultSpecError",
    "Latency",
    "LimitData",
    "PacketFault",
    "ProxyFault",
    "Reset",
    "StackFault",
    "format_fault",
    "new_fault_id",
    "parse_fault",
    "record",
]

Direction = Literal["both", "down", "up"]
DIRECTIONS: tuple[str, ...] = ("both", "down", "up")
StackKind = Literal["restart_realtime", "restart_postgres", "pause_postgres"]
STACK_KINDS: tuple[str, ...] = ("restart_realtime", "restart_postgres", "pause_postgres")


class FaultSpecError(ValueError):
    """A fault that cannot be: unknown name, bad number, unknown key, bad direction. One line."""


def _number(owner: str, key: str, value: object, *, integer: bool = False, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise FaultSpecError(f"{owner}: {key} must be {'an integer' if integer else 'a number'}, not {value!r}")
    if not math.isfinite(value):
        raise FaultSpecError(f"{owner}: {key} must be finite, not {value!r}")
    if value < 0 or (positive and value == 0):
        raise FaultSpecError(f"{owner}: {key} must be {'> 0' if positive else '>= 0'}, not {value!r}")


def _direction(owner: str, value: object) -> None:
    if value not in DIRECTIONS:
        raise FaultSpecError(f"{owner}: direction must be one of {', '.join(DIRECTIONS)}, not {value!r}")


class _Spec:
    name: ClassVar[str]

    def params(self) -> dict[str, Any]:
        """The spec's fields as the ``Fault`` record's params (JSON values)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class Reset(_Spec):
    """Close every current connection now, with RST (SO_LINGER 0); new connections are accepted at once.
    Instantaneous: its start and end are recorded together."""

    name: ClassVar[str] = "reset"


@dataclass(frozen=True)
class Blackhole(_Spec):
    """Nothing passes either way, sockets stay open: a partition as TCP sees it. Bytes are held, in
    order, and delivered when the fault ends; connections made meanwhile are accepted and held too."""

    name: ClassVar[str] = "blackhole"


@dataclass(frozen=True)
class Latency(_Spec):
    """Each chunk is delivered ``ms`` (+/- a uniform ``jitter_ms``, seeded, never below 0) after it
    arrived, pipelined (chunks keep their spacing) and in order (a chunk never overtakes the one before)."""

    ms: float
    jitter_ms: float = 0.0
    direction: Direction = "both"
    seed: int = 0
    name: ClassVar[str] = "latency"

    def __post_init__(self) -> None:
        _number("latency", "ms", self.ms)
        _number("latency", "jitter_ms", self.jitter_ms)
        _direction("latency", self.direction)
        _number("latency", "seed", self.seed, integer=True)


@dataclass(frozen=True)
class Bandwidth(_Spec):
    """At most ``bytes_per_s`` per connection and direction (paced in pieces of 20 ms)."""

    bytes_per_s: int
    direction: Direction = "both"
    name: ClassVar[str] = "bandwidth"

    def __post_init__(self) -> None:
        _number("bandwidth", "bytes_per_s", self.bytes_per_s, integer=True, positive=True)
        _direction("bandwidth", self.direction)


@dataclass(frozen=True)
class LimitData(_Spec):
    """Close a connection once ``bytes`` have passed in that direction (counted per connection and per
    direction from when the fault applies to it); exactly ``bytes`` are delivered, then EOF."""

    bytes: int
    direction: Direction = "both"
    name: ClassVar[str] = "limit_data"

    def __post_init__(self) -> None:
        _number("limit_data", "bytes", self.bytes, integer=True)
        _direction("limit_data", self.direction)


@dataclass(frozen=True)
class Down(_Spec):
    """New connections are reset as soon as they are accepted (the port stays ours); open ones go on."""

    name: ClassVar[str] = "down"


@dataclass(frozen=True)
class DropFrames(_Spec):
    """Calibration: drop the first ``count`` WebSocket text or binary messages from the server whose
    payload contains ``contains`` (needs a proxy made with ``inspect_websocket=True``)."""

    contains: str
    count: int
    name: ClassVar[str] = "drop_frames"

    def __post_init__(self) -> None:
        if not isinstance(self.contains, str) or not self.contains:
            raise FaultSpecError(f"drop_frames: contains must be a non-empty text, not {self.contains!r}")
        _number("drop_frames", "count", self.count, integer=True, positive=True)


@dataclass(frozen=True)
class StackFault:
    """A fault of the embedded stack itself (``stack.inject``): ``restart_realtime`` (every realtime socket
    dropped, the server down for ``seconds``, then back), ``restart_postgres`` (a fast stop and start),
    ``pause_postgres`` (every PostgreSQL process frozen for ``seconds``, then thawed)."""

    kind: StackKind
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in STACK_KINDS:
            raise FaultSpecError(f"stack fault: kind must be one of {', '.join(STACK_KINDS)}, not {self.kind!r}")
        _number(self.kind, "seconds", self.seconds)
        if self.kind == "restart_postgres" and self.seconds:
            raise FaultSpecError("restart_postgres: takes no seconds (a restart is as long as it takes)")

    @property
    def name(self) -> str:
        return self.kind

    def params(self) -> dict[str, Any]:
        return {"seconds": self.seconds}


@dataclass(frozen=True)
class PacketFault:
    """A packet-level fault of ``tc netem`` on the containers target's link (``harness/containers/netem.py``):
    ``blackhole`` (every packet dropped), ``loss`` (``value`` % of packets), ``delay`` (``value`` ms each way).
    Recorded under the same names as the proxy's (a black hole is a black hole), with ``layer: packet``."""

    kind: str
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("blackhole", "loss", "delay"):
            raise FaultSpecError(f"packet fault: kind must be blackhole, loss or delay, not {self.kind!r}")
        if self.kind == "loss" and not 0 < self.value <= 100:
            raise FaultSpecError("netem_loss: a percentage above 0 and at most 100")
        if self.kind == "delay" and not 0 < self.value <= 60_000:
            raise FaultSpecError("netem_delay: milliseconds above 0 and at most 60000")

    @property
    def name(self) -> str:
        return self.kind

    @property
    def cli(self) -> str:
        return f"netem_{self.kind}" + (f":{_text(self.value)}" if self.kind != "blackhole" else "")

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"layer": "packet", "via": "tc netem"}
        if self.kind == "loss":
            p["percent"] = self.value
        elif self.kind == "delay":
            p["ms"] = self.value
        return p



ProxyFault = Reset | Blackhole | Latency | Bandwidth | LimitData | Down | DropFrames
FaultSpec = ProxyFault | StackFault | PacketFault


# -- the command line's text ------------------------------------------------------------------------
# name[:positional][,key=value]... ; the positional is the fault's main value, also writable by its key.
_SYNTAX: dict[str, tuple[str, str | None, dict[str, str]]] = {
    # cli name: (spec name, positional field, {cli key: field})
    "reset": ("reset", None, {}),
    "blackhole": ("blackhole", None, {}),
    "down": ("down", None, {}),
    "latency": ("latency", "ms", {"ms": "ms", "jitter": "jitter_ms", "dir": "direction", "seed": "seed"}),
    "bandwidth": ("bandwidth", "bytes_per_s", {"rate": "bytes_per_s", "dir": "direction"}),
    "limit": ("limit_data", "bytes", {"bytes": "bytes", "dir": "direction"}),
    "drop": ("drop_frames", "contains", {"contains": "contains", "count": "count"}),
    "restart_realtime": ("restart_realtime", "seconds", {"seconds": "seconds"}),
    "restart_postgres": ("restart_postgres", None, {}),
    "pause_postgres": ("pause_postgres", "seconds", {"seconds": "seconds"}),
}
_ALIASES = {"limit_data": "limit", "drop_frames": "drop"}
_PACKET = {"netem_blackhole": "blackhole", "netem_loss": "loss", "netem_delay": "delay"}
_PROXY: dict[str, type[_Spec]] = {c.name: c for c in (Reset, Blackhole, Latency, Bandwidth, LimitData, Down, DropFrames)}
_INTEGER = {"bytes_per_s", "bytes", "count", "seed"}
_TEXT = {"direction", "contains"}


def _value(owner: str, key: str, raw: str) -> object:
    if key in _TEXT:
        return raw
    try:
        return int(raw) if key in _INTEGER else float(raw)
    except ValueError:
        kind = "an integer" if key in _INTEGER else "a number"
        raise FaultSpecError(f"{owner}: {key} must be {kind}, not {raw!r}") from None


def parse_fault(text: str) -> FaultSpec:
    """``latency:200,jitter=20,dir=down,seed=7`` -> ``Latency(200, 20, "down", 7)``; ``FaultSpecError``
    (one line) for an unknown fault, a bad or negative number, an unknown key or a bad direction.

    Names: reset, blackhole, down, latency:MS, bandwidth:BYTES_PER_S, limit:BYTES, drop:TEXT,count=N
    (keys dir= for the last three as for latency, jitter= and seed= for latency), restart_realtime[:S],
    restart_postgres, pause_postgres:S; on the containers target's netem link netem_blackhole,
    netem_loss:PERCENT, netem_delay:MS.
    """
    head, _, rest = text.strip().partition(":")
    if head.strip() in _PACKET:
        kind = _PACKET[head.strip()]
        if (kind == "blackhole") != (not rest.strip()):
            raise FaultSpecError(f"{head.strip()}: " + ("takes no value" if kind == "blackhole" else "needs a value"))
        try:
            value = float(rest.strip()) if rest.strip() else 0.0
        except ValueError:
            raise FaultSpecError(f"{head.strip()}: the value must be a number, not {rest.strip()!r}") from None
        return PacketFault(kind, value)
    cli = _ALIASES.get(head.strip(), head.strip())
    if cli not in _SYNTAX:
        raise FaultSpecError(f"unknown fault {head.strip()!r} (known: {', '.join([*_SYNTAX, *_PACKET])})")
    name, positional, keys = _SYNTAX[cli]
    values: dict[str, object] = {}
    items = [p.strip() for p in rest.split(",")] if rest.strip() else []
    for i, item in enumerate(items):
        key, eq, raw = item.partition("=")
        if not eq:
            if i or positional is None:
                raise FaultSpecError(f"{cli}: unexpected value {item!r}" + ("" if keys else f" ({cli} takes none)"))
            field_name, raw = positional, item
        elif key.strip() in keys:
            field_name = keys[key.strip()]
        else:
            known = f" (known: {', '.join(keys)})" if keys else f" ({cli} takes none)"
            raise FaultSpecError(f"{cli}: unknown key {key.strip()!r}{known}")
        if field_name in values:
            raise FaultSpecError(f"{cli}: {field_name} given twice")
        values[field_name] = _value(cli, field_name, raw.strip())
    try:
        if name in STACK_KINDS:
            return StackFault(name, **values)  # type: ignore[arg-type]
        return _PROXY[name](**values)  # type: ignore[return-value]
    except TypeError:
        need = [f.name for f in fields(_PROXY[name])  # type: ignore[arg-type]
                if f.name not in values and f.default is MISSING] if name in _PROXY else []
        raise FaultSpecError(f"{cli}: missing {', '.join(need) or 'a value'}") from None


def format_fault(spec: FaultSpec) -> str:
    """The text ``parse_fault`` reads back into an equal spec (for logs and config); a ``drop`` text with a
    comma or '=' cannot be written so (``FaultSpecError``)."""
    if isinstance(spec, PacketFault):
        return spec.cli
    if isinstance(spec, DropFrames) and ("," in spec.contains or "=" in spec.contains
                                         or spec.contains != spec.contains.strip()):
        raise FaultSpecError(f"drop_frames: the command line cannot carry {spec.contains!r} (a comma, '=' or"
                             " spaces at the ends)")
    cli = next(c for c, (n, _, _) in _SYNTAX.items() if n == spec.name)
    _, positional, keys = _SYNTAX[cli]
    params = spec.params()
    defaults = {f.name: f.default for f in fields(spec)}
    parts = [cli]
    if positional is not None and (positional != "seconds" or params[positional]):
        parts[0] += f":{_text(params[positional])}"
    for key, field_name in keys.items():
        if field_name != positional and params[field_name] != defaults.get(field_name):
            parts.append(f"{key}={_text(params[field_name])}")
    return ",".join(parts)


def _text(v: object) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


# -- recording ---------------------------------------------------------------------------------------
_IDS = itertools.count(1)


def new_fault_id() -> str:
    """``f1``, ``f2``, ...: unique in this process, so proxies and stack faults can share one history."""
    return f"f{next(_IDS)}"


def record(history: History | None, fault_id: str, spec: FaultSpec, phase: Literal["start", "end"], target: str,
           **extra: Any) -> None:
    """The fault's ``start`` or ``end`` in the history, if there is one and it is still open."""
    if history is not None and not history.closed:
        history.append(Fault(fault_id=fault_id, name=spec.name, phase=phase, target=target,
                             params={**spec.params(), **extra}))
