"""When bytes reached the socket, as the kernel saw it: receive timestamps (``SO_TIMESTAMPNS``).

A subscriber that stamps a frame when its read returns adds to every latency it reports the time the bytes
waited in the socket for it: under load, one greenlet among a thousand made readable by the same change, that
is the hub's turn through all of them (measured with ``bench/load_capacity.py``: 2-10 ms at p99 at 100-1,000
subscribers on this machine, the wait the issue caps at 1 ms). Linux stamps each received packet when it
enters the socket (for TCP since 4.13: ``tcp_recv_timestamp``), and ``recvmsg`` hands the stamp of the last
packet it consumed along with the bytes. A message is complete only with its last byte, so that stamp is never
earlier than the message's arrival: a latency measured from it is never understated, and no longer includes
the reader's lateness.

The kernel stamps with ``CLOCK_REALTIME``; the harness's clock is ``time.perf_counter_ns`` (``CLOCK_MONOTONIC``).
The stamp is moved to it with the offset between the two clocks read at the moment of the read, so only a step
of the wall clock between the packet's arrival and its read (milliseconds) could move it; it is never put
later than the read itself.

Unavailable on TLS sockets (``ssl`` has no ``recvmsg``: the bytes the kernel received are not the message) and
where the option is missing; callers then stamp when the read returns, as before.
"""

from __future__ import annotations

import socket
import struct
import time

__all__ = ["enable", "recv_stamped", "supported"]

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; the name is missing on some builds
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


def supported(sock: socket.socket) -> bool:
    return not hasattr(sock, "context") and hasattr(sock, "recvmsg")  # an ssl.SSLSocket has a context


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what this socket receives; False where it cannot (TLS, no such option)."""
    if not supported(sock):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def recv_stamped(sock: socket.socket, bufsize: int) -> tuple[bytes, int | None]:
    """``recv`` on a socket ``enable``d: the bytes, and when (``perf_counter_ns``) the last of them arrived,
    or None when the kernel gave no stamp."""
    data, ancillary, _flags, _addr = sock.recvmsg(bufsize, _ANCILLARY)
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(raw)
            mono, wall = time.perf_counter_ns(), time.time_ns()
            return data, min(mono, sec * 1_000_000_000 + nsec - (wall - mono))
    return data, None
