"""``zora-harness``: the command line.

Exit codes (documented in README.md, each tested):
    0  success (``gate``, ``analyze``, ``nightly``: GO; ``clean``: nothing of the run left; ``report``: written;
       ``trend``: no threshold broken by the newest run of any series)
    1  NO-GO (``gate``, ``analyze``, ``nightly``); ``clean``: rows of the run remain; ``trend``: a regression
    2  bad usage or configuration (one line on stderr)
    3  target unreachable, not a Supabase API, or the embedded stack could not start
    4  internal error of the harness (the run directory keeps what was recorded, with a NO-GO report)
    5  --target containers: no Docker daemon answers
    6  --target containers: an image the profile needs cannot be had (not here, not pullable, not buildable)
  128+n  interrupted by signal n: 130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP; cleaned up, recorded, reported
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["EXIT_IMAGE", "EXIT_INTERNAL", "EXIT_NO_DOCKER", "EXIT_NO_GO", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE",
           "main"]

EXIT_OK = 0
EXIT_NO_GO = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERNAL = 4
EXIT_NO_DOCKER = 5
EXIT_IMAGE = 6

EXIT_CODES = """exit codes:
  0    GO (clean: nothing of the run left)
  1    NO-GO (clean: rows of the run remain)
  2    bad usage or configuration
  3    target unreachable or not a Supabase API; embedded stack failed to start
  4    internal error of the harness (what was recorded is kept, with a NO-GO report)
  5    --target containers: no Docker daemon answers
  6    --target containers: an image of the profile cannot be had (not here, not pullable, not buildable)
  130  interrupted by Ctrl-C (143 SIGTERM, 129 SIGHUP): cleaned up, recorded, reported"""

RESUMES = ("supabase", "keep-everything")  # stack.realtime.server.RESUMES (tested equal)
RESUME_HELP = ("what a realtime restart delivers: supabase (default): changes committed while realtime was down "
               "are never delivered, as Supabase Realtime's temporary slot loses them (the apps must refetch); "
               "keep-everything: the slot is kept and delivers them after the restart")
GATE_EPILOG = f"""examples:
  zora-harness gate                                  # the embedded stack, started and stopped for you
  SUPABASE_URL=https://x.supabase.co SUPABASE_ANON_KEY=... SUPABASE_SERVICE_ROLE_KEY=... zora-harness gate --target url
  supabase status -o env > status.env && zora-harness gate --env-file status.env
  zora-harness gate --target containers              # PostgreSQL 15 + wal2json in a local image, our services on it
  zora-harness gate --target containers --container-profile supabase-official   # the images `supabase start` uses

keys and URLs come from flags, else --env-file, else the environment (SUPABASE_URL, SUPABASE_ANON_KEY,
SUPABASE_SERVICE_ROLE_KEY, SUPABASE_DB_URL); prefer the environment or a file: flags show in `ps`.
--url, --anon-key, --service-key, --db-url and --env-file imply --target url.

{EXIT_CODES}"""

URL_FLAGS = ("url", "anon_key", "service_key", "db_url", "env_file")


class UsageError(Exception):
    """Bad flags or configuration: one line for the user, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


