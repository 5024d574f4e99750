"""``zora-harness gate``: preflight, then the flows, then the verdict. Exit code = verdict.

Preflight first: keys work, and (when the database is reachable) the publication holds the
tables the apps subscribe to, RLS is on, the triggers exist. A target that fails preflight gets a
NO-GO naming what is missing, without running anything. Then the run builds its own world,
starts the probes, runs every flow ``rounds`` times, waits a bounded settle window, cleans up its
own rows and judges the history against the criteria.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from harness.actors import World
from harness.checks import Result
from harness.criteria import Criterion, Verdict, evaluate
from harness.flows import FLOWS, Scene
from harness.history import read_history
from harness.progress import Progress
from harness.report import write_report
from harness.run import Run
from harness.targets import Target

__all__ = ["GateResult", "TargetRefused", "TargetUnreachable", "preflight", "run_gate"]

TABLES = ("orders", "order_items", "products", "vendors", "cart_items", "notifications", "reviews", "profiles",
          "conversations", "messages")
TRIGGERS = {"on_new_order": "orders", "on_order_status_change": "orders",
            "on_vendor_application_review": "vendor_applications", "on_low_stock": "products",
            "on_auth_user_created": "users"}


class TargetUnreachable(RuntimeError):
    """The target does not answer; one line for the user, exit 3."""


class TargetRefused(ValueError):
    """The target answers but refuses our keys: a configuration error, exit 2."""


@dataclass
class GateResult:
    verdict: Verdict
    run_dir: Path


def preflight(target: Target) -> list[str]:
    """What is missing or broken, as sentences; an empty list means ready."""
    problems: list[str] = []
    try:
        r = httpx.get(f"{target.url}/auth/v1/settings", headers={"apikey": target.anon_key}, timeout=10)
        if r.status_code in (401, 403):
            raise TargetRefused(f"target {target.url} refuses the anon key (HTTP {r.status_code})")
        r = httpx.get(f"{target.url}/auth/v1/admin/users?per_page=1", timeout=10,
                      headers={"apikey": target.service_role_key,
                               "Authorization": f"Bearer {target.service_role_key}"})
        if r.status_code in (401, 403):
            raise TargetRefused(f"target {target.url} refuses the service-role key (HTTP {r.status_code})")
    except httpx.HTTPError as e:
        raise TargetUnreachable(f"target {target.url} unreachable: {type(e).__name__}") from e
    if not target.db_url:
        return problems
    try:
        with psycopg.connect(target.db_url, connect_timeout=10) as c:
            published = {row[0] for row in c.execute(
                "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
                " and schemaname = 'public'")}
            missing = [t for t in TABLES if t not in published]
            if missing:
                problems.append(f"publication supabase_realtime lacks: {', '.join(missing)}")
            no_rls = [row[0] for row in c.execute(
                "select relname from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r'"
                " and relname = any(%s) and not relrowsecurity", (list(TABLES),))]
            if no_rls:
                problems.append(f"row level security is off on: {', '.join(sorted(no_rls))}")
            present = {row[0] for row in c.execute("select tgname from pg_trigger where not tgisinternal")}
            absent = [f"{t} (on {tbl})" for t, tbl in TRIGGERS.items() if t not in present]
            if absent:
                problems.append(f"triggers missing: {', '.join(absent)}")
    except psycopg.OperationalError as e:
        problems.append(f"database unreachable for preflight: {str(e).strip().splitlines()[0]}")
    return problems


async def _run_flows(run: Run, world: World, rounds: int, settle_s: float, show: Progress, js: bool) -> None:
    show.start()
    # a thread cannot be cancelled: on Ctrl-C the build finishes (bounded by its HTTP timeouts) before the
    # cleanup runs, or users it creates afterwards would be left behind on a shared database
    build = asyncio.ensure_future(asyncio.to_thread(world.build))
    try:
        show.set_stage("building the run's world")
        await asyncio.shield(build)
        show.say(f"world built: {len(world.users)} users, {len(world.vendors)} shops (run {run.run_id})")
        off = await asyncio.to_thread(world.place_server_clock)
        if not run.target.is_loopback:
            show.say(f"server clock offset {off.offset_ns / 1e6:+.1f} ms +/- {off.error_ns / 1e6:.1f} ms")
        scene = Scene(run, world, js=js)
        try:
            show.set_stage("starting probes")
            await scene.start()
            js_note = f" + {len(scene.js_probes.probes)} supabase-js twins" if scene.js_probes else ""
            show.say(f"{len(scene.probes)} probes{js_note} live")
            for r in range(rounds):
                for flow in FLOWS:
                    show.set_stage(f"round {r + 1}/{rounds}: {flow.__name__}")
                    await flow(scene, r)
                show.say(f"round {r + 1}/{rounds} done")
            show.set_stage(f"settling ({settle_s:g} s)")
            await asyncio.sleep(settle_s)  # the settle window: what has not arrived by now is unseen
        finally:
            show.set_stage("stopping probes")
            await scene.stop()
    finally:
        show.set_stage("cleaning up")
        if not build.done():
            with contextlib.suppress(BaseException):
                await build
        notes = await asyncio.to_thread(world.cleanup)
        await show.stop()
        show.say("cleaned up this run's rows" + (f" ({len(notes)} problems: {'; '.join(notes)[:300]})"
                                                 if notes else ""))
        run.history.meta(cleanup=notes)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold Ctrl-C while an event loop is being built (CPython 3.11 leaves a half-built loop behind if
    KeyboardInterrupt lands inside its constructor); a pending Ctrl-C is raised right after."""
    held = threading.current_thread() is threading.main_thread()
    if held:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if held:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def run_gate(target: Target, criteria: list[Criterion], report_root: Path, rounds: int = 3, settle_s: float = 3.0,
             skip_preflight: bool = False, quiet: bool = False, config: dict[str, Any] | None = None,
             js: bool = True) -> GateResult:
    run = Run.create(target, report_root, {"rounds": rounds, "settle_s": settle_s, **(config or {})})
    show = Progress(run.history, quiet=quiet)
    world = World.for_run(run)
    with _sigint_held():
        runner = asyncio.Runner()
        runner.get_loop().set_exception_handler(lambda _loop, ctx: _loop_error(run, ctx))
    try:
        show.say(f"run {run.run_id} -> {run.dir}")
        try:
            problems = [] if skip_preflight else preflight(target)
        except (TargetRefused, TargetUnreachable) as e:
            run.history.meta(error=str(e))
            run.history.close()  # what was written stays: config, environment, the history so far
            raise
        run.history.meta(preflight=problems)
        if problems:
            show.say("preflight: NO-GO: " + "; ".join(problems))
        else:
            if skip_preflight:
                show.say("preflight skipped")
            elif target.db_url:
                show.say("preflight ok: keys work; publication, RLS and triggers in place")
            else:
                show.say("preflight ok: keys work; publication, RLS and triggers not checked (no database URL:"
                         " set SUPABASE_DB_URL); the flows still show what they break as missed events")
            try:
                runner.run(_run_flows(run, world, rounds, settle_s, show, js))
            except Exception as e:  # a crashed run still leaves its history and a verdict
                run.history.meta(error=f"{type(e).__name__}: {e}")
                _clean_up_late(runner, run, world)
        return GateResult(_finish(run, criteria), run.dir)
    except (KeyboardInterrupt, asyncio.CancelledError) as e:
        # Ctrl-C: keep what was seen, judged as such. (A Ctrl-C that lands before the flows' task first runs
        # surfaces as its cancellation.)
        _clean_up_late(runner, run, world)
        if not run.history.closed:
            run.history.meta(error="interrupted before the run finished")
            _finish(run, criteria)
        raise KeyboardInterrupt from e
    finally:
        runner.close()


