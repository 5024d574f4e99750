"""The nemesis: faults between the probes and the target, and of the embedded stack, recorded as data.

Faults are data (``spec.py``): frozen specs with a ``name`` and ``params()``, whose ``start`` and ``end``
become ``Fault`` records (same ``fault_id``) in the run's history, so checkers can time reconnection
from the fault's end and charts can shade it.

Network faults, applied by ``FaultProxy`` (``proxy.py``; a TCP proxy on loopback, hand-written on
asyncio since no Python library offers Toxiproxy-style toxics in-process and Toxiproxy is neither
packaged for Debian nor downloadable here). Each connection is judged per direction: ``down`` is
server -> probe, ``up`` probe -> server, ``both`` each of them.

* ``Reset()``: every current connection closed now with RST (SO_LINGER 0); new ones accepted at once.
  Instantaneous: start and end are recorded together (the end's params carry ``connections``: how many).
* ``Blackhole()``: nothing passes either way, sockets stay open (a partition as TCP sees it). Bytes are
  held, not dropped: when it ends they are delivered in order (a short partition delivers late; a long
  one has been noticed by heartbeats first). Connections made meanwhile are accepted and held (their
  upstream connection is made when it ends).
* ``Latency(ms, jitter_ms=0, direction="both", seed=0)``: each chunk delivered ``ms`` (+/- a uniform
  jitter, seeded per connection and direction, never below 0) after it arrived; pipelined (chunks keep
  their spacing) and in order.
* ``Bandwidth(bytes_per_s, direction="both")``: per connection and direction, paced in 20 ms pieces.
* ``LimitData(bytes, direction="both")``: once ``bytes`` have passed in that direction (counted per
  connection from when the fault applies) the connection is closed; exactly ``bytes`` are delivered.
* ``Down()``: new connections are reset as soon as they are accepted (the port stays the proxy's);
  open connections go on.
* ``DropFrames(contains, count)``: calibration. Drops the first ``count`` WebSocket text or binary
  messages from the server whose payload contains ``contains`` (all proxy connections together); every
  other byte passes untouched. Needs ``FaultProxy(..., inspect_websocket=True)``, which strips
  ``Sec-WebSocket-Extensions`` from upgrade requests so frames are not compressed (``wsframes.py``).
  The end record's params carry ``dropped``.

Stack faults (``stack.py``), for the embedded stack only: ``StackFault("restart_realtime", seconds)``
(every realtime socket dropped, serving again after ``seconds``), ``StackFault("restart_postgres")``,
``StackFault("pause_postgres", seconds)`` (every PostgreSQL process frozen, then thawed). The end is
recorded when the stack is back (with ``error`` in its params if the stack's method failed).

Timing: a delayed chunk leaves up to about a millisecond after its due time (the event loop's timers),
never before; with no fault a chunk is written on in the same callback that read it.

API::

    proxy = FaultProxy(upstream_host, upstream_port, name="realtime", history=history,
                       listen_host="127.0.0.1", listen_port=0, inspect_websocket=False)
    await proxy.start() / await proxy.stop()          # or: async with FaultProxy(...) as proxy
    proxy.port, proxy.address, proxy.url_for(url)     # url_for: the same http(s)/ws(s) URL through the proxy
    fault_id = await proxy.apply(Latency(200))        # "f1", "f2", ...; start recorded
    await proxy.clear(fault_id)                       # end recorded; a fault already ended is left alone
    await proxy.reset()                               # every active fault ended: forwarding untouched
    async with proxy.fault(Blackhole(), seconds=5) as fault_id: ...   # applied, then cleared (also on error)
    proxy.connections, proxy.accepted, proxy.refused, proxy.bytes_up, proxy.bytes_down, proxy.dropped_frames
    fault_id = await inject(stack, StackFault("pause_postgres", 3), history)   # target="embedded"
    spec = parse_fault("latency:200,jitter=20,dir=down,seed=7"); format_fault(spec) -> the same text

``parse_fault`` reads: reset, blackhole, down, latency:MS[,jitter=MS][,dir=both|down|up][,seed=N],
bandwidth:BYTES_PER_S[,dir=], limit:BYTES[,dir=], drop:TEXT,count=N, restart_realtime[:SECONDS],
restart_postgres, pause_postgres:SECONDS; anything else is a ``FaultSpecError`` (a ``ValueError``) of one
line. Fault ids are unique within the process, so several proxies and the stack can share one history.
"""

from __future__ import annotations

from harness.faults.proxy import FaultProxy
from harness.faults.spec import (
    Bandwidth,
    Blackhole,
    Down,
    DropFrames,
    FaultSpec,
    FaultSpecError,
    Latency,
    LimitData,
    PacketFault,
    ProxyFault,
    Reset,
    StackFault,
    format_fault,
    parse_fault,
)
from harness.faults.stack import FaultTargetError, inject

__all__ = [
    "Bandwidth",
    "Blackhole",
    "Down",
    "DropFrames",
    "FaultProxy",
    "FaultSpec",
    "FaultSpecError",
    "FaultTargetError",
    "Latency",
    "LimitData",
    "PacketFault",
    "ProxyFault",
    "Reset",
    "StackFault",
    "format_fault",
    "inject",
    "parse_fault",
]