class _Help(argparse.RawDescriptionHelpFormatter):
    """Each option's default in its help (unless it has none, or says it already), and epilogs kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: {action.default})"


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("zora-harness")
    except metadata.PackageNotFoundError:
        return "unknown"


def _target_flags(p: argparse.ArgumentParser, db_url: str, default: str) -> None:
    p.add_argument("--target", default=None,
                   help="embedded (start the embedded stack), containers (a backend in Docker, through "
                        "testcontainers: --container-profile), url (a Supabase given by URL and keys), or a file "
                        f"written by `supabase status -o env` (default: {default})")
    p.add_argument("--container-profile", default="embedded-in-container",
                   choices=("embedded-in-container", "supabase-official"),
                   help="with --target containers: embedded-in-container (PostgreSQL 15 + wal2json in a locally built "
                        "image, our stack's services attached) or supabase-official (the images `supabase start` "
                        "uses; images and versions in harness/containers/images.toml)")
    p.add_argument("--env-file", type=Path, help="read SUPABASE_URL / keys / DB URL from this file "
                                                 "(`supabase status -o env` names work too)")
    p.add_argument("--url", help="Supabase API URL (default: $SUPABASE_URL)")
    p.add_argument("--anon-key", help="anon key (default: $SUPABASE_ANON_KEY)")
    p.add_argument("--service-key", help="service-role key (default: $SUPABASE_SERVICE_ROLE_KEY)")
    p.add_argument("--db-url", help=f"PostgreSQL URL {db_url} (default: $SUPABASE_DB_URL)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="zora-harness", description="Prove that Zora's realtime sync works.", epilog=EXIT_CODES,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"zora-harness {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    stack = sub.add_parser("stack", help="the embedded Supabase-compatible stack")
    stack_sub = stack.add_subparsers(dest="stack_command", metavar="ACTION", parser_class=_Parser)
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
    up.add_argument("--jwt-secret", default=os.environ.get("ZORA_JWT_SECRET"),
                    help="sign keys with this secret (default: $ZORA_JWT_SECRET, else a fresh random one; prefer the "
                         "variable: flags show in `ps`)")
    up.add_argument("--env", action="store_true", help="print KEY=value lines, like `supabase status -o env`")
    up.add_argument("--realtime-resume", choices=RESUMES, default="supabase", help=RESUME_HELP)
    up.add_argument("--realtime-mode", choices=("streaming", "hosted-polling"), default="streaming",
                    help="streaming (default): changes are pushed as they commit; hosted-polling: read the WAL "
                         "every 100 ms and 500 ms when idle, as hosted Supabase Realtime does, to preview "
                         "production's latency tail")
    up.add_argument("--db-schemas", default="public", metavar="LIST",
                    help="schemas REST exposes, comma-separated, the first the default (PostgREST's db-schemas); "
                         "others are chosen with Accept-Profile / Content-Profile (default: public)")

    gate = sub.add_parser("gate", help="run the flows against a target and give a GO / NO-GO verdict (exit code)",
                          description="Run the design documents' flows against a target and judge them against "
                                      "the success criteria. The exit code is the verdict.",
                          epilog=GATE_EPILOG, formatter_class=_Help)
    _target_flags(gate, "for the preflight's checks of publication, RLS and triggers",
                  "embedded, or url when any URL or key flag is given")
    gate.add_argument("--criteria", type=Path, help="criteria file (default: fixtures/criteria.toml)")
    gate.add_argument("--report-dir", type=Path, default=Path("reports"), help="where run directories go")
    gate.add_argument("--rounds", type=int, default=3, help="how many times each flow runs (1-100)")
    gate.add_argument("--settle", type=float, default=3.0,
                      help="seconds to wait for late events (at least the criteria's longest deadline, at most 60)")
    gate.add_argument("--skip-preflight", action="store_true", help="run the flows even if preflight finds problems")
    gate.add_argument("--quiet", action="store_true", help="no progress display")
    gate.add_argument("--probes", choices=("auto", "browser", "both", "py"), default="auto",
                      help="both: our Phoenix probes and supabase-js twins under Node; browser: both, and the vendor "
                           "portal and admin dashboard in Chromium tabs; auto: browser when Chromium is here, else both "
                           "(and it says so); py: ours only")
    gate.add_argument("--browser-tabs", type=int, default=1,
                      help="Chromium tabs per browser app (1-4; every tab after the first is opened behind it)")
    gate.add_argument("--realtime-resume", choices=RESUMES, default=None,
                      help="embedded target only: " + RESUME_HELP + "; named in the verdict and config.json")
    gate.add_argument("--no-faults", action="store_true",
                      help="skip the resilience phase (reset, black hole, churn): the verdict lists what it did not test")
    gate.add_argument("--blackhole-s", type=float,
                      help="how long the black hole lasts (default: two heartbeats of the client policy + 3 s = 53 s)")
    gate.add_argument("--churn", type=int, default=100, help="light probes reset at random moments for connection "
                                                           "reliability (0-2000; 0: none)")
    gate.add_argument("--fault", action="append", default=[], metavar="SPEC",
                      help="one more fault for the resilience phase, repeatable: latency:MS[,jitter=MS][,dir=down|up], "
                           "bandwidth:BYTES_PER_S, limit:BYTES, down, reset, blackhole (each on every device's network "
                           "for --fault-s), or restart_realtime[:S], restart_postgres, pause_postgres:S (embedded only), "
                           "or netem_blackhole, netem_loss:PERCENT, netem_delay:MS (packets, tc netem; containers only)")
    gate.add_argument("--fault-s", type=float, default=5.0, help="how long each --fault network fault lasts (1-600)")
    gate.add_argument("--seed", type=int, help="the seed of the random fault moments (default: a fresh one, printed "
                                               "and stored, so a run can be replayed)")

    analyze = sub.add_parser("analyze", help="judge a stored run again, into a directory of its own",
                             description="Judge a stored run directory again (by default with the criteria the run "
                                         "recorded), writing the verdict files to RUN/analysis/<time>/ or --out; the "
                                         "run's own verdict is never overwritten.",
                             epilog=EXIT_CODES, formatter_class=_Help)
    analyze.add_argument("run_dir", type=Path)
    analyze.add_argument("--criteria", type=Path, help="criteria file (default: the run's own criteria.toml)")
    analyze.add_argument("--out", type=Path, help="where to write (default: RUN/analysis/<UTC time>/)")

    clean = sub.add_parser("clean", help="delete a run's rows from a target, by the run's tag",
                           description="Delete every row a run created on a target (found by its run id: users, "
                                       "shops, products, orders, conversations), for a run that was killed before "
                                       "its own cleanup. Only rows carrying the tag are touched.",
                           epilog=EXIT_CODES, formatter_class=_Help)
    clean.add_argument("--run-id", required=True, help="the run id (zr + 8 hex digits; in the run's config.json)")
    _target_flags(clean, "(not needed)", "url")
    _report_parsers(sub, gate)
    return p


def _report_parsers(sub: Any, gate: argparse.ArgumentParser) -> None:
    """``report``, ``nightly`` (every flag of the gate, passed through) and ``trend``."""
    from harness.nightly import NIGHTLY_EPILOG
    from harness.report.trend import TREND_EPILOG

    report = sub.add_parser("report", help="write RUN/index.html, the run's report for people",
                            description="Judge a stored run directory again (with the criteria it recorded) and write "
                                        "its self-contained HTML report, RUN/index.html. Nothing else in RUN changes.",
                            epilog="exit codes:\n  0    written\n  2    bad usage (not a run directory, unreadable "
                                   "criteria, RUN not writable)", formatter_class=_Help)
    report.add_argument("run_dir", type=Path, metavar="RUN")
    report.add_argument("--criteria", type=Path, help="criteria file (default: the run's own criteria.toml)")
    nightly = sub.add_parser("nightly", add_help=False, formatter_class=_Help, epilog=NIGHTLY_EPILOG,
                             help="the gate + a short load profile (when load/ has one) + the report and a Markdown "
                                  "summary, in one run directory",
                             description="Run the gate (every gate flag works here too), then the short load profile "
                                         "of load/ when there is one, into the same run directory; write index.html "
                                         "and summary.md (appended to $GITHUB_STEP_SUMMARY when set). The exit code "
                                         "is the gate's.")
    nightly._add_container_actions(gate)  # the gate's flags, as argparse's parents= copies them
    nightly.add_argument("--no-load", action="store_true", help="skip the load profile even when load/ has one")
    trend = sub.add_parser("trend", help="chart each criterion's figure across many runs; flag regressions",
                           description="Read every run directory under DIR (results.json, environment.json, "
                                       "config.json), chart each criterion's figure over time into DIR/trend.html and "
                                       "DIR/trend/*.png, one line per target and machine (never mixed), and flag "
                                       "regressions of the newest run of each against a baseline.",
                           epilog=TREND_EPILOG, formatter_class=_Help)
    trend.add_argument("dir", type=Path, metavar="DIR")
    trend.add_argument("--fail-on", action="append", metavar="SPEC",
                       help="a regression threshold, repeatable: METRIC:CONDITION, e.g. realtime_latency.p99:+10%% or "
                            "delivery:<100%% (grammar below)")
    trend.add_argument("--baseline", type=Path, metavar="RUN",
                       help="compare with this run directory (default: the median of the earlier runs of the same "
                            "target and machine)")
    trend.add_argument("--last", type=int, default=30, help="how many earlier runs the median baseline reads (1-1000)")
    trend.add_argument("--out", type=Path, help="where trend.html and trend/ go (default: DIR)")


def _report(args: argparse.Namespace) -> int:
    from harness.judge import judge
    from harness.report import write_html

    run_dir: Path = args.run_dir
    history = run_dir / "history.jsonl"
    if not history.is_file():
        raise UsageError(f"{run_dir}: no history.jsonl there (not a run directory)")
    criteria = _run_criteria(run_dir, args.criteria)
    judged = judge(history, criteria)
    stored = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        import json

        stored = json.loads((run_dir / "results.json").read_text(encoding="utf-8")).get("verdict")
    try:
        write_html(run_dir, judged.analysis, judged.verdict, stored_verdict=stored)
    except OSError as e:
        raise UsageError(f"{run_dir}: cannot write index.html: {e.strerror or e}") from e
    _out(f"{run_dir / 'index.html'}  ({judged.verdict.label})")
    return EXIT_OK


def _run_criteria(run_dir: Path, given: Path | None) -> Any:
    """The criteria to judge a stored run by: ``given``, else the run's own criteria.toml."""
    from harness.criteria import CriteriaError, parse_criteria

    own = run_dir / "criteria.toml"
    if given is not None:
        return _load_criteria(given)
    if not own.is_file():
        raise UsageError(f"{run_dir}: the run recorded no criteria.toml; pass --criteria FILE")
    try:
        return parse_criteria(own.read_text(encoding="utf-8"), str(own))
    except (CriteriaError, UnicodeDecodeError) as e:
        raise UsageError(f"{own}: the run's own criteria cannot be read ({e}); pass --criteria") from e


