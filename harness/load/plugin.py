"""The harness inside Locust: its options, the run's lifecycle on Locust's events, the worker->master reports.

Imported by the locustfiles in ``load/`` (through ``harness.load.users``); importing it registers the listeners
once, however many locustfiles import it. The roles:

* **the only process** (``locust -f load --headless``) or **the master** (``--master``) owns the run: at
  ``init`` it resolves the target from the gate's settings (``--target embedded`` by default: the embedded
  stack started in a sidecar process; ``--target url`` / ``--host`` / ``--env-file`` / ``SUPABASE_*``), runs
  the gate's preflight (unreachable: exit 3, refused keys: exit 2, one line), prints the plan's realtime quotas
  for a hosted target, creates the run directory (``reports/<time>-load/``) and builds the run's world; it
  hands the world to each worker that asks (a custom message); at ``test_stopping`` it stops the publishers,
  lets the subscribers listen on for the settle window and collects every process's final counts; at
  ``quitting`` it cleans the world up, judges (``harness.criteria.verdict`` with ``LoadEvidence``), writes the
  verdict files and sets Locust's ``process_exit_code`` (0 GO, 1 NO-GO).
* **a worker** (``--worker``) asks the master for the world, runs its users, and sends its ``Tally`` with every
  Locust report (``report_to_master`` -> the master's ``worker_report``), and a last one when the master asks.

A worker that goes missing keeps everything it reported until then (its last report is at most Locust's report
interval, 3 s, old); the verdict's run line names it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import locust.runners
from locust import LoadTestShape, events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from harness.load.tally import Merged, Tally
from harness.load.world import LoadWorld
from harness.phoenix import rxstamp
from harness.procs import wait_or_kill

__all__ = ["COORDINATOR", "Coordinator", "mark", "read_mark"]

EXIT_USAGE, EXIT_UNREACHABLE = 2, 3


def mark(run_id: str, pub: str, seq: int, intended_ns: int, group: str) -> str:
    """What a write carries in its row: whose write it is, its number, when it was meant to be sent."""
    return f"zl:{run_id}:{pub}:{seq}:{intended_ns}:{group}"


def read_mark(text: Any, run_id: str) -> tuple[str, int, int, str] | None:
    if not isinstance(text, str) or not text.startswith(f"zl:{run_id}:"):
        return None
    try:
        _, _, pub, seq, intended, group = text.split(":", 5)
        return pub, int(seq), int(intended), group
    except ValueError:
        return None


class WallClock:
    """This process's one clock: perf_counter_ns (what every frame is stamped with) placed on the wall clock once."""

    def __init__(self) -> None:
        self.mono_origin = time.perf_counter_ns()
        self.wall_origin = time.time_ns()

    def wall_of(self, perf_ns: int) -> int:
        return self.wall_origin + perf_ns - self.mono_origin


