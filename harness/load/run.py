"""One load run on the master (or the only process): its target, run directory, world, and at the end its verdict.

The run directory is a gate run's: ``history.jsonl`` holds the run's own facts (plan, preflight, what it
created, clock, faults, errors, cleanup, finish: no record per write or delivery), and ``results.json``,
``verdict.md`` and ``junit.xml`` are written by the gate's own ``harness.report.write_report`` from the gate's
own verdict (``criteria.verdict``), the criteria judged on ``LoadEvidence``. Beside them ``load.json`` keeps the
load's own figures: every histogram (HdrHistogram's encoding), the completeness counts per group and app,
joins and reconnects, and what Locust's built-in statistics said for the same deliveries (rounded).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.actors import World
from harness.checks import LABELS, analyze
from harness.clock import Offset
from harness.criteria import DEFAULT_CRITERIA, NOT_JUDGED, CriteriaError, CriteriaSet, load_criteria, verdict
from harness.history import read_history
from harness.load import quotas
from harness.load.hdr import figures
from harness.load.judging import LoadEvidence
from harness.load.plugin import EXIT_UNREACHABLE, EXIT_USAGE, Coordinator, Fatal, Sidecar
from harness.load.world import LoadWorld, build_world
from harness.records import Cleanup, ClockFacts, Fault, Note, Op, PreflightDone, RunError, RunFinished, RunPlan, Stage
from harness.report import headline, write_report
from harness.run import Run, RunDirError
from harness.targets import Target, TargetError, from_env, redact

__all__ = ["LoadRun"]


def _out(line: str) -> None:
    print(line, flush=True)


def _target(opts: Any, c: Coordinator, report_root: Path) -> tuple[Target, str]:
    """The target and the realtime websocket subscribers open (through the fault proxy for the stress profile)."""
    kind = str(opts.target or "embedded")
    host = str(getattr(opts, "host", "") or "")
    env_file = Path(opts.env_file) if opts.env_file else None
    if kind not in ("embedded", "url", "containers"):
        if not Path(kind).is_file():
            raise Fatal(f"--target {kind!r}: not embedded, containers, url, or a readable env file", EXIT_USAGE)
        env_file = Path(kind)
    stress = opts.zora_profile == "stress"
    if kind == "embedded" and not host and env_file is None:
        report_root.mkdir(parents=True, exist_ok=True)
        args = ["--embedded", "--delivery-delay-ms", str(int(opts.zora_delivery_delay_ms))]
        c.sidecar = Sidecar(args + (["--proxy", "embedded"] if stress else []), report_root / "load-sidecar.log")
        e = c.sidecar.env
        t = Target("embedded", e["url"], e["anon_key"], e["service_role_key"], e.get("db_url"), name="embedded")
    elif kind == "containers" and not host and env_file is None:
        if opts.zora_delivery_delay_ms:
            raise Fatal("--zora-delivery-delay-ms is a fault of the embedded stack: it needs --target embedded",
                        EXIT_USAGE)
        report_root.mkdir(parents=True, exist_ok=True)
        args = ["--containers", str(opts.zora_container_profile)]
        c.sidecar = Sidecar(args + (["--proxy", "embedded"] if stress else []), report_root / "load-sidecar.log")
        e = c.sidecar.env
        t = Target("containers", e["url"], e["anon_key"], e["service_role_key"], e.get("db_url"),
                   name=str(e.get("name", "containers")))
    else:
        if opts.zora_delivery_delay_ms:
            raise Fatal("--zora-delivery-delay-ms is a fault of the embedded stack: it needs --target embedded",
                        EXIT_USAGE)
        try:
            t = from_env(url=host or None, env_file=env_file)
        except TargetError as e:
            raise Fatal(f"{e} (--host, --env-file, or SUPABASE_URL / SUPABASE_ANON_KEY / SUPABASE_SERVICE_ROLE_KEY)",
                        EXIT_USAGE) from e
        if stress:
            if not t.url.startswith("http://"):
                raise Fatal("the stress profile's fault goes through the fault proxy, which needs a plain-http "
                            "target (the embedded stack, supabase start)", EXIT_USAGE)
            report_root.mkdir(parents=True, exist_ok=True)
            c.sidecar = Sidecar(["--proxy", t.url], report_root / "load-sidecar.log")
    proxy = c.sidecar.env.get("proxy_url") if c.sidecar is not None else None
    realtime = f"{proxy}/realtime/v1/websocket" if proxy else t.realtime_url
    return t, realtime


def _estimate(env: Any, opts: Any) -> quotas.Load:
    from harness.load.users import PublisherUser, SubscriberUser

    classes = list(env.user_classes)
    pubs = [u for u in classes if issubclass(u, PublisherUser)]
    subs = [u for u in classes if issubclass(u, SubscriberUser)]
    users = int(opts.num_users or 1) if opts.zora_profile == "none" else int(opts.zora_subscribers) + len(pubs)
    n_pub = min(users, len(pubs) * int(opts.zora_publishers))
    n_sub = max(0, users - n_pub)
    channels = max((len(u.screens) * 3 + 2 for u in subs), default=0)
    writes = n_pub * float(opts.zora_rate)
    return quotas.Load(clients=n_sub, messages_per_s=writes * max(1, n_sub // 2),
                       joins_per_s=float(opts.spawn_rate or 1) * channels, channels_per_client=channels)


@dataclass
class LoadRun:
    run: Run
    world: World
    load_world: LoadWorld
    criteria: CriteriaSet
    c: Coordinator
    offset: Offset = field(default_factory=Offset)

    @classmethod
    def prepare(cls, env: Any, c: Coordinator) -> LoadRun:
        from harness.gate import TargetRefused, TargetUnreachable, preflight
        from harness.load.profiles import PROFILES
        from harness.load.users import PublisherUser

        opts = env.parsed_options
        try:
            criteria = load_criteria(Path(opts.zora_criteria) if opts.zora_criteria else DEFAULT_CRITERIA)
        except CriteriaError as e:
            raise Fatal(str(e), EXIT_USAGE) from e
        floor = criteria.settle_floor_s()
        if not floor <= opts.zora_settle <= 60:
            raise Fatal(f"--zora-settle {opts.zora_settle:g}: must be from {floor:g} s (the criteria's longest "
                        "deadline) to 60 s", EXIT_USAGE)
        if opts.zora_rate <= 0 or opts.zora_rate > 1000:
            raise Fatal("--zora-rate must be above 0 and at most 1000 writes/s", EXIT_USAGE)
        if not 1 <= opts.zora_customers <= 1000 or not 1 <= opts.zora_vendors <= 1000:
            raise Fatal("--zora-customers and --zora-vendors must be from 1 to 1000", EXIT_USAGE)
        root = Path(opts.zora_report_dir)
        if root.exists() and not root.is_dir():
            raise Fatal(f"--zora-report-dir {root}: exists and is not a directory", EXIT_USAGE)
        target, realtime = _target(opts, c, root)
        if not target.is_loopback:
            _out(f"zora load: {target.safe_url} is a hosted project: {quotas.describe(opts.zora_plan)}")
            over = quotas.over(opts.zora_plan, _estimate(env, opts))
            if over and not opts.i_know_the_quotas:
                _out("zora load: WARNING: the configured load would exceed them: " + "; ".join(over)
                     + ". Clients over a quota are disconnected, which would read as the app's failure; load-test a "
                       "local or self-hosted stack, raise the quotas, or pass --i-know-the-quotas")
        try:
            pf = preflight(target)
        except TargetUnreachable as e:
            raise Fatal(str(e), EXIT_UNREACHABLE) from e
        except TargetRefused as e:
            raise Fatal(str(e), EXIT_USAGE) from e
        config = {"load": {k: getattr(opts, k) for k in vars(opts) if k.startswith("zora_")},
                  "users": getattr(opts, "num_users", None), "spawn_rate": getattr(opts, "spawn_rate", None),
                  "run_time": getattr(opts, "run_time", None), "mode": c.role,
                  "criteria_file": str(opts.zora_criteria or "fixtures/criteria.toml")}
        try:
            run = Run.create(target, root, config, criteria, label="load")
        except RunDirError as e:
            raise Fatal(str(e), EXIT_USAGE) from e
        h = run.history
        stress = opts.zora_profile == "stress"
        h.append(RunPlan(phases=("flows", "resilience") if stress else ("flows",),
                         faults=(opts.zora_fault,) if stress else ()))
        h.append(PreflightDone(problems=tuple(pf.problems), checked=tuple(pf.checked), unchecked=tuple(pf.unchecked)))
        if pf.problems:
            raise Fatal("preflight: " + "; ".join(pf.problems) + f" ({run.dir})", 1)
        h.append(Stage(name="building the run's world"))
        world = World.for_run(run)
        lw = build_world(run, world, opts.zora_customers, opts.zora_vendors, realtime)
        offset = Offset() if target.is_loopback else world.clock_offset()
        h.append(ClockFacts(wall_origin=run.clock.wall_origin, offset_ns=offset.offset_ns, error_ns=offset.error_ns,
                            estimated=not target.is_loopback))
        lw.settle_s = float(opts.zora_settle)
        lw.offset_ns = offset.offset_ns
        lw.rate = float(opts.zora_rate)
        lw.raw_samples = str(opts.zora_raw_samples or "")
        if lw.raw_samples:
            Path(lw.raw_samples).mkdir(parents=True, exist_ok=True)
        lw.deadlines_ms = {cr.events: cr.max_ms for cr in criteria if cr.kind == "latency" and cr.events != "*"}
        c.set_world(lw)
        for u in env.user_classes:
            if issubclass(u, PublisherUser):
                u.fixed_count = int(opts.zora_publishers)
        if opts.zora_profile != "none":
            env.shape_class = PROFILES[opts.zora_profile]()
            env.shape_class.runner = env.runner
        h.append(Stage(name="load running"))
        _out(f"zora load: run {run.run_id} -> {run.dir}; target {target.kind} {target.safe_url}; world: "
             f"{len(lw.members)} users, {len(lw.orders)} shops; profile {opts.zora_profile}")
        return cls(run, world, lw, criteria, c, offset)

    def fault(self, spec: str, seconds: float) -> None:
        """The stress profile's fault, through the sidecar's fault proxy; recorded as the gate records faults."""
        sc = self.c.sidecar
        if sc is None:
            return
        got = sc.fault(spec, seconds)
        if "error" in got:
            self.run.history.append(RunError(error=f"fault {spec}: {got['error']}", stage="load running"))
            return
        self.c.faults.append(got)
        wall0 = self.run.clock.wall_origin
        for phase, at in (("start", got["start_ns"]), ("end", got["end_ns"])):
            self.run.history.append(Fault(t=at - wall0, fault_id=str(got["fault_id"]), name=spec.split(":")[0],
                                          phase=phase, target="subscribers' realtime (fault proxy)",  # type: ignore[arg-type]
                                          params={"seconds": seconds}))

    # -- the end -----------------------------------------------------------------------------------------
    def conclude(self, env: Any) -> int | None:
        h = self.run.history
        if h.closed:
            return None
        c = self.c
        for node in c.missing:
            last = c.merged.last_report_ns.get(node)
            when = f"; its counts up to its last report ({(last - self.run.clock.wall_origin) / 1e9:.1f} s into the " \
                   "run) are kept" if last else "; it never reported"
            h.append(RunError(error=f"worker {node} went missing before the end of the run{when}", stage="load running"))
        for s in c.merged.streams.values():
            for i, err in enumerate(s.errors[:3]):
                h.append(Op(process=s.pub, type="fail" if s.failed else "info", f=s.kind, op_id=i + 1, error=err))
        if not c.started:
            h.append(Note(text="the load test was never started (web UI closed before a start)"))
        h.append(Stage(name="cleaning up"))
        try:
            report = self.world.cleanup()
            h.append(Cleanup(problems=tuple(redact(p) for p in report.problems), left=report.left,
                             verified=report.verified))
        except Exception as e:
            h.append(RunError(error=redact(f"cleanup failed: {type(e).__name__}: {e}")[:500], stage="cleaning up"))
        windows = [(int(f["start_ns"]) - 1_000_000_000, int(f["end_ns"]) + 5_000_000_000) for f in c.faults]
        evidence = LoadEvidence(c.merged, settle_ns=int(self.load_world.settle_s * 1e9),
                                guard_ns=int(self.load_world.guard_s * 1e9), error_ms=self.offset.error_ns / 1e6,
                                faults=windows, regimes=frozenset(str(f["name"]).split(":")[0] for f in c.faults))
        figures_ = self._figures(env, evidence)
        h.append(Note(text="load figures", data={k: v for k, v in figures_.items() if k != "histograms"}))
        h.append(RunFinished(outcome="completed" if c.started else "failed", settle_s=self.load_world.settle_s))
        h.close()
        loaded = read_history(self.run.dir / "history.jsonl")
        a = analyze(loaded.records, [(p.line, p.reason) for p in loaded.malformed], loaded.torn_tail)
        v = verdict(a, self.criteria, evidence if c.started else None)
        write_report(self.run.dir, a, v)
        (self.run.dir / "load.json").write_text(json.dumps(figures_, indent=2, default=str))
        self._print(v, figures_)
        return 0 if v.go else 1

    def _figures(self, env: Any, ev: LoadEvidence) -> dict[str, Any]:
        book = self.c.merged.book
        lat: dict[str, Any] = {}
        for metric in ("write_to_deliver", "commit_to_deliver", "loop_lag", "stamp_lag", "reconnect"):
            for g in [*book.groups(metric), "*"]:
                hist = book.get(g, metric)
                if hist.get_total_count():
                    lat[f"{g}|{metric}"] = {"n": hist.get_total_count(), **figures(hist)}
        locust_stats: dict[str, Any] = {}
        stats = env.runner.stats if env.runner is not None else None
        if stats is not None:
            for (name, method), e in stats.entries.items():
                if e.num_requests:
                    locust_stats[f"{method} {name}"] = {
                        "n": e.num_requests, "failures": e.num_failures, "rps": round(e.total_rps, 2),
                        "p50": e.get_response_time_percentile(0.5), "p99": e.get_response_time_percentile(0.99),
                        "max": e.max_response_time}
        watches = self.c.merged.watches.values()
        stamps = {"kernel": sum(w.stamps_kernel for w in watches), "read": sum(w.stamps_read for w in watches)}
        # what the subscribers' own stamps add to each latency (--zora-lag-probe): with every read stamped by the
        # kernel, the stamp's delay after arrival; otherwise how late the process reads what has arrived
        added_from = "stamp_lag" if stamps["kernel"] and not stamps["read"] else "loop_lag"
        streams = self.c.merged.streams.values()
        spans = [(s.sent[0], s.sent[-1], len(s.sent)) for s in streams if len(s.sent) > 1]
        per_s = sum((n - 1) / max(1e-9, (b - a) / 1e9) for a, b, n in spans)
        return {"latency_ms": lat, "completeness": {"expected": ev.tally["expected"], **ev.tally["counts"],
                                                    "per_group": ev.tally["per_group"], "per_app": ev.tally["per_app"],
                                                    "foreign": ev.tally["foreign"],
                                                    "out_of_order": ev.tally["out_of_order"]},
                "writes": {"sent": sum(len(s.sent) for s in streams), "per_s": round(per_s, 2),
                           "failed": sum(s.failed for s in streams),
                           "unknown": sum(s.unknown for s in streams), "publishers": len(self.c.merged.streams)},
                "reliability": ev.reliability_figures(), "locust_stats_ms": locust_stats,
                "stamps": {**stamps, "added_delay": added_from},
                "processes": {k: {"reports": n, **self._proc(k)} for k, n in self.c.merged.reports.items()},
                "missing": self.c.missing,
                "faults": self.c.faults, "histograms": book.encoded()}

    def _proc(self, node: str) -> dict[str, Any]:
        """A load process's CPU share and memory between its first and last report."""
        p = self.c.merged.procs.get(node)
        if not p or "last" not in p:
            return {}
        first, last = p["first"], p["last"]
        wall = max(1e-9, last["wall_s"] - first["wall_s"])
        series = self.c.merged.rss.get(node, [])
        t0 = series[0][0] if series else 0.0
        step = max(1, len(series) // 20)  # about 20 points: enough to tell a plateau from a climb
        return {"cpu_pct": round(100 * (last["cpu_s"] - first["cpu_s"]) / wall, 1),
                "rss_first_mb": round(first["rss_mb"], 1), "rss_last_mb": round(last["rss_mb"], 1),
                "rss_mb_over_time": [[round(t - t0, 1), round(mb, 1)] for t, mb in [*series[::step], *series[-1:]]],
                "seconds": round(wall, 1)}

    def _print(self, v: Any, f: dict[str, Any]) -> None:
        _out(f"{headline(v)}  ({self.run.dir})")
        for ln in v.lines:
            if ln.result.summary != NOT_JUDGED:
                _out(f"  {LABELS[ln.result.valid]:<7} {ln.criterion.id:<18} {ln.result.summary}")
        r = f["reliability"]
        _out(f"  {'subscribers':<26} {r['live']}/{r['subscribers']} live; joins {r['joined']}/{r['joins_attempted']} "
             f"ok, {r['still_joined_at_end']} still joined at the end; {r['reconnects']} reconnects"
             + (f" (p50 {r['reconnect_ms']['p50']:.0f} / max {r['reconnect_ms']['max']:.0f} ms)"
                if r["reconnect_ms"] else ""))
        w = f["writes"]
        _out(f"  {'writes':<26} {w['sent']} by {w['publishers']} publishers ({w['failed']} failed, {w['unknown']} "
             f"unknown); expected deliveries {f['completeness']['expected']}, delivered {f['completeness']['delivered']}")
        for name, s in sorted(f["locust_stats_ms"].items()):
            if name.startswith("WS deliver:") and "~" not in name:
                ours = f["latency_ms"].get(f"{name.removeprefix('WS deliver:')}|write_to_deliver")
                if ours:
                    _out(f"  {'locust vs exact':<26} {name}: Locust's p99 {s['p99']} ms (rounded), HdrHistogram p99 "
                         f"{ours['p99']:.3f} ms over {ours['n']}")
        sys.stdout.flush()
        time.sleep(0)
