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
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

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
    up.add_argument("--db-url", help="use this existing PostgreSQL (superuser DSN) instead of a throwaway cluster, as"
                                     " it is: no role or password is changed; refused without a stack base (--init-db)")
    up.add_argument("--init-db", action="store_true",
                    help="with --db-url: install the stack's Supabase base and apply pending migrations there")
    up.add_argument("--no-seed", action="store_true", help="do not load the demo data (fixtures/seed.sql)")
    up.add_argument("--seed", action="store_true", help="with --db-url: load the demo data there too (default: not)")
    up.add_argument("--migrations", type=Path, action="append",
                    help="directory of numbered .sql migrations (default: fixtures/migrations); repeatable")
    up.add_argument("--jwt-secret", help="sign keys with this secret (default: a fresh random one)")
    up.add_argument("--env", action="store_true", help="print KEY=value lines, like `supabase status -o env`")
    up.add_argument("--realtime-mode", choices=("streaming", "hosted-polling"), default="streaming",
                    help="streaming (default): changes are pushed as they commit; hosted-polling: read the WAL "
                         "every 100 ms and 500 ms when idle, as hosted Supabase Realtime does, to preview "
                         "production's latency tail")
    gate = sub.add_parser("gate", help="run the flows against a target and give a GO / NO-GO verdict (exit code)")
    gate.add_argument("--target", default="embedded",
                      help="embedded (default: start the embedded stack), url (SUPABASE_URL / SUPABASE_ANON_KEY / "
                           "SUPABASE_SERVICE_ROLE_KEY or the flags below), or a file written by `supabase status -o env`")
    gate.add_argument("--url", help="Supabase API URL (with --target url)")
    gate.add_argument("--anon-key", help="anon key (with --target url)")
    gate.add_argument("--service-key", help="service-role key (with --target url)")
    gate.add_argument("--db-url", help="PostgreSQL URL for the preflight's checks of publication, RLS and triggers"
                                       " (with --target url; or SUPABASE_DB_URL)")
    gate.add_argument("--criteria", type=Path, help="criteria file (default: fixtures/criteria.toml)")
    gate.add_argument("--report-dir", type=Path, default=Path("reports"), help="where run directories go")
    gate.add_argument("--rounds", type=int, default=3, help="how many times each flow runs (1-100)")
    gate.add_argument("--settle", type=float, default=3.0, help="seconds to wait for late events (0-60)")
    gate.add_argument("--skip-preflight", action="store_true", help="run the flows even if preflight finds problems")
    gate.add_argument("--quiet", action="store_true", help="no progress display")
    gate.add_argument("--probes", choices=("both", "py"), default="both",
                      help="both: our Phoenix probes and supabase-js twins under Node (default); py: ours only")
    analyze = sub.add_parser("analyze", help="re-check a stored run directory against the criteria")
    analyze.add_argument("run_dir", type=Path)
    analyze.add_argument("--criteria", type=Path, help="criteria file (default: fixtures/criteria.toml)")
    return p


def _load_criteria(path: Path | None) -> list[Any]:
    from harness.criteria import DEFAULT_CRITERIA, CriteriaError, load_criteria

    try:
        return load_criteria(path or DEFAULT_CRITERIA)
    except CriteriaError as e:
        raise UsageError(str(e)) from e


def _print_verdict(verdict: object, run_dir: Path) -> None:
    from harness.criteria import Verdict

    assert isinstance(verdict, Verdict)
    print(f"\n{verdict.label}  ({run_dir})")
    for c, r in verdict.lines:
        mark = {True: "pass   ", False: "FAIL   ", None: "unknown"}[r.valid]
        print(f"  {mark} {c.id:<18} {r.summary}")
    try:
        flavours = json.loads((run_dir / "results.json").read_text()).get("probe_flavours") or {}
    except (OSError, ValueError):
        flavours = {}
    for name in ("ours", "supabase-js"):
        f = flavours.get(name)
        if f and "p99" in f:
            print(f"  {'probes':<26} {name}: {f['delivered']}/{f['expected']} delivered, write->deliver p50"
                  f" {f['p50']:.1f} / p99 {f['p99']:.1f} ms")
    g = flavours.get("twin_minus_original_ms")
    if g:
        print(f"  {'':<26} supabase-js stamps {g['p50']:.1f} ms after ours at the median (p99 {g['p99']:.1f} ms)")