class Fatal(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Sidecar:
    """``harness.load.sidecar`` as a child: the embedded stack and/or the fault proxy, outside gevent."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "harness.load.sidecar", *args],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the stack's start: bounded by its own timeouts
        try:
            self.env: dict[str, Any] = json.loads(line) if line else {"error": "the sidecar exited"}
        except ValueError:
            self.env = {"error": f"the sidecar said {line.strip()[:200]!r}"}
        if "error" in self.env:
            self.stop()
            raise Fatal(f"{self.env['error']} (see {log})", int(self.env.get("exit", EXIT_UNREACHABLE)))

    def fault(self, spec: str, seconds: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"fault": spec, "seconds": seconds}) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline() or '{"error": "the sidecar exited"}'))

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.terminate()  # a sidecar that missed its stdin closing still cleans up on SIGTERM
                wait_or_kill(self.proc, 30)


class Coordinator:
    def __init__(self) -> None:
        self.env: Environment | None = None
        self.role = "local"
        self.node = "local"
        self.clock = WallClock()
        self.tally = Tally()
        self.merged = Merged()
        self.world: LoadWorld | None = None
        self.world_ready = threading.Event()
        self.stopping = threading.Event()
        self.subscribers: list[Any] = []
        self.sidecar: Sidecar | None = None
        self.started = False
        self.finalized = False
        self.finals: set[str] = set()
        self.missing: list[str] = []
        self.faults: list[dict[str, Any]] = []
        self.owner: Any = None  # harness.load.run.LoadRun on the master / the only process
        self.steady_from = 0  # perf ns from which every user is spawned and settled in (the lag probe counts then)

    def wait_world(self, timeout: float = 60.0) -> LoadWorld:
        if not self.world_ready.wait(timeout) or self.world is None:
            raise RuntimeError(f"no world from the master in {timeout:.0f} s")
        return self.world

    def set_world(self, world: LoadWorld) -> None:
        self.world = world
        self.world_ready.set()

    @property
    def settle_s(self) -> float:
        return self.world.settle_s if self.world is not None else 3.0

    def finish_subscribers(self) -> None:
        for s in list(self.subscribers):
            with contextlib.suppress(Exception):
                s.finish()

    # -- the end of the test, on every process -------------------------------------------------------
    def final_local(self) -> dict[str, Any]:
        """Publishers stop; subscribers listen on for the settle window, then their windows close: the last counts."""
        self.stopping.set()
        time.sleep(self.settle_s)
        self.finish_subscribers()
        return self.tally.take()


COORDINATOR = Coordinator()


def _peek_master_wait() -> None:
    """Locust's worker waits 5 min for an absent master; ``--zora-master-wait S`` shortens it. Read before Locust
    makes the worker (no event comes in between), from the command line or ``ZORA_MASTER_WAIT_S``."""
    argv = sys.argv
    value = os.environ.get("ZORA_MASTER_WAIT_S")
    for i, a in enumerate(argv):
        if a == "--zora-master-wait" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--zora-master-wait="):
            value = a.split("=", 1)[1]
    if value:
        with contextlib.suppress(ValueError):
            locust.runners.CONNECT_RETRY_COUNT = max(1, math.ceil(float(value) / locust.runners.CONNECT_TIMEOUT))


_peek_master_wait()
logging.getLogger("httpx").setLevel(logging.WARNING)  # supabase-py's clients log every request at INFO


@events.init_command_line_parser.add_listener
def _options(parser: Any, **_: Any) -> None:
    parser.add_argument("--target", default="embedded",
                        help="embedded (the embedded stack, started for the run), containers (a backend in Docker "
                             "through testcontainers: --zora-container-profile), url (SUPABASE_URL and keys, or "
                             "--host), or an env file from `supabase status -o env`")
    parser.add_argument("--zora-container-profile", default="embedded-in-container",
                        choices=("embedded-in-container", "supabase-official"),
                        help="with --target containers: the profile (harness/containers/images.toml)")
    parser.add_argument("--env-file", default="", help="SUPABASE_URL / keys / DB URL from this file (implies url)")
    parser.add_argument("--zora-criteria", default="", help="criteria file (default: fixtures/criteria.toml)")
    parser.add_argument("--zora-report-dir", default="reports", help="where the run directory goes")
    parser.add_argument("--zora-rate", type=float, default=1.0, help="writes per second per publisher (open model)")
    parser.add_argument("--zora-publishers", type=int, default=1, help="users of each publisher class")
    parser.add_argument("--zora-customers", type=int, default=3, help="customers in the run's world")
    parser.add_argument("--zora-vendors", type=int, default=2, help="shops in the run's world")
    parser.add_argument("--zora-settle", type=float, default=3.0,
                        help="seconds subscribers listen on after the publishers stop (at least the criteria's "
                             "longest deadline)")
    parser.add_argument("--zora-profile", default="none", choices=("none", "ci", "stress"),
                        help="a load shape: ci (short, small) or stress (ramp, hold, a fault in the middle); "
                             "none: Locust's -u / -r / -t")
    parser.add_argument("--zora-subscribers", type=int, default=200, help="stress profile: subscribers to ramp to")
    parser.add_argument("--zora-hold", type=float, default=60.0, help="stress profile: seconds to hold")
    parser.add_argument("--zora-fault", default="reset", help="stress profile: the fault in the middle (a --fault spec)")
    parser.add_argument("--zora-fault-s", type=float, default=2.0, help="stress profile: how long the fault lasts")
    parser.add_argument("--zora-delivery-delay-ms", type=int, default=0,
                        help="embedded stack only, a negative control: hold every change this long")
    parser.add_argument("--zora-plan", default="pro", choices=("free", "pro", "pro-no-cap", "team"),
                        help="the hosted project's plan, for its realtime quotas")
    parser.add_argument("--i-know-the-quotas", action="store_true", default=False,
                        help="do not warn when the load would exceed the plan's realtime quotas")
    parser.add_argument("--zora-lag-probe", action="store_true", default=False, include_in_web_ui=False,
                        help="measure this process's own added delay once every user is spawned: how late it reads a "
                             "datagram another process sends every 1 ms (benchmarks)")
    parser.add_argument("--zora-raw-samples", default="", include_in_web_ui=False,
                        help="also write every raw latency sample to this directory (tests)")
    parser.add_argument("--zora-master-wait", type=float, default=0.0, include_in_web_ui=False,
                        help="worker: give up on an absent master after this many seconds (Locust's own: 300)")


@events.init.add_listener
def _init(environment: Environment, runner: Any, **_: Any) -> None:
    c = COORDINATOR
    c.env = environment
    if isinstance(runner, WorkerRunner):
        c.role, c.node = "worker", f"w{runner.worker_index}"
        runner.register_message("zora_world", _on_world)
        runner.register_message("zora_final", _on_final, concurrent=True)
        return
    from harness.load.run import LoadRun

    c.role = "master" if isinstance(runner, MasterRunner) else "local"
    try:
        c.owner = LoadRun.prepare(environment, c)
    except Fatal as e:
        print(f"zora load: {e}", file=sys.stderr, flush=True)
        if c.sidecar is not None:
            c.sidecar.stop()
        raise SystemExit(e.code) from None
    if isinstance(runner, MasterRunner):
        runner.register_message("zora_world_request", _on_world_request)
        runner.register_message("zora_final_done", _on_final_done)


def _on_world(environment: Environment, msg: Any, **_: Any) -> None:
    c = COORDINATOR
    world = LoadWorld.from_wire(msg.data)
    opts = environment.parsed_options
    master_host = str(getattr(opts, "master_host", "127.0.0.1"))
    local_stack = world.url.startswith(("http://127.", "http://localhost"))
    if local_stack and master_host not in ("127.0.0.1", "localhost", "::1"):
        print("zora load: the master runs the embedded stack on its own loopback, which a worker on another machine "
              "cannot reach: aim the run at a shared target (--target url / --host) for workers across machines",
              file=sys.stderr, flush=True)
        environment.process_exit_code = EXIT_USAGE
        if environment.runner is not None:
            environment.runner.quit()
        return
    c.set_world(world)


def _on_world_request(environment: Environment, msg: Any, **_: Any) -> None:
    c = COORDINATOR
    if c.world is not None and environment.runner is not None:
        environment.runner.send_message("zora_world", c.world.to_wire(), msg.node_id)


def _on_final(environment: Environment, msg: Any, **_: Any) -> None:
    c = COORDINATOR
    data = c.final_local()
    if environment.runner is not None:
        environment.runner.send_message("zora_final_done", data)


def _on_final_done(environment: Environment, msg: Any, **_: Any) -> None:
    c = COORDINATOR
    c.merged.add(msg.node_id, msg.data, c.clock.wall_of(time.perf_counter_ns()))
    c.finals.add(msg.node_id)


_SENDER = """
import select, socket, sys, time
port = int(sys.argv[1]); out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + 6 * 3600; due = time.perf_counter_ns()
while time.monotonic() < end:
    if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read(1):
        break  # the load process closed the pipe (or died): stop
    now = time.perf_counter_ns()
    if now >= due:
        out.sendto(str(now).encode(), ("127.0.0.1", port))
        due = max(due + 1_000_000, now + 500_000)
    time.sleep(max(0.0, (due - time.perf_counter_ns()) / 1e9))
"""


def _lag_probe(c: Coordinator) -> None:
    """How late this process reads a datagram that has arrived, and how late its stamp is: another process (plain
    Python, no gevent) sends one every 1 ms stamped with perf_counter_ns (CLOCK_MONOTONIC, one clock for every
    process here) and a greenlet here reads it as the subscribers read their sockets. ``loop_lag``: read time -
    sent, the delay a frame waits for its greenlet; ``stamp_lag``: the kernel's receive stamp - sent, what a
    kernel-stamped frame's stamp adds (harness.phoenix.rxstamp; the read time where the kernel gives none).
    Bounded: it ends with the run (and the sender with the pipe to it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stamping = rxstamp.enable(sock)
    sender = subprocess.Popen([sys.executable, "-c", _SENDER, str(sock.getsockname()[1])], stdin=subprocess.PIPE)
    try:
        sock.settimeout(0.5)
        while not c.stopping.is_set():
            try:
                data, kt = rxstamp.recv_stamped(sock, 64) if stamping else (sock.recv(64), None)
            except TimeoutError:
                continue
            now = time.perf_counter_ns()
            if c.steady_from and now >= c.steady_from:
                with contextlib.suppress(ValueError):
                    sent = int(data)
                    c.tally.book.record_ns("*", "loop_lag", max(1000, now - sent))
                    c.tally.book.record_ns("*", "stamp_lag", max(1000, (now if kt is None else kt) - sent))
    finally:
        with contextlib.suppress(OSError):
            assert sender.stdin is not None
            sender.stdin.close()
        wait_or_kill(sender, 5)
        sock.close()


def _sample_memory(c: Coordinator) -> None:
    """A local run's memory every 3 s (a worker's comes with its reports), until the run stops; bounded."""
    from harness.load.tally import RSS_POINTS, process_figures

    for _ in range(RSS_POINTS):
        if c.stopping.wait(3.0):
            return
        c.merged.sample("local", process_figures())


@events.test_start.add_listener
def _test_start(environment: Environment, **_: Any) -> None:
    c = COORDINATOR
    c.started = True
    c.stopping.clear()
    if c.role == "local":  # the first of its process figures (a worker's come with its reports)
        from harness.load.tally import process_figures

        c.merged.add("local", {"proc": process_figures()}, c.clock.wall_of(time.perf_counter_ns()))
        threading.Thread(target=_sample_memory, args=(c,), daemon=True).start()
    if c.role != "master" and getattr(environment.parsed_options, "zora_lag_probe", False):
        threading.Thread(target=_lag_probe, args=(c,), daemon=True).start()
    if c.role == "worker" and c.world is None and environment.runner is not None:
        environment.runner.send_message("zora_world_request", {})


@events.spawning_complete.add_listener
def _spawned(user_count: int, **_: Any) -> None:
    """Every user is running: keep the garbage collector off what is built by now (as ``probes.quiet_heap`` does for
    the gate: a full collection walks it all again, a stall every frame then waits for); steady a second later."""
    c = COORDINATOR
    if c.role != "master":
        gc.collect()
        gc.freeze()
        c.steady_from = time.perf_counter_ns() + 1_000_000_000


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    c = COORDINATOR
    if c.world is not None:
        data["zora"] = c.tally.take()


@events.worker_report.add_listener
def _worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    c = COORDINATOR
    if "zora" in data:
        c.merged.add(client_id, data["zora"], c.clock.wall_of(time.perf_counter_ns()))


@events.test_stopping.add_listener
def _test_stopping(environment: Environment, **_: Any) -> None:
    c = COORDINATOR
    if c.role == "worker" or c.finalized or not c.started or c.owner is None:
        return
    c.finalized = True
    runner = environment.runner
    if c.role == "local":
        c.merged.add("local", c.final_local(), c.clock.wall_of(time.perf_counter_ns()))
        return
    assert isinstance(runner, MasterRunner)
    alive = {w.id for w in runner.clients.all if w.state != locust.runners.STATE_MISSING}
    runner.send_message("zora_final", {})
    end = time.monotonic() + c.settle_s + 20
    while not alive <= c.finals and time.monotonic() < end:
        time.sleep(0.2)
    known = set(c.merged.reports) | {w.id for w in runner.clients.all}
    c.missing = sorted(known - c.finals)


@events.quitting.add_listener
def _quitting(environment: Environment, **_: Any) -> None:
    """Judge and clean up. Locust fires ``quitting`` before it stops the runner, so a run ended by Ctrl-C (the way a
    web UI session or a headless run without ``-t`` ends) is stopped here first, as ``-t`` stops it: the publishers
    stop, the subscribers listen on for the settle window and report, and only then is the stack let go."""
    c = COORDINATOR
    try:
        runner = environment.runner
        if (c.owner is not None and c.role != "worker" and c.started and not c.finalized and runner is not None
                and runner.state in (locust.runners.STATE_SPAWNING, locust.runners.STATE_RUNNING)):
            runner.stop()
        if c.owner is not None and c.role != "worker":
            code = c.owner.conclude(environment)
            if code is not None:
                environment.process_exit_code = code
    finally:
        if c.sidecar is not None:
            c.sidecar.stop()


class ZoraShape(LoadTestShape):
    """Base of the profiles: publishers and subscribers by class, from the options (``--zora-profile``)."""

    abstract = True

    def classes(self, kind: str) -> list[Any]:
        from harness.load.users import PublisherUser, SubscriberUser

        base = PublisherUser if kind == "publish" else SubscriberUser
        return [u for u in (self.runner.user_classes if self.runner else []) if issubclass(u, base)]
