"""Packet-level faults (``tc netem``: loss, delay, black hole) on the devices' path to the containers target.

Where the kernel has no ``sch_netem`` (``CONFIG_NET_SCH_NETEM`` unset, as on the machines this was written on:
``tc`` answers "Specified qdisc kind is unknown"), the black hole and loss are nftables drop rules on the same
loopback's output hook (``numgen random`` for loss): the same packets vanish, at the same layer; a delay then
cannot be had and is refused with that reason. ``params.via`` records which of the two did it.

Why a container of its own: with host networking, netem on the host's loopback would hit every process on the
machine. So the devices' traffic crosses a **link container** started with ``network_mode=none``: a network
namespace of its own holding nothing but its own ``lo`` (no route anywhere, not even to the host), where ``tc``
(iproute2, in the local image) may change what it likes with ``CAP_NET_ADMIN``. Its TCP hop is the only
one netem touches::

    device's FaultProxy --TCP 127.0.0.1:P--> gateway (here) --unix in.sock--> socat (link netns)
        --TCP 127.0.0.1:8001 over the link's lo, where netem acts--> socat --unix out.sock--> upstream (here)
        --TCP--> the stack

The unix sockets live in a host directory bind-mounted into the container (a bind, not a volume; removed at
stop). The link's ``net.ipv4.tcp_rto_max_ms`` is 1 s (a per-namespace sysctl; kernels from 6.15): after a black
hole TCP retransmits within a second instead of a backed-off minute, as the fault proxy delivers what it held
at once when its black hole ends. Faults are recorded as the proxy's are: a ``Fault`` start and end per
device network (``target`` = its ``net:<device>``), ``name`` ``blackhole`` / ``loss`` / ``delay`` with
``params.layer = "packet"``, so the checkers time a netem black hole's recoveries in the black-hole regime.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.faults.spec import PacketFault
from harness.faults.stack import FaultTargetError
from harness.records import Fault

__all__ = ["LINK_PORT", "NetemLink", "netem_args"]

LINK_PORT = 8001
_SCRIPT = (f"socat TCP-LISTEN:{LINK_PORT},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:/zora/out.sock & "
           f"socat UNIX-LISTEN:/zora/in.sock,fork,mode=600 TCP:127.0.0.1:{LINK_PORT} & wait")


_NFT_TABLE = "zora_link"


def nft_script(spec: PacketFault) -> str:
    """The nftables rules that drop the fault's packets on the link's loopback (no netem in the kernel)."""
    if spec.kind == "delay":
        raise FaultTargetError("netem_delay: this kernel has no tc netem (sch_netem), and nftables cannot delay")
    rule = "drop" if spec.kind == "blackhole" else f"numgen random mod 100 lt {round(spec.value)} drop"
    return (f"nft add table inet {_NFT_TABLE} && nft add chain inet {_NFT_TABLE} out "
            f"'{{ type filter hook output priority 0 ; }}' && nft add rule inet {_NFT_TABLE} out {rule}")


def netem_args(spec: PacketFault) -> list[str]:
    """The ``tc qdisc`` command that puts the fault on the link's loopback."""
    what = {"blackhole": ["loss", "100%"], "loss": ["loss", f"{spec.value:g}%"],
            "delay": ["delay", f"{spec.value:g}ms"]}[spec.kind]
    return ["tc", "qdisc", "replace", "dev", "lo", "root", "netem", *what]


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        for _ in range(10_000_000):  # bounded: a chunk per turn, ends at EOF
            data = await r.read(65536)
            if not data:
                break
            w.write(data)
            await w.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            w.close()