def _gate(args: argparse.Namespace) -> int:
    from harness.gate import TargetRefused, TargetUnreachable, run_gate
    from harness.probes import JsProbes
    from harness.targets import TargetError, from_env, from_env_file

    criteria = _load_criteria(args.criteria)
    if not 1 <= args.rounds <= 100:
        raise UsageError("--rounds must be between 1 and 100")
    if not 0 <= args.settle <= 60:
        raise UsageError("--settle must be between 0 and 60 seconds")
    if args.probes == "both" and (why := JsProbes.unavailable()):
        raise UsageError(f"{why}; or pass --probes py")
    kw = {"rounds": args.rounds, "settle_s": args.settle, "skip_preflight": args.skip_preflight, "quiet": args.quiet,
          "js": args.probes == "both",
          "config": {"criteria": str(args.criteria or "fixtures/criteria.toml"), "probes": args.probes}}
    try:
        if args.target == "embedded":
            return _gate_embedded(criteria, args.report_dir, kw)
        if args.target == "url":
            target = from_env(url=args.url, anon=args.anon_key, service=args.service_key, db_url=args.db_url)
        elif Path(args.target).is_file():
            target = from_env_file(Path(args.target))
        else:
            raise UsageError(f"--target {args.target!r}: not embedded, url, or a readable env file")
        result = run_gate(target, criteria, args.report_dir, **kw)
    except (TargetError, TargetRefused) as e:
        raise UsageError(str(e)) from e
    except TargetUnreachable as e:
        print(f"zora-harness: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    _print_verdict(result.verdict, result.run_dir)
    return EXIT_OK if result.verdict.go else EXIT_NO_GO


def _gate_embedded(criteria: list[Any], report_dir: Path, kw: dict[str, Any]) -> int:
    from harness.gate import run_gate
    from harness.targets import Target
    from stack.migrate import MigrationError
    from stack.postgres import PostgresError
    from stack.server import EmbeddedStack, StackError

    stack = EmbeddedStack.from_fixtures(seed=False)
    try:
        try:
            stack.start()
        except (PostgresError, StackError, MigrationError) as e:
            print(f"zora-harness: embedded stack failed to start: {e}", file=sys.stderr)
            return EXIT_UNREACHABLE
        target = Target("embedded", stack.api_url, stack.anon_key, stack.service_role_key, stack.superuser_dsn,
                        name="embedded")
        result = run_gate(target, criteria, report_dir, **kw)
    finally:
        stack.stop()
    _print_verdict(result.verdict, result.run_dir)
    return EXIT_OK if result.verdict.go else EXIT_NO_GO


def _analyze(args: argparse.Namespace) -> int:
    from harness.gate import judge
    from harness.history import read_history
    from harness.report import write_report

    history = args.run_dir / "history.jsonl"
    if not history.is_file():
        raise UsageError(f"{args.run_dir}: no history.jsonl there (not a run directory)")
    criteria = _load_criteria(args.criteria)
    records, skipped = read_history(history)
    verdict = judge(records, criteria)
    write_report(args.run_dir, records, verdict)
    if skipped:
        print(f"note: {skipped} unreadable line(s) skipped (a run cut short?)", file=sys.stderr)
    _print_verdict(verdict, args.run_dir)
    return EXIT_OK if verdict.go else EXIT_NO_GO


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
    from stack.server import FIXTURES, EmbeddedStack, StackConfigError, StackError

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
    if args.seed and args.no_seed:
        raise UsageError("--seed and --no-seed contradict each other")
    if args.init_db and not args.db_url:
        raise UsageError("--init-db goes with --db-url (the throwaway cluster is always initialised)")
    # the demo rows go into someone else's database only when asked for
    seed = [FIXTURES / "seed.sql"] if args.seed or not (args.no_seed or args.db_url) else []

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    stack = EmbeddedStack(migrations=migrations, seed=seed, db_url=args.db_url, init_db=args.init_db, port=args.port,
                          jwt_secret=args.jwt_secret or "", realtime_mode=args.realtime_mode)
    try:
        try:
            stack.start()
        except StackConfigError as e:
            print(f"zora-harness: {e}", file=sys.stderr)
            return EXIT_USAGE
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
        assert stack.settings is not None
        print(f'JWT_SECRET="{stack.settings.jwt_secret}"')  # as `supabase status -o env`; asked for, never logged
        return
    print("Zora embedded stack is running (Ctrl-C to stop).\n")
    for _, label, value in rows:
        print(f"{label:>17}: {value}")
    print(f"{'realtime mode':>17}: {stack.realtime_mode}")
    if stack.db_url:
        print(f"{'database':>17}: yours, used as it is (login roles assumed per connection, no password changed)")
    print(f"\n{'ready in':>17}: {stack.timings.get('ready', 0):.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.command == "stack" and args.stack_command == "up":
            return _stack_up(args)
        if args.command == "gate":
            return _gate(args)
        if args.command == "analyze":
            return _analyze(args)
        raise UsageError(f"unknown command {args.command!r}")
    except UsageError as e:
        print(f"zora-harness: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("zora-harness: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
