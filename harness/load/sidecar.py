"""The processes a load run needs beside Locust's: the embedded stack and the fault proxy, in a child process.

Locust's processes run under gevent's monkey patching; the stack (uvicorn, asyncio, psycopg) and the
fault proxy (asyncio) must not, and the stack's own work would sit inside the load generator's measurements.
So the master (or the only process) starts this module as a child::

    python -m harness.load.sidecar [--embedded [--delivery-delay-ms N] | --containers PROFILE] [--proxy URL]

It prints one JSON line (the target's URL and keys; ``proxy_url``: the realtime websocket through a
``FaultProxy`` when ``--proxy`` is given) and then reads JSON commands on stdin, one a line:
``{"fault": "reset", "seconds": 2}`` applies a fault of ``harness.faults`` to the proxy for that long and
answers ``{"fault_id", "start_ns", "end_ns"}`` (wall clock). End of stdin (the parent went away, even on
``kill -9``: the pipe closes) or SIGTERM stops everything; the stack deletes its cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from typing import Any
from urllib.parse import urlparse

__all__ = ["main"]


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _serve(args: argparse.Namespace, env: dict[str, Any]) -> None:
    from harness.faults import FaultProxy, parse_fault

    proxy = None
    if args.proxy:
        u = urlparse(args.proxy)
        proxy = FaultProxy(u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80), name="load",
                           history=None)
        await proxy.start()
        env["proxy_url"] = f"ws://127.0.0.1:{proxy.port}"
    _say(env)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:  # a thread: stdin blocks
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    try:
        while (line := await lines.get()) is not None:
            try:
                cmd = json.loads(line)
                if proxy is None:
                    raise ValueError("no fault proxy (start the sidecar with --proxy)")
                spec = parse_fault(str(cmd["fault"]))
                start = time.time_ns()
                async with proxy.fault(spec, seconds=float(cmd.get("seconds", 0))) as fault_id:  # type: ignore[arg-type]
                    pass
                _say({"fault_id": fault_id, "start_ns": start, "end_ns": time.time_ns(), "name": cmd["fault"]})
            except Exception as e:
                _say({"error": f"{type(e).__name__}: {e}"})
    finally:
        if proxy is not None:
            await proxy.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.load.sidecar")
    ap.add_argument("--embedded", action="store_true", help="start the embedded stack")
    ap.add_argument("--containers", metavar="PROFILE", help="start the containers target with this profile")
    ap.add_argument("--delivery-delay-ms", type=int, default=0, help="negative control: hold every change this long")
    ap.add_argument("--proxy", help="a fault proxy in front of this API URL (the embedded stack's when --embedded)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))
    stack: Any = None
    env: dict[str, Any] = {}
    try:
        if args.embedded:
            from stack.server import EmbeddedStack

            stack = EmbeddedStack.from_fixtures(seed=False, fault_delivery_delay_ms=args.delivery_delay_ms)
            try:
                stack.start()
            except Exception as e:
                _say({"error": f"embedded stack failed to start: {e}"})
                return 3
            env = {"url": stack.api_url, "anon_key": stack.anon_key, "service_role_key": stack.service_role_key,
                   "db_url": stack.superuser_dsn}
            if args.proxy == "embedded":
                args.proxy = stack.api_url
        elif args.containers:
            from harness.containers import ContainerStack, DockerUnavailable, ImageUnavailable

            stack = ContainerStack(profile=args.containers, log=lambda line: print(line, file=sys.stderr, flush=True))
            try:
                stack.start()
            except DockerUnavailable as e:
                _say({"error": str(e), "exit": 5})
                return 5
            except ImageUnavailable as e:
                _say({"error": str(e), "exit": 6})
                return 6
            except Exception as e:
                _say({"error": f"containers target failed to start: {e}"})
                return 3
            t = stack.target()
            env = {"url": t.url, "anon_key": t.anon_key, "service_role_key": t.service_role_key, "db_url": t.db_url,
                   "name": t.name}
            if args.proxy == "embedded":
                args.proxy = t.url
        asyncio.run(_serve(args, env))
        return 0
    finally:
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
