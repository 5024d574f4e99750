"""The one run lifecycle, used by the gate and the pytest plugin (and next by ``load/`` and ``nightly``):

    build the world -> clock offset -> probes live -> flows -> settle -> stop probes -> cleanup
    -> finish record -> judge -> report

Whatever happens on the way, ``end`` does the same last steps: it records what stopped the run
(a signal, a target failure, an internal error), deletes the run's rows by its tag and checks that
none is left, writes the finish record, and judges the history into the run directory. So a run
that was interrupted, or failed halfway, still leaves its history and a NO-GO report, and nothing
of it on a shared database. The clock facts have one owner: ``open`` records them once the server's
offset is known (zero on this machine).

Failures of the target (it refuses a write, a probe cannot subscribe, the network drops) are what
the gate exists to find: they are recorded and the verdict is NO-GO. Anything else is a bug of the
harness: recorded too, the report written, and re-raised so the command exits "internal error".
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

import httpx
from postgrest.exceptions import APIError
from supabase_auth.errors import AuthError

from harness.actors import World
from harness.apps import DECLARATION, Declaration
from harness.clock import Offset
from harness.criteria import CriteriaSet, Verdict
from harness.faults import FaultSpec, format_fault
from harness.flows import BrowserPlan, Scene
from harness.judge import judge
from harness.network import DeviceNetwork
from harness.phoenix import SUPABASE_JS_POLICY, ReconnectPolicy
from harness.probes import ProbeFailure
from harness.progress import Progress
from harness.records import Cleanup, ClockFacts, Interrupted, LoopError, RunError, RunFinished, RunPlan, Stage
from harness.report import write_report
from harness.run import Run
from harness.signals import Interrupt, SignalGuard, signal_name
from harness.targets import Target, redact

__all__ = ["TARGET_FAILURES", "Flow", "Lifecycle"]

Flow = Callable[[Scene, int], Awaitable[None]]
# what a target (not the harness) does wrong: recorded, and the verdict is NO-GO
TARGET_FAILURES: tuple[type[BaseException], ...] = (APIError, AuthError, httpx.HTTPError, ProbeFailure,
                                                    ConnectionError, TimeoutError, OSError)


class Lifecycle:
    def __init__(self, target: Target, criteria: CriteriaSet, report_root: Path, *,
                 config: dict[str, Any] | None = None, js: bool = True, declaration: Declaration = DECLARATION,
                 quiet: bool = False, stream: TextIO | None = None, phases: tuple[str, ...] = ("flows",),
                 seed: int | None = None, policy: ReconnectPolicy = SUPABASE_JS_POLICY,
                 extra_faults: Sequence[FaultSpec] = (), fault_s: float = 5.0, stack: Any = None,
                 browser: BrowserPlan | None = None) -> None:
        if browser is not None and "browser" not in phases:
            phases = (*phases, "browser")  # the browser probes' criteria are judged: the plan says so
        self.browser = browser
        self.run = Run.create(target, report_root, {**(config or {}), "probes": ("both" if js else "py")
                                                    + ("+browser" if browser else ""),
                                                    "browser_tabs": browser.tabs if browser else 0,
                                                    "phases": list(phases), "seed": seed}, criteria)
        self.extra_faults = tuple(extra_faults)  # --fault: more faults for the resilience phase
        self.fault_s = fault_s  # how long each of them lasts (network faults)
        self.stack = stack  # the embedded stack, for stack faults (None for a remote target)
        self.run.history.append(RunPlan(phases=phases, seed=seed, faults=tuple(format_fault(f) for f in extra_faults)))
        self.criteria = criteria
        self.js = js
        self.declaration = declaration
        self.show = Progress(self.run.history, quiet=quiet, stream=stream)
        self.world = World.for_run(self.run)
        self.scene: Scene | None = None
        self.phases = phases
        self.seed = seed
        self.policy = policy
        # each device's fault proxy, when the plan injects network faults (resilience, offline)
        self.network = DeviceNetwork(target, self.run.history) if {"resilience", "offline"} & set(phases) else None
        self.guard = SignalGuard()
        self._round = 0  # rounds of flows run so far: each round's writes differ from every other's
        self.verdict: Verdict | None = None
        self.internal: BaseException | None = None  # an error of the harness itself, re-raised by end()
        self._build: asyncio.Future[None] | None = None
        self._build_thread_started = False
        self._settle_s = 0.0

    # -- stages ------------------------------------------------------------------------------------
    def stage(self, name: str) -> None:
        self.run.history.append(Stage(name=name))
        self.show.set_stage(name)

    async def open(self) -> Scene:
        """Build the run's world, place the server's clock, start the probes."""
        self.show.start()
        self.stage("building the run's world")
        # a thread cannot be cancelled: on a signal the build finishes (bounded by its HTTP timeouts) before
        # the cleanup runs, or users it creates afterwards would be left behind on a shared database
        self._build_thread_started = True
        self._build = asyncio.ensure_future(asyncio.to_thread(self.world.build))
        await asyncio.shield(self._build)
        self.show.say(f"world built: {len(self.world.users)} users, {len(self.world.vendors)} shops "
                      f"(run {self.run.run_id})")
        off = await asyncio.to_thread(self.place_clock)
        self.stage("starting probes")
        self.scene = Scene(self.run, self.world, self.declaration, js=self.js, network=self.network,
                           policy=self.policy, server_offset_ns=off.offset_ns, browser=self.browser)
        await self.scene.start()
        twins = f" + {len(self.scene.js_probes.probes)} supabase-js twins" if self.scene.js_probes else ""
        tabs = f" + {len(self.scene.browser_probes.probes)} browser tabs" if self.scene.browser_probes else ""
        self.show.say(f"{len(self.scene.probes)} probes{twins}{tabs} live")
        return self.scene

    def place_clock(self, estimate: bool | None = None) -> Offset:
        """Record where the server's wall clock stands against ours (the run's one owner of clock facts): zero
        on this machine (one clock), else estimated NTP-style with its error bar. Call after the build."""
        if estimate is None:
            estimate = not self.run.target.is_loopback
        off = self.world.clock_offset() if estimate else Offset()
        self.run.history.append(ClockFacts(wall_origin=self.run.clock.wall_origin, offset_ns=off.offset_ns,
                                           error_ns=off.error_ns, estimated=estimate))
        if estimate:
            self.show.say(f"server clock offset {off.offset_ns / 1e6:+.1f} ms +/- {off.error_ns / 1e6:.1f} ms")
        return off

    async def flows(self, flows: Sequence[Flow], rounds: int, label: str = "") -> None:
        assert self.scene is not None
        for r in range(rounds):
            round_ = self._round
            self._round += 1
            for flow in flows:
                self.stage(f"{label}round {r + 1}/{rounds}: {getattr(flow, '__name__', 'flow')}")
                await flow(self.scene, round_)
            self.show.say(f"{label}round {r + 1}/{rounds} done")

    async def settle(self, seconds: float) -> None:
        """The settle window: what has not arrived by its end is unseen."""
        self._settle_s = seconds
        self.stage(f"settling ({seconds:g} s)")
        await asyncio.sleep(seconds)

    async def close(self) -> None:
        """Stop the probes, let a build still running finish, clean up (signals wait for it)."""
        with self.guard.deferred():
            if self.scene is not None:
                self.stage("stopping probes")
                await self.scene.stop()
            if self.network is not None:
                await self.network.stop()
            if self._build is not None and not self._build.done():
                with contextlib.suppress(BaseException):
                    await self._build
            await asyncio.to_thread(self.cleanup)
            await self.show.stop()

    async def main(self, flows: Sequence[Flow], rounds: int, settle_s: float, blackhole_s: float | None = None,
                   churn_probes: int = 100) -> None:
        """The gate's run: open, every flow ``rounds`` times, the fault phases of the plan, settle, close (close
        also after a failure)."""
        from harness.offline import offline
        from harness.resilience import churn, resilience

        try:
            await self.open()
            await self.flows(flows, rounds)
            if "resilience" in self.phases:
                await resilience(self, blackhole_s, settle_s)
            if "offline" in self.phases:
                await offline(self)
            if "resilience" in self.phases and churn_probes:
                await churn(self, churn_probes, settle_s=settle_s)
            await self.settle(settle_s)
        finally:
            await self.close()

    def cleanup(self, late: bool = False) -> None:
        """Delete the run's rows by its tag and record what is left (once; nothing if nothing was built)."""
        if not self._build_thread_started or self.world.cleaned:
            return
        with self.guard.deferred():
            self.stage("cleaning up")
            report = self.world.cleanup()
        self.run.history.append(Cleanup(problems=tuple(redact(p) for p in report.problems), left=report.left,
                                        verified=report.verified, late=late))
        if report.left:
            self.show.say("cleanup LEFT rows of this run on the target: "
                          + ", ".join(f"{n} {t}" for t, n in sorted(report.left.items())))
        else:
            self.show.say("cleaned up this run's rows" + (f" ({len(report.problems)} problems on the way)"
                                                          if report.problems else ""))

    # -- the gate's driver: an event loop in the main thread, signals as Ctrl-C ----------------------
    def __enter__(self) -> Lifecycle:
        self.guard.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        try:
            return self.end(exc)
        finally:
            self.guard.__exit__()

    def drive(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``make()`` on a fresh event loop; a signal cancels it (and ``Interrupt`` is raised afterwards)."""
        with self.guard.deferred():  # a signal must not land inside the loop's constructor (3.11 leaves it half-built)
            runner = asyncio.Runner()
            runner.get_loop().set_exception_handler(self._loop_error)
        try:
            self.guard.pending()  # a signal that came while the loop was built
            runner.run(self.guard.guard(make()))
        except asyncio.CancelledError:
            if self.guard.received is None:
                raise
            raise Interrupt(self.guard.received) from None
        finally:
            runner.close()  # waits for the default executor: a build still in its thread finishes first

    def _loop_error(self, loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        """An error asyncio could not hand to anyone (a task failing while the loop shuts down): into the
        history, not a traceback on the user's terminal."""
        if not self.run.history.closed:
            exc = ctx.get("exception")
            self.run.history.append(LoopError(message=str(ctx.get("message", "")),
                                              exception=f"{type(exc).__name__}: {exc}" if exc is not None else None))

    # -- the end, whatever happened ------------------------------------------------------------------
    def end(self, exc: BaseException | None) -> bool:
        """Record why the run stopped, clean up, finish, judge, report. Returns True when ``exc`` is a
        target failure (judged as NO-GO, not raised further); False to let it propagate. A signal that
        arrives meanwhile lets these last steps finish (what it asks for anyway)."""
        if self.run.history.closed:
            return False
        with self.guard.deferred():
            return self._end(exc)

    def _end(self, exc: BaseException | None) -> bool:
        h = self.run.history
        stage = self.show.stage
        outcome: Literal["completed", "interrupted", "failed"] = "completed"
        swallow = False
        pending = exc is None and self.guard.received is not None  # a signal that waited for the cleanup
        if pending:
            exc = Interrupt(self.guard.received or signal.SIGINT)
        if isinstance(exc, KeyboardInterrupt):
            signum = exc.signum if isinstance(exc, Interrupt) else int(signal.SIGINT)
            h.append(Interrupted(signal=signal_name(signum), stage=stage))
            outcome = "interrupted"
        elif isinstance(exc, asyncio.CancelledError):
            h.append(Interrupted(signal="cancelled", stage=stage))
            outcome = "interrupted"
        elif isinstance(exc, TARGET_FAILURES):
            h.append(RunError(error=redact(f"{type(exc).__name__}: {exc}")[:500], stage=stage))
            outcome, swallow = "failed", True
        elif isinstance(exc, Exception):
            h.append(RunError(error=redact(f"internal error: {type(exc).__name__}: {exc}")[:500], stage=stage,
                              internal=True))
            outcome, self.internal = "failed", exc
        try:
            self.cleanup(late=True)
        except Exception as e:  # cleanup's own failure is recorded; the verdict's cleanup line shows it
            h.append(RunError(error=redact(f"cleanup failed: {type(e).__name__}: {e}")[:500], stage="cleaning up"))
        h.append(RunFinished(outcome=outcome, settle_s=self._settle_s))
        self.finish()
        if pending:
            raise Interrupt(self.guard.received or signal.SIGINT)
        return swallow

    def finish(self) -> Verdict:
        """Close the history, judge it, write the report into the run directory."""
        self.run.history.close()
        judged = judge(self.run.dir / "history.jsonl", self.criteria)
        write_report(self.run.dir, judged.analysis, judged.verdict)
        self.verdict = judged.verdict
        return judged.verdict
