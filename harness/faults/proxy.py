"""``FaultProxy``: a TCP proxy on loopback that puts faults between the probes and the target.

Toxiproxy's model (a proxy plus toxics; faults are data; ``reset`` restores everything), written by
hand on asyncio: no Python library offers Toxiproxy-style toxics in-process, and Toxiproxy itself is
not packaged for Debian and no binary registry is reachable here. It forwards bytes untouched (plain
TCP; an https/wss client still does TLS end to end through it) unless a fault says otherwise, or
``inspect_websocket`` is on (then an upgrade request loses ``Sec-WebSocket-Extensions``, so frames
stay uncompressed and ``DropFrames`` can read them: ``wsframes.py``).

    async with FaultProxy("127.0.0.1", 54321, name="realtime", history=h) as proxy:
        url = proxy.url_for(target.socket_url)          # the probes connect here
        async with proxy.fault(Blackhole(), seconds=5) as fault_id:
            ...                                         # start and end are in the history

Every fault's start and end is a ``Fault`` record (``fault_id``, name, ``target`` = the proxy's
name, params). Several faults may be active at once; ``reset()`` ends them all. The proxy listens
on loopback only, on port 0 by default (nothing to free after a crash: a process that dies frees
its sockets, ``tests/harness/test_faults.py`` kills one with SIGKILL to show it), holds no files,
and owns every task and timer it starts (cancelled by ``stop()``).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from harness.faults.connection import Connection
from harness.faults.spec import (
    Bandwidth,
    Blackhole,
    Down,
    DropFrames,
    Latency,
    LimitData,
    ProxyFault,
    Reset,
    new_fault_id,
    record,
)
from harness.faults.wsframes import Dropper

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from harness.history import History

__all__ = ["FaultProxy"]

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_PROXY_FAULTS = (Reset, Blackhole, Latency, Bandwidth, LimitData, Down, DropFrames)
_DELIVERY = (Blackhole, Latency, Bandwidth, LimitData)  # faults that act on delivery (the rest: accept, frames)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, name: str, history: History | None = None,
                 listen_host: str = "127.0.0.1", listen_port: int = 0, inspect_websocket: bool = False) -> None:
        if not _is_loopback(listen_host):
            raise ValueError(f"fault proxy {name!r}: listens on loopback only, not {listen_host!r}")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.name = name
        self.history = history
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.inspect_websocket = inspect_websocket
        self.accepted = 0  # connections accepted and proxied, in total
        self.refused = 0  # connections reset at once (``Down``, or while stopping)
        self.bytes_up = 0  # delivered client -> upstream
        self.bytes_down = 0  # delivered upstream -> client
        # what the connections read (derived from the active faults on every change)
        self.delivery: dict[str, tuple[tuple[str, ProxyFault], ...]] = {"up": (), "down": ()}
        self.blackholed = False
        self.droppers: tuple[Dropper, ...] = ()
        self._server: asyncio.Server | None = None
        self._conns: set[Connection] = set()
        self._serial = 0
        self._active: dict[str, ProxyFault] = {}
        self._issued: set[str] = set()
        self._dropper_of: dict[str, Dropper] = {}
        self._dropped_before = 0  # by drop faults that have ended
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> FaultProxy:
        if self._server is not None:
            return self
        if self._stopping:
            raise RuntimeError(f"fault proxy {self.name!r} was stopped; make a new one")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, self.listen_host, self.listen_port,
                                                reuse_address=True, backlog=512)
        return self

    def _accept(self) -> asyncio.Protocol:
        self._serial += 1
        return Connection(self, self._serial).client_side()

    async def stop(self) -> None:
        """End every active fault (each gets its end record), close every connection and the listener;
        idempotent."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        await self.reset()
        for conn in list(self._conns):
            conn.abort(rst=False)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for _ in range(100):  # the sockets close in the loop's next turns (connection_lost)
            if not self._conns:
                break
            await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError(f"fault proxy {self.name!r} is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the proxy listens on: ``asyncio.open_connection(*proxy.address)``."""
        return self.listen_host, self.port

    def url_for(self, url: str) -> str:
        """The same URL through the proxy: its host:port replaced by the proxy's. The URL must point at the
        proxy's upstream (a URL for another server would silently bypass nothing). For https/wss the TLS
        client must still check the upstream's name (the URL now says 127.0.0.1)."""
        u = urlsplit(url)
        if u.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"fault proxy {self.name!r}: cannot proxy a {u.scheme or 'schemeless'} URL")
        port = u.port or _DEFAULT_PORTS[u.scheme]
        host = u.hostname or ""
        same = host.lower() == self.upstream_host.lower() or (_is_loopback(host) and _is_loopback(self.upstream_host))
        if port != self.upstream_port or not same:
            raise ValueError(f"fault proxy {self.name!r}: {u.scheme}://{host}:{port} is not its upstream "
                             f"{self.upstream_host}:{self.upstream_port}")
        userinfo = u.netloc.rpartition("@")[0]
        host_out = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        netloc = f"{userinfo + '@' if userinfo else ''}{host_out}:{self.port}"
        return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))

    # -- counters ---------------------------------------------------------------------------------
    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._conns)

    @property
    def dropped_frames(self) -> int:
        """Messages dropped by ``DropFrames`` faults, in total."""
        return self._dropped_before + sum(d.dropped for d in self._dropper_of.values())

    @property
    def active(self) -> dict[str, ProxyFault]:
        """The faults in effect now, by id."""
        return dict(self._active)

    # -- faults -----------------------------------------------------------------------------------
    async def apply(self, spec: ProxyFault) -> str:
        """Put ``spec`` in effect now; returns its fault id (its start is recorded). ``Reset`` acts and
        ends at once (start and end recorded together)."""
        if not isinstance(spec, _PROXY_FAULTS):
            raise TypeError(f"fault proxy {self.name!r}: {spec!r} is not a proxy fault")
        if isinstance(spec, DropFrames) and not self.inspect_websocket:
            raise ValueError(f"fault proxy {self.name!r}: drop_frames needs inspect_websocket=True")
        if self._stopping:
            raise RuntimeError(f"fault proxy {self.name!r} is stopped")
        fault_id = new_fault_id()
        self._issued.add(fault_id)
        if isinstance(spec, Reset):
            record(self.history, fault_id, spec, "start", self.name)
            n = len(self._conns)
            for conn in list(self._conns):
                conn.abort(rst=True)
            await asyncio.sleep(0)  # the sockets close (RST) in this turn of the loop
            record(self.history, fault_id, spec, "end", self.name, connections=n)
            return fault_id
        self._active[fault_id] = spec
        if isinstance(spec, DropFrames):
            self._dropper_of[fault_id] = Dropper(spec.contains, spec.count)
        self._changed()
        record(self.history, fault_id, spec, "start", self.name)
        return fault_id

    async def clear(self, fault_id: str) -> None:
        """End the fault (its end is recorded); a fault that has ended already is left alone."""
        if fault_id not in self._issued:
            raise KeyError(f"fault proxy {self.name!r}: no fault {fault_id!r}")
        spec = self._active.pop(fault_id, None)
        if spec is None:
            return
        extra: dict[str, Any] = {}
        dropper = self._dropper_of.pop(fault_id, None)
        if dropper is not None:
            self._dropped_before += dropper.dropped
            extra["dropped"] = dropper.dropped
        self._changed()
        record(self.history, fault_id, spec, "end", self.name, **extra)

    async def reset(self) -> None:
        """End every active fault (each recorded): forwarding untouched again."""
        for fault_id in list(self._active):
            await self.clear(fault_id)

    @asynccontextmanager
    async def fault(self, spec: ProxyFault, seconds: float | None = None) -> AsyncIterator[str]:
        """Apply ``spec``, yield its id, clear it (also on an exception). With ``seconds`` the fault lasts
        exactly that long: a timer ends it even if the body still runs, and the exit waits for it if the
        body ends sooner; an exception ends it at once."""
        if seconds is not None and not seconds >= 0:
            raise ValueError(f"fault proxy {self.name!r}: seconds must be >= 0, not {seconds!r}")
        fault_id = await self.apply(spec)
        timer = self.spawn(self._clear_later(fault_id, seconds)) if seconds is not None else None
        try:
            yield fault_id
            if timer is not None:
                await asyncio.wait({timer})  # the rest of ``seconds`` (stop() may cancel the timer: no error)
        finally:
            if timer is not None and not timer.done():
                timer.cancel()
            await self.clear(fault_id)

    async def _clear_later(self, fault_id: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.clear(fault_id)

    def _changed(self) -> None:
        """Derive what the connections read from the active faults, then let every pipe act on it."""
        faults = list(self._active.items())
        self.delivery = {d: tuple((fid, f) for fid, f in faults if isinstance(f, _DELIVERY)
                                  and (isinstance(f, Blackhole) or f.direction in (d, "both")))
                         for d in ("up", "down")}
        self.blackholed = any(isinstance(f, Blackhole) for _, f in faults)
        self.droppers = tuple(self._dropper_of.values())
        for conn in list(self._conns):
            if not self.blackholed and not self._stopping:
                conn.connect_upstream()  # a connection accepted during a black hole reaches upstream now
            conn.up.pump()
            conn.down.pump()

    # -- what the connections call ----------------------------------------------------------------
    def admit(self, conn: Connection) -> bool:
        """A new client connection: proxied, or (``Down``, stopping) refused."""
        if self._stopping or any(isinstance(f, Down) for f in self._active.values()):
            self.refused += 1
            return False
        self._conns.add(conn)
        self.accepted += 1
        return True

    def forget(self, conn: Connection) -> None:
        self._conns.discard(conn)

    def count(self, direction: str, n: int) -> None:
        if direction == "up":
            self.bytes_up += n
        else:
            self.bytes_down += n

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task the proxy owns: cancelled and awaited by ``stop()``."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __repr__(self) -> str:
        where = f"{self.listen_host}:{self.port}" if self._server and self._server.sockets else "-"
        return (f"<FaultProxy {self.name} {where} -> {self.upstream_host}:{self.upstream_port} "
                f"faults={[f.name for f in self._active.values()]} connections={len(self._conns)}>")

