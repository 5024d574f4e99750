"""The pytest plugin behind ``pytest scenarios`` (registered as the ``zora`` pytest11 entry point).

Options ``--target`` (embedded, the default; url; or a ``supabase status -o env`` file) and
``--report-dir``. Fixtures: ``zora_target`` (session), ``zora_scene`` (per module: its own run
directory, history, world and live probes) and ``zora`` (a helper to run flows and judge them).
Scenario modules assert through the same criteria and checkers as the gate, so pytest and the
gate cannot disagree.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.actors import World
from harness.criteria import DEFAULT_CRITERIA, Criterion, load_criteria
from harness.flows import Scene
from harness.gate import judge, preflight
from harness.history import read_history
from harness.probes import JsProbes
from harness.report import write_report
from harness.run import Run
from harness.targets import Target, from_env, from_env_file

T = TypeVar("T")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("zora", "Zora realtime harness")
    g.addoption("--target", default="embedded", help="embedded (default), url, or a `supabase status -o env` file")
    g.addoption("--report-dir", default="reports", help="where scenario run directories go")
    g.addoption("--criteria", default=str(DEFAULT_CRITERIA), help="criteria file")
    g.addoption("--probes", default="both", choices=("both", "py"),
                help="both: our probes and supabase-js twins under Node (default); py: ours only")


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


@pytest.fixture(scope="session")
def zora_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    kind = request.config.getoption("--target")
    if kind == "embedded":
        from stack.server import EmbeddedStack

        with EmbeddedStack.from_fixtures(seed=False) as s:
            yield Target("embedded", s.api_url, s.anon_key, s.service_role_key, s.superuser_dsn, name="embedded")
        return
    target = from_env() if kind == "url" else from_env_file(Path(kind))
    problems = preflight(target)
    if problems:
        pytest.exit("target not ready: " + "; ".join(problems), returncode=1)
    yield target


@pytest.fixture(scope="session")
def _zora_loop() -> Iterator[_Loop]:
    loop = _Loop()
    yield loop
    loop.close()


class Zora:
    """What a scenario needs: the scene, a way to run flows, and the verdict on what it saw."""

    def __init__(self, scene: Scene, loop: _Loop, criteria: list[Criterion]) -> None:
        self.scene = scene
        self.loop = loop
        self.criteria = {c.id: c for c in criteria}

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run(coro)

    def settle(self, seconds: float = 1.5) -> None:
        time.sleep(seconds)

    def records(self) -> list[dict[str, Any]]:
        return read_history(self.scene.run.dir / "history.jsonl")[0]

    def check(self, *ids: str) -> None:
        """Assert these criteria hold for everything this module's run has seen so far."""
        chosen = [self.criteria[i] for i in ids]
        verdict = judge(self.records(), chosen)
        bad = [f"{c.id}: {r.summary}" for c, r in verdict.lines if r.valid is not True]
        assert not bad, "; ".join(bad)


@pytest.fixture(scope="module")
def zora(request: pytest.FixtureRequest, zora_target: Target, _zora_loop: _Loop) -> Iterator[Zora]:
    report_root = Path(request.config.getoption("--report-dir"))
    criteria = load_criteria(Path(request.config.getoption("--criteria")))
    module = request.module.__name__.rsplit(".", 1)[-1]
    js = request.config.getoption("--probes") == "both"
    if js and (why := JsProbes.unavailable()):
        pytest.fail(f"{why}; or pass --probes py", pytrace=False)
    run = Run.create(zora_target, report_root, {"scenario": module})
    world = World.for_run(run)
    scene = Scene(run, world, js=js)
    try:  # whatever fails from here on, the run's own rows are deleted again
        world.build()
        world.place_server_clock()
        _zora_loop.run(scene.start())
        yield Zora(scene, _zora_loop, criteria)
    finally:
        _zora_loop.run(scene.stop())
        run.history.meta(cleanup=world.cleanup())
        run.history.close()
        records, _ = read_history(run.dir / "history.jsonl")
        write_report(run.dir, records, judge(records, criteria))
