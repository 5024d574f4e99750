"""Each app instance's network: a fault proxy per device (``harness/faults``) between its probes and the target.

Every probe of a device, and its supabase-js twin, opens its socket and makes its refetches through its
device's proxy (``ProbeInfo.via``), so a fault on the proxy is that device losing its network, and
checkers know exactly which clients a fault reached. Drivers write directly, so the world keeps changing
while the apps are cut off (the offline queue's device is the exception: its writes go through its proxy
too). The proxies listen on loopback and forward to wherever the target is.

Plain-HTTP targets only for now (the embedded stack, ``supabase start``): for an https target the proxy
would have to keep the TLS name the clients check, so network faults are refused there with a message
that names ``--no-faults``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from urllib.parse import urlsplit

from harness.faults import FaultProxy, ProxyFault
from harness.history import History
from harness.targets import Target

__all__ = ["DeviceNetwork", "NetworkError"]


class NetworkError(ValueError):
    """Network faults cannot be used against this target; one line for the user."""


class DeviceNetwork:
    def __init__(self, target: Target, history: History) -> None:
        u = urlsplit(target.url)
        if u.scheme != "http":
            raise NetworkError(f"network faults need a plain-HTTP target (the embedded stack, `supabase start`); "
                               f"{target.safe_url} is {u.scheme}: run with --no-faults")
        self.target = target
        self.history = history
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        if target.devices_via:  # the containers target's netem link: packet faults under every device network
            host, _, port = target.devices_via.rpartition(":")
            self.host, self.port = host, int(port)
        self.proxies: dict[str, FaultProxy] = {}
        self.inspect = False  # proxies that read WebSocket frames (for drop_frames: calibration only)

    @staticmethod
    def name(device: str) -> str:
        return f"net:{device}"

    async def add(self, device: str) -> FaultProxy:
        name = self.name(device)
        if name not in self.proxies:
            self.proxies[name] = await FaultProxy(self.host, self.port, name=name, history=self.history,
                                                  inspect_websocket=self.inspect).start()
        return self.proxies[name]

    def proxy(self, device: str) -> FaultProxy:
        return self.proxies[self.name(device)]

    def url(self, device: str, url: str | None = None) -> str:
        """The target's URL (or one of its URLs) as the device reaches it: through its proxy."""
        url = url or self.target.url
        if self.target.devices_via:  # the proxy's upstream is the netem link, which leads to the target
            u = urlsplit(url)
            url = u._replace(netloc=self.target.devices_via).geturl()
        return self.proxy(device).url_for(url)

    def _pick(self, devices: Iterable[str] | None) -> list[FaultProxy]:
        return list(self.proxies.values()) if devices is None else [self.proxy(d) for d in devices]

    async def apply(self, spec: ProxyFault, devices: Iterable[str] | None = None) -> list[tuple[FaultProxy, str]]:
        """The fault on these devices' networks (all by default), at once; returns what to clear."""
        chosen = self._pick(devices)
        ids = await asyncio.gather(*(p.apply(spec) for p in chosen))
        return list(zip(chosen, ids, strict=True))

    async def clear(self, applied: list[tuple[FaultProxy, str]]) -> None:
        await asyncio.gather(*(p.clear(fid) for p, fid in applied))  # an instant fault (reset) has ended already

    async def reset(self) -> None:
        await asyncio.gather(*(p.reset() for p in self.proxies.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.proxies.values()), return_exceptions=True)
        self.proxies.clear()
