"""The pytest plugin behind ``pytest scenarios`` (registered as the ``zora`` pytest11 entry point).

Options: ``--target`` (embedded, the default; containers, a backend in Docker through testcontainers with
``--container-profile``; url, from SUPABASE_URL / SUPABASE_ANON_KEY /
SUPABASE_SERVICE_ROLE_KEY / SUPABASE_DB_URL; or a ``supabase status -o env`` file), ``--report-dir``,
``--criteria``, ``--probes``. Fixtures: ``zora_target`` (session) and ``zora`` (per module: its own run
through the same lifecycle as the gate, ``harness/lifecycle.py``: world, clock, live probes; at the end
cleanup, finish record, verdict files). Scenario modules assert through the gate's own criteria and
checkers, so pytest and the gate cannot disagree.

At the end of the session a terminal summary (as pytest-benchmark prints its table) shows each scenario module's
criteria (those it checked, and the run's own lines) with the measured figure, the limit and the verdict, and
where each module's run directory and its ``index.html`` are.

A target that cannot be used stops the session with one line naming the pytest option to fix
(``pytest.exit``), never a traceback per module. SIGTERM and SIGHUP are handled as Ctrl-C, so pytest
tears the fixtures down and every module's run cleans up its rows.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pytest

from harness.criteria import DEFAULT_CRITERIA, CriteriaError, CriteriaSet, load_criteria, verdict
from harness.history import read_history
from harness.records import Record
from harness.targets import Target

T = TypeVar("T")
_RUNS = pytest.StashKey[list[tuple[str, Any, set[str]]]]()  # (module, its Lifecycle, the criteria it checked)
HOW = ("pass --target url with SUPABASE_URL, SUPABASE_ANON_KEY and SUPABASE_SERVICE_ROLE_KEY set, or --target FILE"
       " (a `supabase status -o env` file)")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("zora", "Zora realtime harness")
    g.addoption("--target", default="embedded",
                help="embedded (default), containers (Docker, through testcontainers), url, or a "
                     "`supabase status -o env` file")
    g.addoption("--container-profile", default="embedded-in-container",
                choices=("embedded-in-container", "supabase-official"),
                help="with --target containers: the profile (harness/containers/images.toml)")
    g.addoption("--report-dir", default="reports", help="where scenario run directories go")
    g.addoption("--criteria", default=str(DEFAULT_CRITERIA), help="criteria file")
    g.addoption("--probes", default="both", choices=("both", "py"),
                help="both: our probes and supabase-js twins under Node (default); py: ours only")


_received: list[int] = []  # the signals that stopped the session (SIGTERM, SIGHUP; Ctrl-C is pytest's own)


def _as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "zora(faults=False, heartbeat_s=25.0, backoff_s=(1, 2, 5, 10), seed=None): "
                                       "a scenario module's run: with network faults (each device behind its fault "
                                       "proxy) and the client policy both probe flavours follow")
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(s) is signal.SIG_DFL:
                signal.signal(s, _as_ctrl_c)


class _Loop:
    """One event loop in a thread for the session: probes stay connected between a module's tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="zora-scenarios", daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _criteria(config: pytest.Config) -> CriteriaSet:
    try:
        return load_criteria(Path(config.getoption("--criteria")))
    except CriteriaError as e:
        pytest.exit(f"zora: {e}; fix --criteria", returncode=2)


@pytest.fixture(scope="session")
def zora_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    from harness.gate import TargetRefused, TargetUnreachable, preflight
    from harness.probes import JsProbes
    from harness.targets import TargetError, from_env

    _criteria(request.config)  # a bad criteria file stops the session before anything starts
    if request.config.getoption("--probes") == "both" and (why := JsProbes.unavailable()):
        pytest.exit(f"zora: {why}; or pass --probes py", returncode=2)
    kind = request.config.getoption("--target")
    if kind == "embedded":
        from stack.migrate import MigrationError
        from stack.postgres import PostgresError
        from stack.server import EmbeddedStack, StackError

        s = EmbeddedStack.from_fixtures(seed=False)
        try:
            try:
                s.start()
            except (PostgresError, StackError, MigrationError) as e:
                pytest.exit(f"zora: the embedded stack failed to start: {e}", returncode=3)
            yield s.target()
        finally:
            s.stop()
        return
    if kind == "containers":
        yield from _containers_target(request.config)
        return
    try:
        if kind == "url":
            target = from_env()
        elif Path(kind).is_file():
            target = from_env(env_file=Path(kind))
        else:
            pytest.exit(f"zora: --target {kind!r} is not embedded, containers, url, or a readable env file; {HOW}",
                        returncode=2)
        pf = preflight(target)
    except (TargetError, TargetRefused) as e:
        pytest.exit(f"zora: {e}; {HOW}", returncode=2)
    except TargetUnreachable as e:
        pytest.exit(f"zora: {e}; check the URL given to --target", returncode=3)
    if pf.problems:
        pytest.exit("zora: target not ready: " + "; ".join(pf.problems), returncode=1)
    yield target