async def _join(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


class NetemLink:
    """The link container and its two host-side relays; ``port`` is where device networks connect."""

    def __init__(self, cs: Any, upstream_host: str, upstream_port: int) -> None:
        self.cs = cs
        self.upstream = (upstream_host, upstream_port)
        self.dir = Path(tempfile.mkdtemp(prefix="zora-netem-"))
        self.port = 0
        self.container: Any = None
        self.active: list[tuple[str, str]] = []  # (fault_id, device network) of the fault now on
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="zora-netem-relays", daemon=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._has_netem: bool | None = None
        self._params: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> NetemLink:
        from testcontainers.core.wait_strategies import ExecWaitStrategy

        self._thread.start()
        self._run(self._serve_upstream())
        c = self.cs._container(self.cs.local_image, name=f"zora-{self.cs.run}-netem",
                               network_mode="none", entrypoint=["sh", "-c", _SCRIPT], cap_add=["NET_ADMIN"],
                               sysctls={"net.ipv4.tcp_rto_max_ms": "1000"})
        c.with_volume_mapping(str(self.dir), "/zora", "rw")
        # both relays listening: the unix socket the gateway opens, the TCP port netem's loopback carries
        c.waiting_for(ExecWaitStrategy(["sh", "-c", f"test -S /zora/in.sock && ss -ltn | grep -q '127.0.0.1:{LINK_PORT} '"])
                      .with_startup_timeout(int(timeout)))
        self.cs.containers.append(c)
        c.start()
        self.container = c
        self.port = self._run(self._serve_gateway())
        return self

    def stop(self) -> None:
        async def close() -> None:
            for s in self._servers:
                s.close()

        if self._thread.is_alive():  # (never started: nothing to stop but the directory)
            with contextlib.suppress(Exception):
                self._run(close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _serve_upstream(self) -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                up = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 10)
            except (OSError, TimeoutError):
                w.close()
                return
            await _join((r, w), up)

        self._servers.append(await asyncio.start_unix_server(handle, str(self.dir / "out.sock")))

    async def _serve_gateway(self) -> int:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                link = await asyncio.open_unix_connection(str(self.dir / "in.sock"))
            except OSError:
                w.close()
                return
            await _join((r, w), link)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    # -- faults ------------------------------------------------------------------------------------
    def _tc(self, args: list[str]) -> None:
        res = self.container.exec(args)
        if res.exit_code != 0:
            raise RuntimeError(f"{' '.join(args)}: {res.output.decode(errors='replace').strip()[:200]}")

    @property
    def has_netem(self) -> bool:
        """Whether this kernel has ``sch_netem`` (asked once, in the link's own namespace)."""
        if self._has_netem is None:
            probe = self.container.exec(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"])
            self._has_netem = probe.exit_code == 0
            if self._has_netem:
                self._tc(["tc", "qdisc", "del", "dev", "lo", "root"])
        return self._has_netem

    def apply(self, spec: PacketFault, history: Any, devices: Iterable[str]) -> list[str]:
        """The fault on the link, recorded for every device network that crosses it; its fault ids."""
        fid = f"netem-{spec.kind}-{secrets.token_hex(3)}"
        if self.has_netem:
            self._tc(netem_args(spec))
            via = "tc netem"
        else:
            self._tc(["sh", "-c", nft_script(spec)])
            via = "nftables drop (no sch_netem in this kernel)"
        self._params = {**spec.params(), "via": via}
        self.active = []
        for d in devices:
            history.append(Fault(fault_id=f"{fid}-{d}", name=spec.name, phase="start", target=d, params=self._params))
            self.active.append((f"{fid}-{d}", d))
        self._spec = spec
        return [f for f, _ in self.active]

    def clear(self, history: Any) -> None:
        """The link's loopback back to no qdisc and no rule; each device network's end record."""
        with contextlib.suppress(RuntimeError):
            if self.has_netem:
                self._tc(["tc", "qdisc", "del", "dev", "lo", "root"])
            else:
                self._tc(["nft", "delete", "table", "inet", _NFT_TABLE])
        for fid, d in self.active:
            history.append(Fault(fault_id=fid, name=self._spec.name, phase="end", target=d, params=self._params))
        self.active = []
