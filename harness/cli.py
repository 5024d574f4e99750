"""``zora-harness``: the command line.

Exit codes (documented in README.md):
    0  success (and, for ``gate``, GO)
    1  NO-GO (``gate``)
    2  bad usage or configuration
    3  target unreachable / the embedded stack could not start
  130  interrupted (Ctrl-C) before finishing
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

__all__ = ["EXIT_NO_GO", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_NO_GO = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad flags or configuration: one line for the user, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="zora-harness", description="Prove that Zora's realtime sync works.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    stack = sub.add_parser("stack", help="the embedded Supabase-compatible stack")
    stack_sub = stack.add_subparsers(dest="stack_command", metavar="ACTION")
    stack_sub.required = True
    up = stack_sub.add_parser("up", help="start the stack in the foreground and print its URLs and keys")
    up.add_argument("--port", type=int, default=54321, help="API port on 127.0.0.1 (0 = any free port)")
    up.add_argument("--db-url", help="use this existing PostgreSQL (superuser DSN) instead of a throwaway cluster")
    up.add_argument("--no-seed", action="store_true", help="do not load the demo data (fixtures/seed.sql)")
    up.add_argument("--migrations", type=Path, action="append",
                    help="directory of numbered .sql migrations (default: fixtures/migrations); repeatable")
    up.add_argument("--jwt-secret", help="sign keys with this secret (default: a fresh random one)")
    up.add_argument("--env", action="store_true", help="print KEY=value lines, like `supabase status -o env`")
    up.add_argument("--realtime-mode", choices=("streaming", "hosted-polling"), default="streaming",
                    help="streaming (default): changes are pushed as they commit; hosted-polling: read the WAL "
                         "every 100 ms and 500 ms when idle, as hosted Supabase Realtime does, to preview "
                         "production's latency tail")
    return p


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _stack_up(args: argparse.Namespace) -> int:
    from stack.migrate import MigrationError
    from stack.postgres import PostgresError
    from stack.server import FIXTURES, EmbeddedStack, StackError

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a TCP port")
    if args.port and not _port_free(args.port):
        raise UsageError(f"port {args.port} on 127.0.0.1 is in use; pass --port 0 for a free one")
    if args.jwt_secret is not None and len(args.jwt_secret) < 32:
        raise UsageError("--jwt-secret must be at least 32 characters, as Supabase requires")
    migrations = args.migrations or [FIXTURES / "migrations"]
    for d in migrations:
        if not d.is_dir():
            raise UsageError(f"--migrations {d}: not a directory")
    seed = [] if args.no_seed else [FIXTURES / "seed.sql"]

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    stack = EmbeddedStack(migrations=migrations, seed=seed, db_url=args.db_url, port=args.port,
                          jwt_secret=args.jwt_secret or "", realtime_mode=args.realtime_mode)
    try:
        try:
            stack.start()
        except (PostgresError, StackError, MigrationError) as e:
            print(f"zora-harness: stack failed to start: {e}", file=sys.stderr)
            return EXIT_UNREACHABLE
        _print_status(stack, env=args.env)
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
        print("Stopping.", file=sys.stderr)
        return EXIT_OK
    finally:
        stack.stop()
        for s, h in previous.items():
            signal.signal(s, h)


def _print_status(stack: object, env: bool) -> None:
    from stack.server import EmbeddedStack

    assert isinstance(stack, EmbeddedStack)
    rows = [
        ("API_URL", "API URL", stack.api_url),
        ("REST_URL", "REST URL", f"{stack.api_url}/rest/v1"),
        ("AUTH_URL", "Auth URL", f"{stack.api_url}/auth/v1"),
        ("REALTIME_URL", "Realtime URL", f"ws://127.0.0.1:{stack.port}/realtime/v1"),
        ("DB_URL", "DB URL", stack.superuser_dsn),
        ("ANON_KEY", "anon key", stack.anon_key),
        ("SERVICE_ROLE_KEY", "service_role key", stack.service_role_key),
    ]
    if env:
        for key, _, value in rows:
            print(f'{key}="{value}"')
        print(f'SUPABASE_URL="{stack.api_url}"')
        print(f'SUPABASE_ANON_KEY="{stack.anon_key}"')
        print(f'SUPABASE_SERVICE_ROLE_KEY="{stack.service_role_key}"')
        return
    print("Zora embedded stack is running (Ctrl-C to stop).\n")
    for _, label, value in rows:
        print(f"{label:>17}: {value}")
    print(f"{'realtime mode':>17}: {stack.realtime_mode}")
    print(f"\n{'ready in':>17}: {stack.timings.get('ready', 0):.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.command == "stack" and args.stack_command == "up":
            return _stack_up(args)
        raise UsageError(f"unknown command {args.command!r}")
    except UsageError as e:
        print(f"zora-harness: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("zora-harness: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