def _loop_error(run: Run, ctx: dict[str, Any]) -> None:
    """An error asyncio could not hand to anyone (a task failing while the loop shuts down): into the
    history, not a traceback on the user's terminal."""
    if not run.history.closed:
        exc = ctx.get("exception")
        run.history.meta(loop_error=str(ctx.get("message", "")),
                         exception=f"{type(exc).__name__}: {exc}" if exc is not None else None)


def _clean_up_late(runner: asyncio.Runner, run: Run, world: World) -> None:
    """If the flows' own cleanup did not run to its end (interrupted, or the loop went away first), do it now:
    closing the runner waits for a build still running in its thread, so every user it made is known."""
    runner.close()
    if world.users and not world.cleaned and not run.history.closed:
        run.history.meta(cleanup=world.cleanup(), late=True)


def _finish(run: Run, criteria: list[Criterion]) -> Verdict:
    run.history.close()
    records, _ = read_history(run.dir / "history.jsonl")
    verdict = judge(records, criteria)
    write_report(run.dir, records, verdict)
    return verdict


def judge(records: list[dict[str, Any]], criteria: list[Criterion]) -> Verdict:
    """Criteria, plus preflight and run errors recorded in the history (they alone make a NO-GO)."""
    verdict = evaluate(records, criteria)
    for r in records:
        if r.get("kind") != "meta":
            continue
        if r.get("preflight"):
            c = Criterion(id="preflight", title="The target is set up as the apps need it", kind="preflight")
            verdict.lines.insert(0, (c, Result("preflight", False, value=len(r["preflight"]),
                                               summary="; ".join(r["preflight"]))))
            verdict.go = False
        if r.get("error"):
            c = Criterion(id="run", title="The run completed", kind="run")
            verdict.lines.insert(0, (c, Result("run", False, summary=str(r["error"]))))
            verdict.go = False
    return verdict