def _containers_target(config: pytest.Config) -> Iterator[Target]:
    from harness.containers import (
        ContainersConfigError,
        ContainersError,
        ContainerStack,
        DockerUnavailable,
        ImageUnavailable,
    )
    from stack.migrate import MigrationError
    from stack.postgres import PostgresError
    from stack.server import StackError

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    cs = ContainerStack(profile=config.getoption("--container-profile"),
                        log=lambda line: reporter.write_line(f"zora: {line}") if reporter else None)
    try:
        try:
            cs.start()
        except ContainersConfigError as e:
            pytest.exit(f"zora: {e}; fix --container-profile", returncode=2)
        except DockerUnavailable as e:
            pytest.exit(f"zora: {e}", returncode=5)
        except ImageUnavailable as e:
            pytest.exit(f"zora: {e}", returncode=6)
        except (ContainersError, PostgresError, StackError, MigrationError) as e:
            pytest.exit(f"zora: the containers target failed to start: {e}", returncode=3)
        yield cs.target()
    finally:
        cs.stop()


@pytest.fixture(scope="session")
def _zora_loop() -> Iterator[_Loop]:
    loop = _Loop()
    yield loop
    loop.close()


class Zora:
    """What a scenario needs: the scene, a way to run flows, and the verdict on what it saw so far."""

    def __init__(self, lifecycle: Any, loop: _Loop) -> None:
        self.lifecycle = lifecycle
        self.scene = lifecycle.scene
        self.loop = loop
        self.criteria = {c.id: c for c in lifecycle.criteria}
        self.checked: set[str] = set()  # the criteria this module asserted: its rows in the terminal summary

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run(coro)

    def settle(self, seconds: float = 1.5) -> None:
        time.sleep(seconds)

    def records(self) -> list[Record]:
        return read_history(self.scene.run.dir / "history.jsonl").records

    def check(self, *ids: str) -> None:
        """Assert these criteria hold for everything this module's run has seen so far."""
        from harness.checks import analyze

        chosen = [self.criteria[i] for i in ids]
        self.checked.update(ids)
        v = verdict(analyze(self.records()), chosen)
        bad = [f"{ln.criterion.id}: {ln.result.summary}" for ln in v.lines
               if ln.criterion.id in ids and ln.result.valid is not True]
        assert not bad, "; ".join(bad)


def _browser(spec: Any) -> Any:
    """The module's browser probes (``@pytest.mark.zora(browser={"tabs": 2, ...})``): a ``BrowserPlan``. Never
    skipped: without Chromium the module fails and names the fix."""
    if not spec:
        return None
    from harness.browser import browser_unavailable
    from harness.flows import BrowserPlan

    why = browser_unavailable()
    if why:
        pytest.fail(why)
    return BrowserPlan(**spec)


@pytest.fixture(scope="module")
def zora(request: pytest.FixtureRequest, zora_target: Target, _zora_loop: _Loop) -> Iterator[Zora]:
    from harness.lifecycle import Lifecycle
    from harness.network import DeviceNetwork, NetworkError
    from harness.phoenix import ReconnectPolicy

    module = request.module.__name__.rsplit(".", 1)[-1]
    marker = request.node.get_closest_marker("zora")
    opts = dict(marker.kwargs) if marker else {}
    faults = bool(opts.get("faults", False))
    if faults:
        try:
            DeviceNetwork(zora_target, None)  # type: ignore[arg-type]
        except NetworkError as e:
            pytest.skip(str(e))
    policy = ReconnectPolicy(heartbeat_s=float(opts.get("heartbeat_s", 25.0)),
                             backoff_s=tuple(float(b) for b in opts.get("backoff_s", (1.0, 2.0, 5.0, 10.0))))
    lc = Lifecycle(zora_target, _criteria(request.config), Path(request.config.getoption("--report-dir")),
                   config={"scenario": module}, js=request.config.getoption("--probes") == "both", quiet=True,
                   phases=("flows", "resilience", "offline") if faults else ("flows",), seed=opts.get("seed"),
                   policy=policy, browser=_browser(opts.get("browser")))
    failure: BaseException | None = None
    checked: set[str] = set()
    request.config.stash.setdefault(_RUNS, []).append((module, lc, checked))
    try:  # whatever fails from here on, the run's own rows are deleted again and its verdict written
        _zora_loop.run(lc.open())
        z = Zora(lc, _zora_loop)
        z.checked = checked
        yield z
    except BaseException as e:
        failure = e
        raise
    finally:
        if failure is None and (_received or getattr(request.session, "exitstatus", None) == pytest.ExitCode.INTERRUPTED):
            from harness.signals import Interrupt

            failure = Interrupt(_received[-1] if _received else signal.SIGINT)  # the session was interrupted
        try:
            _zora_loop.run(lc.close())
        finally:
            lc.end(failure)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """One table per scenario module: its criteria, measured, limit, verdict; and where its report is."""
    from harness.report.text import terminal_table

    runs = config.stash.get(_RUNS, [])
    if not runs:
        return
    tr = terminalreporter
    tr.section("zora: criteria per scenario module")
    for module, lc, checked in runs:
        v = lc.verdict
        where = lc.run.dir / "index.html"
        if v is None:
            tr.write_line(f"{module}: no verdict (the run did not end): {lc.run.dir}")
            continue
        mine = [ln for ln in v.lines if ln.criterion.id in checked or ln.criterion.kind == "run"]
        ok = all(ln.result.valid is True for ln in mine)
        tr.write_line(f"{module}: {'pass' if ok else 'FAIL'} ({len(checked)} criteria checked)  {where}",
                      green=ok, red=not ok, bold=True)
        for row in terminal_table(v, checked):
            tr.write_line(f"    {row}")
    tr.write_line(f"zora: {len(runs)} run directories, each with its index.html, under "
                  f"{Path(config.getoption('--report-dir')).resolve()}")