def _trend(args: argparse.Namespace) -> int:
    from harness.report.trend import TrendError, trend

    try:
        result = trend(args.dir, fail_on=args.fail_on or [], baseline=args.baseline, last=args.last, out=args.out)
    except TrendError as e:
        raise UsageError(str(e)) from e
    for line in result.lines():
        _out(line)
    return EXIT_NO_GO if result.regressions else EXIT_OK


def _load_criteria(path: Path | None) -> Any:
    from harness.criteria import DEFAULT_CRITERIA, CriteriaError, load_criteria

    try:
        return load_criteria(path or DEFAULT_CRITERIA)
    except CriteriaError as e:
        raise UsageError(str(e)) from e


def _target(args: argparse.Namespace, default: str = "embedded") -> Any:
    """The target the flags name; URL and key flags imply (and demand) a url target."""
    from harness.targets import TargetError, from_env

    given = [f"--{f.replace('_', '-')}" for f in URL_FLAGS if getattr(args, f, None)]
    kind = args.target or ("url" if given else default)
    if kind != "embedded" and getattr(args, "realtime_resume", None):
        raise UsageError("--realtime-resume: a setting of the embedded stack (a Supabase given by URL resumes as it"
                         " does)")
    if kind in ("embedded", "containers"):
        if given:
            raise UsageError(f"{', '.join(given)} name a Supabase to test, but --target {kind} starts its own; "
                             f"drop --target {kind} (they imply --target url)")
        return None if kind == "embedded" else "containers"
    env_file = args.env_file
    if kind != "url":
        if not Path(kind).is_file():
            raise UsageError(f"--target {kind!r}: not embedded, containers, url, or a readable env file")
        if env_file is not None:
            raise UsageError("--target FILE and --env-file both name an env file; give one")
        env_file = Path(kind)
    try:
        return from_env(url=args.url, anon=args.anon_key, service=args.service_key, db_url=args.db_url,
                        env_file=env_file)
    except TargetError as e:
        raise UsageError(f"{e} (flags: --url, --anon-key, --service-key, --env-file)") from e


def _out(line: str = "") -> None:
    """Print to stdout; a reader that went away (``gate | head -1``) does not turn a verdict into a crash."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _print_verdict(verdict: Any, where: Path) -> None:
    from harness.checks import LABELS
    from harness.criteria import NOT_JUDGED
    from harness.report import headline

    _out(f"{headline(verdict)}  ({where})")
    not_judged = [ln for ln in verdict.lines if ln.result.summary == NOT_JUDGED]
    for ln in verdict.lines:
        if ln.result.summary != NOT_JUDGED:
            _out(f"  {LABELS[ln.result.valid]:<7} {ln.criterion.id:<18} {ln.result.summary}")
    if not_judged:
        _out(f"  {LABELS[None]:<7} {len(not_judged)} criteria not judged: the flows did not run (see above)")
    f = verdict.flavours
    for name in ("ours", "supabase-js", "browser"):
        fl = f.get(name)
        if fl and "p99" in fl:
            _out(f"  {'probes':<26} {name}: {fl['delivered']}/{fl['expected']} delivered live, write->deliver p50"
                 f" {fl['p50']:.1f} / p99 {fl['p99']:.1f} ms on a healthy network")
    for side in ("front", "behind"):
        b = f.get("browser", {}).get(side)
        if b and "deliver_to_screen" in b:
            _out(f"  {'':<26} browser tabs {side}: write->screen p50 {b['write_to_screen']['p50']:.1f} / max "
                 f"{b['write_to_screen']['max']:.1f} ms, deliver->screen max {b['deliver_to_screen']['max']:.2f} ms"
                 + (f", deliver->frame max {b['deliver_to_frame']['max']:.1f} ms" if "deliver_to_frame" in b else "")
                 + f" (n={b['n']})")
    if f.get("browser", {}).get("clock_error_ms") is not None:
        br = f["browser"]
        _out(f"  {'':<26} page clocks mapped to within +/- {br['clock_error_ms']:.3f} ms"
             + (f", drift by the end {br['clock_drift_ms']:.3f} ms" if br.get("clock_drift_ms") is not None else "")
             + f"; {br['hidden_tabs']} tab(s) hidden")
    g = f.get("twin_minus_original_ms")
    if g:
        _out(f"  {'':<26} supabase-js stamps {g['p50']:.1f} ms after ours at the median (p99 {g['p99']:.1f} ms)")


def _gate(args: argparse.Namespace) -> int:
    return _run_gate(args)[0]


def _run_gate(args: argparse.Namespace) -> tuple[int, Any]:
    """The gate's exit code, and its ``GateResult`` (None when it did not get as far as a verdict)."""
    from harness.browser import browser_unavailable
    from harness.flows import BrowserPlan
    from harness.gate import TargetRefused, TargetUnreachable, run_gate
    from harness.probes import JsProbes
    from harness.run import RunDirError

    target = _target(args)
    criteria = _load_criteria(args.criteria)
    if not 1 <= args.rounds <= 100:
        raise UsageError("--rounds must be between 1 and 100")
    floor = criteria.settle_floor_s()
    if not args.settle <= 60 or args.settle < floor:
        raise UsageError(f"--settle {args.settle:g}: must be from {floor:g} s (the criteria's longest deadline: a "
                         "shorter window counts events still due as unseen) to 60 s")
    if args.report_dir.exists() and not args.report_dir.is_dir():
        raise UsageError(f"--report-dir {args.report_dir}: exists and is not a directory")
    if args.probes != "py" and (why := JsProbes.unavailable()):
        raise UsageError(f"{why}; or pass --probes py")
    if not 1 <= args.browser_tabs <= 4:
        raise UsageError(f"--browser-tabs {args.browser_tabs}: must be from 1 to 4")
    browser = None
    no_browser = browser_unavailable()
    if args.probes == "browser" and no_browser:
        raise UsageError(f"{no_browser}; or pass --probes both")
    if args.probes == "auto" and no_browser:
        print(f"zora-harness: no browser probes: {no_browser}", file=sys.stderr)
    if args.probes == "browser" or (args.probes == "auto" and not no_browser):
        browser = BrowserPlan(tabs=args.browser_tabs)
    if args.blackhole_s is not None and not 1 <= args.blackhole_s <= 600:
        raise UsageError(f"--blackhole-s {args.blackhole_s:g}: must be from 1 to 600 seconds")
    if not 0 <= args.churn <= 2000:
        raise UsageError(f"--churn {args.churn}: must be from 0 to 2000 probes")
    if args.seed is not None and not 0 <= args.seed < 1 << 63:
        raise UsageError(f"--seed {args.seed}: must be a non-negative integer below 2**63")
    extra = _faults(args, target)
    kw = {"rounds": args.rounds, "settle_s": args.settle, "skip_preflight": args.skip_preflight, "quiet": args.quiet,
          "js": args.probes != "py", "browser": browser, "faults": not args.no_faults, "seed": args.seed,
          "blackhole_s": args.blackhole_s,
          "churn_probes": args.churn, "extra_faults": extra, "fault_s": args.fault_s,
          "config": {"criteria_file": str(args.criteria or "fixtures/criteria.toml")}}
    try:
        if target is None:
            return _gate_embedded(criteria, args.report_dir, kw, getattr(args, "realtime_resume", None) or "supabase")
        if target == "containers":
            return _gate_containers(args.container_profile, criteria, args.report_dir, kw)
        result = run_gate(target, criteria, args.report_dir, **kw)
    except (TargetRefused, RunDirError) as e:
        raise UsageError(str(e)) from e
    except TargetUnreachable as e:
        print(f"zora-harness: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE, None
    _print_verdict(result.verdict, result.run_dir)
    return (EXIT_OK if result.verdict.go else EXIT_NO_GO), result


def _faults(args: argparse.Namespace, target: Any) -> list[Any]:
    """The --fault specifications, checked before anything starts."""
    from harness.faults import FaultSpecError, PacketFault, StackFault, parse_fault

    if not 1 <= args.fault_s <= 600:
        raise UsageError(f"--fault-s {args.fault_s:g}: must be from 1 to 600 seconds")
    if args.fault and args.no_faults:
        raise UsageError("--fault adds to the fault phase, which --no-faults leaves out: give one of them")
    out = []
    for text in args.fault:
        try:
            spec = parse_fault(text)
        except FaultSpecError as e:
            raise UsageError(f"--fault {text!r}: {e}") from e
        if isinstance(spec, PacketFault) and target != "containers":
            raise UsageError(f"--fault {text!r}: a packet fault (tc netem) needs --target containers (its link "
                             "container has a network namespace of its own; on the host it would hit everything)")
        if isinstance(spec, StackFault) and target is not None:
            if target == "containers":
                raise UsageError(f"--fault {text!r}: a fault of the stack itself needs --target embedded (the "
                                 "containers target's database is a container: network faults only)")
            raise UsageError(f"--fault {text!r}: a fault of the stack itself needs the embedded target (a Supabase "
                             "given by URL is someone else's server: network faults only)")
        out.append(spec)
    return out


def _gate_embedded(criteria: Any, report_dir: Path, kw: dict[str, Any],
                   realtime_resume: str = "supabase") -> tuple[int, Any]:
    from harness.gate import run_gate
    from stack.migrate import MigrationError
    from stack.postgres import PostgresError
    from stack.server import EmbeddedStack, StackError

    stack = EmbeddedStack.from_fixtures(seed=False, realtime_resume=realtime_resume)
    kw = {**kw, "config": {**kw.get("config", {}), "realtime_resume": realtime_resume}}
    try:
        try:
            stack.start()
        except (PostgresError, StackError, MigrationError) as e:
            print(f"zora-harness: embedded stack failed to start: {e}", file=sys.stderr)
            return EXIT_UNREACHABLE, None
        result = run_gate(stack.target(), criteria, report_dir, stack=stack, **kw)
    finally:
        stack.stop()
    _print_verdict(result.verdict, result.run_dir)
    return (EXIT_OK if result.verdict.go else EXIT_NO_GO), result


def _gate_containers(profile: str, criteria: Any, report_dir: Path, kw: dict[str, Any]) -> tuple[int, Any]:
    from harness.containers import (
        ContainersConfigError,
        ContainersError,
        ContainerStack,
        DockerUnavailable,
        ImageUnavailable,
    )
    from harness.gate import run_gate
    from stack.migrate import MigrationError
    from stack.postgres import PostgresError
    from stack.server import StackError

    def log(line: str) -> None:  # the cleanup promise and what was removed: printed even with --quiet
        print(f"zora-harness: {line}", file=sys.stderr)

    from harness.faults import PacketFault

    cs = ContainerStack(profile=profile, log=log,
                        with_netem=any(isinstance(f, PacketFault) for f in kw.get("extra_faults", ())))
    try:
        try:
            cs.start()
        except ContainersConfigError as e:
            raise UsageError(str(e)) from e
        except DockerUnavailable as e:
            print(f"zora-harness: {e}", file=sys.stderr)
            return EXIT_NO_DOCKER, None
        except ImageUnavailable as e:
            print(f"zora-harness: {e}", file=sys.stderr)
            return EXIT_IMAGE, None
        except (ContainersError, PostgresError, StackError, MigrationError) as e:
            print(f"zora-harness: containers target failed to start: {e}", file=sys.stderr)
            return EXIT_UNREACHABLE, None
        log(f"containers: {profile} ready in {cs.timings.get('ready', 0):.1f} s")
        result = run_gate(cs.target(), criteria, report_dir, stack=cs,
                          config={**kw.pop("config", {}), "containers": _containers_config(cs)}, **kw)
    finally:
        cs.stop()
    _print_verdict(result.verdict, result.run_dir)
    return (EXIT_OK if result.verdict.go else EXIT_NO_GO), result


def _containers_config(cs: Any) -> dict[str, Any]:
    """What config.json records of a containers run: profile, images, the run label (no secrets)."""
    return {"profile": cs.profile, "images": dict(cs.config.images) if cs.config else {}, "run_label": cs.run,
            "timings_s": {k: round(v, 3) for k, v in cs.timings.items()}}


def _analyze(args: argparse.Namespace) -> int:
    from harness.criteria import CriteriaError, parse_criteria
    from harness.judge import judge
    from harness.report import write_report

    run_dir: Path = args.run_dir
    history = run_dir / "history.jsonl"
    if not history.is_file():
        raise UsageError(f"{run_dir}: no history.jsonl there (not a run directory)")
    own = run_dir / "criteria.toml"
    if args.criteria is not None:
        criteria = _load_criteria(args.criteria)
    elif own.is_file():
        try:
            criteria = parse_criteria(own.read_text(encoding="utf-8"), str(own))
        except (CriteriaError, UnicodeDecodeError) as e:
            raise UsageError(f"{own}: the run's own criteria cannot be read ({e}); pass --criteria") from e
    else:
        raise UsageError(f"{run_dir}: the run recorded no criteria.toml; pass --criteria FILE")
    out = args.out or run_dir / "analysis" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    if out.resolve() == run_dir.resolve():
        raise UsageError("--out must not be the run directory: the run's own verdict is never overwritten")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and is not an empty directory")
    judged = judge(history, criteria)
    try:
        write_report(out, judged.analysis, judged.verdict, run_dir=run_dir)
    except OSError as e:
        raise UsageError(f"--out {out}: {e.strerror or e}") from e
    _print_verdict(judged.verdict, out)
    print(f"zora-harness: wrote the analysis to {out}", file=sys.stderr)
    return EXIT_OK if judged.verdict.go else EXIT_NO_GO


def _clean(args: argparse.Namespace) -> int:
    from harness.cleanup import RUN_ID, clean
    from harness.gate import TargetRefused, TargetUnreachable, preflight

    if not RUN_ID.match(args.run_id):
        raise UsageError(f"--run-id {args.run_id!r}: not a run id (zr + 8 hex digits, from the run's config.json)")
    target = _target(args, default="url")
    if target is None or target == "containers":
        raise UsageError("clean needs the Supabase the run wrote to (an embedded stack's or a containers run's rows "
                         "went away with it)")
    try:
        preflight(target)
    except TargetRefused as e:
        raise UsageError(str(e)) from e
    except TargetUnreachable as e:
        print(f"zora-harness: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    from supabase import ClientOptions, create_client

    admin = create_client(target.url, target.service_role_key,
                          ClientOptions(auto_refresh_token=False, persist_session=False))
    report = clean(admin, args.run_id)
    for p in report.problems:
        print(f"  problem: {p}", file=sys.stderr)
    if not report.verified:
        print(f"zora-harness: could not verify what is left of run {args.run_id}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if report.left:
        _out(f"rows of run {args.run_id} remain: " + ", ".join(f"{n} {t}" for t, n in sorted(report.left.items())))
        return EXIT_NO_GO
    _out(f"nothing of run {args.run_id} is left on {target.safe_url}")
    return EXIT_OK


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
    schemas = tuple(x.strip() for x in args.db_schemas.split(","))
    if not schemas or any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,62}", x) for x in schemas):
        raise UsageError(f"--db-schemas {args.db_schemas}: a comma-separated list of schema names")
    # the demo rows go into someone else's database only when asked for
    seed = [FIXTURES / "seed.sql"] if args.seed or not (args.no_seed or args.db_url) else []

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    stack = EmbeddedStack(migrations=migrations, seed=seed, db_url=args.db_url, init_db=args.init_db, port=args.port,
                          jwt_secret=args.jwt_secret or "", realtime_mode=args.realtime_mode,
                          realtime_resume=args.realtime_resume, db_schemas=schemas)
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
    print(f"{'realtime resume':>17}: {stack.realtime_resume}")
    if stack.db_url:
        print(f"{'database':>17}: yours, used as it is (login roles assumed per connection, no password changed)")
    print(f"\n{'ready in':>17}: {stack.timings.get('ready', 0):.2f} s")


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "stack" and args.stack_command == "up":
        return _stack_up(args)
    if args.command == "gate":
        return _gate(args)
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "clean":
        return _clean(args)
    if args.command == "report":
        return _report(args)
    if args.command == "nightly":
        from harness.nightly import nightly

        return nightly(args, _run_gate, _target)
    if args.command == "trend":
        return _trend(args)
    raise UsageError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    from harness.signals import Interrupt, SignalGuard, exit_code

    try:
        with SignalGuard():  # SIGTERM and SIGHUP as Ctrl-C, wherever they land
            return _dispatch(_parser().parse_args(argv))
    except UsageError as e:
        print(f"zora-harness: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupt as e:
        print(f"zora-harness: interrupted ({e.name})", file=sys.stderr)
        return exit_code(e.signum)
    except KeyboardInterrupt:
        print("zora-harness: interrupted (SIGINT)", file=sys.stderr)
        return exit_code(signal.SIGINT)
    except Exception as e:  # a bug: one line, its own exit code; what was recorded stays in the run directory
        print(f"zora-harness: internal error: {type(e).__name__}: {e}"
              + ("" if os.environ.get("ZORA_DEBUG") else " (ZORA_DEBUG=1 shows the traceback)"), file=sys.stderr)
        if os.environ.get("ZORA_DEBUG"):
            traceback.print_exc()
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
