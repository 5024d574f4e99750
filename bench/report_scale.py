"""``zora-harness report`` on a history of a million records: wall time and peak memory.

    .venv/bin/python bench/report_scale.py [--records 1000000] [--keep DIR] [--phases]

Writes a synthetic run directory through the harness's own classes (``Run.create``: config.json,
environment.json, criteria.toml; ``History``: every record one of ``harness.records``), shaped like a
gate run at scale: probes of the three apps and their supabase-js twins, writes of every event group
with their expectations, each delivered to the probes entitled to it, a reset and a black hole on some
devices' networks with the reconnections, rejoins and refetches that follow. Then it runs
``zora-harness report RUN`` in a child process and prints its wall time and peak RSS (the child's own,
from ``wait4``). ``--phases`` also prints where the time goes, in this process: reading (validation),
analysis, verdict, frames, charts, HTML. Goal (issue 13): within 60 s, memory well under 2 GB.

``synthetic_run`` is also what ``tests/harness/test_report_html.py`` renders in Chromium (a small one).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.apps import SPOOFING  # noqa: E402
from harness.criteria import load_criteria  # noqa: E402
from harness.records import (  # noqa: E402
    Broadcast,
    Change,
    Cleanup,
    ClockFacts,
    ConnState,
    Expectation,
    Fault,
    JoinAttempt,
    Op,
    PreflightDone,
    ProbeInfo,
    ProbeSet,
    Refetch,
    RunFinished,
    RunPlan,
    SubInfo,
    System,
)
from harness.run import Run  # noqa: E402
from harness.targets import Target  # noqa: E402

MS = 1_000_000
S = 1_000_000_000
# (group, source, subject, type): the event groups of fixtures/criteria.toml, as the flows write them
Source = Literal["change", "broadcast", "presence"]
EVENTS: tuple[tuple[str, Source, str, str], ...] = (
          ("order_visible", "change", "orders", "INSERT"), ("status_update", "change", "orders", "UPDATE"),
          ("cart_sync", "change", "cart_items", "UPDATE"), ("notification", "change", "notifications", "INSERT"),
          ("realtime", "change", "products", "UPDATE"), ("realtime_message", "broadcast", "announcement", ""))
APPS = (("customer-app", "customer", 3), ("vendor-portal", "vendor", 2), ("admin-dashboard", "admin", 1))


@dataclass(frozen=True)
class Synthetic:
    dir: Path
    records: int


def _probes() -> list[ProbeInfo]:
    out: list[ProbeInfo] = []
    for app, who, n in APPS:
        for i in range(1, n + 1):
            name = f"{who}-{i}/{app.split('-')[0]}"
            subs = (SubInfo(table="orders"), SubInfo(table="cart_items"), SubInfo(table="notifications"),
                    SubInfo(table="products"))
            out.append(ProbeInfo(name=name, app=app, user=f"{who}-{i}", flavour="ours", subs=subs,
                                 topics=("platform-announcements",), via=f"net:{name}"))
            out.append(ProbeInfo(name=f"{name}@js", app=app, user=f"{who}-{i}", flavour="supabase-js", original=name,
                                 subs=subs, topics=("platform-announcements",), via=f"net:{name}"))
    return out


def synthetic_run(root: Path, records: int = 1_000_000, *, seed: int = 7, delay_ms: float = 0.0, leaks: int = 0,
                  faults: bool = True) -> Synthetic:
    """A run directory whose history holds about ``records`` records (see the module's docstring). ``delay_ms``
    adds to every delivery's latency; ``leaks`` deliveries reach a probe not entitled to them (a NO-GO)."""
    rng = random.Random(seed)
    target = Target(kind="url", url="http://127.0.0.1:9", anon_key="anon", service_role_key="service", name="synthetic")
    run = Run.create(target, root, {"rounds": 1, "settle_s": 3.0, "probes": "both", "synthetic": True},
                     load_criteria())
    h = run.history
    probes = _probes()
    phases = ("flows", "resilience") if faults else ("flows",)
    h.append(RunPlan(t=1, phases=phases, seed=seed))
    h.append(ClockFacts(t=2, wall_origin=run.clock.wall_origin))
    h.append(ProbeSet(t=3, probes=tuple(probes)))
    h.append(PreflightDone(t=4, checked=("synthetic",)))
    originals = [p for p in probes if p.original is None]
    per_write = 2 + 2 * 3.2  # invoke + ok + deliveries (about 3.2 probes and their twins)
    writes = max(10, int((records - 40) / per_write))
    gap = max(2 * MS, 60 * S // writes)  # a write every 2 ms, over a minute at least
    t_end = 10 * MS + writes * gap
    # faults on some devices' networks: (start, end, name, probe)
    spans: list[tuple[int, int, str, ProbeInfo]] = []
    if faults:
        for k in range(4):
            start = int(t_end * (0.2 + 0.15 * k))
            victim = originals[k % len(originals)]
            spans.append((start, start + (300 * MS if k % 2 == 0 else 4 * S), "reset" if k % 2 == 0 else "blackhole",
                          victim))
    cut: dict[str, list[tuple[int, int]]] = {}  # probe -> windows it hears nothing live
    for start, end, _, victim in spans:
        for p in (victim.name, f"{victim.name}@js"):
            cut.setdefault(p, []).append((start, end + 400 * MS))
    missed: dict[tuple[str, int], list[tuple[str, str]]] = {}  # (probe, fault index) -> (table, row) it refetches
    outage = [(s, e) for ws in cut.values() for s, e in ws]
    leaked = 0
    for i in range(writes):
        t = 10 * MS + i * gap
        group, source, subject, type_ = EVENTS[i % len(EVENTS)]
        if source == "broadcast" and any(s <= t <= e for s, e in outage):
            group, source, subject, type_ = EVENTS[1]  # nothing replays a broadcast: none is sent during an outage
        writer = originals[i % len(originals)]
        chosen = rng.sample(originals, k=min(len(originals), 2 + i % 3 + (1 if i % 5 == 0 else 0)))
        deliver_to = tuple(sorted(n for p in chosen for n in (p.name, f"{p.name}@js")))
        row = f"r{i:08d}"
        exp = Expectation(eid=f"{subject}:{type_}:{i:08d}", source=source, subject=subject, type=type_,
                          match={"id": row} if source == "change" else {"n": str(i)}, deliver_to=deliver_to,
                          group=group)
        h.append(Op(t=t, process=writer.name, type="invoke", f="write", op_id=i))
        h.append(Op(t=t + MS, process=writer.name, type="ok", f="write", op_id=i, expect=(exp,)))
        commit = run.clock.wall_origin + t + MS // 2
        for name in deliver_to:
            windows = cut.get(name, ())
            hit = next((k for k, (s, e) in enumerate(windows) if s <= t <= e), None)
            if hit is not None:
                missed.setdefault((name, hit), []).append((subject, row))
                continue
            lat = int((rng.lognormvariate(math.log(15), 0.5) + delay_ms + (1.0 if name.endswith("@js") else 0.0)) * MS)
            if source == "change":
                h.append(Change(t=t + lat, probe=name, channel=f"realtime:{name}:{subject}", table=subject, type=type_,
                                record={"id": row, "status": "pending"}, commit_ns=commit))
            else:
                h.append(Broadcast(t=t + lat, probe=name, channel="realtime:platform-announcements", event=subject,
                                   payload={"n": str(i)}))
        if leaked < leaks and i % max(1, writes // (leaks + 1)) == 0 and source == "change":
            leaked += 1
            outsider = next(p for p in originals if p.name not in deliver_to)
            h.append(Change(t=t + 20 * MS, probe=outsider.name, channel=f"realtime:{outsider.name}:{subject}",
                            table=subject, type=type_, record={"id": row}, commit_ns=commit))
    for k, (start, end, name, victim) in enumerate(spans):
        fid = f"f{k + 1}"
        h.append(Fault(t=start, fault_id=fid, name=name, phase="start", target=victim.via or ""))
        h.append(Fault(t=end, fault_id=fid, name=name, phase="end", target=victim.via or ""))
        for pi in (victim, next(q for q in probes if q.original == victim.name)):
            noticed = start + (2 * MS if name == "reset" else 3 * S)
            h.append(ConnState(t=noticed, probe=pi.name, state="closed" if name == "reset" else "heartbeat_timeout"))
            h.append(ConnState(t=end + 200 * MS, probe=pi.name, state="open"))
            for j, topic in enumerate(pi.topics_joined()):
                back = end + (250 + 10 * j) * MS
                h.append(JoinAttempt(t=back, probe=pi.name, channel=topic, outcome="ok"))
                if j < len(pi.subs):
                    h.append(System(t=back + 5 * MS, probe=pi.name, channel=topic, status="ok",
                                    extension="postgres_changes"))
            gone = missed.get((pi.name, sum(1 for s in spans[:k] if s[3] is victim)), [])
            for table in ("orders", "cart_items", "notifications", "products"):
                h.append(Refetch(t=end + 450 * MS, probe=pi.name, table=table, since_ns=run.clock.wall_origin + start,
                                 rows=tuple({"id": row} for tb, row in gone if tb == table)))
    # the gate's spoofing check: a customer's announcement nobody is entitled to, and nobody received
    spoof = Expectation(eid="spoof:announcement:0", source="broadcast", subject="announcement", type="",
                        match={"id": "spoof0"}, deliver_to=(), group=SPOOFING)
    h.append(Op(t=t_end, process="spoofer", type="invoke", f="spoof", op_id=writes))
    h.append(Op(t=t_end + MS, process="spoofer", type="ok", f="spoof", op_id=writes, expect=(spoof,)))
    h.append(Cleanup(t=t_end + S, verified=True))
    h.append(RunFinished(t=t_end + 2 * S, outcome="completed", settle_s=3.0))
    n = h._seq
    h.close()
    return Synthetic(run.dir, n)


def _phases(run_dir: Path) -> None:
    """Where the time goes, in this process."""
    from harness.checks import analyze
    from harness.criteria import parse_criteria, verdict
    from harness.history import read_history
    from harness.report import write_html

    t0 = time.perf_counter()
    loaded = read_history(run_dir / "history.jsonl")
    t1 = time.perf_counter()
    a = analyze(loaded.records)
    t2 = time.perf_counter()
    v = verdict(a, parse_criteria((run_dir / "criteria.toml").read_text()))
    t3 = time.perf_counter()
    timings = write_html(run_dir, a, v, out=run_dir / "index.phases.html")
    t4 = time.perf_counter()
    print(f"  read + validate {t1 - t0:6.1f} s   ({len(loaded.records):,} records)")
    print(f"  analyze         {t2 - t1:6.1f} s")
    print(f"  verdict         {t3 - t2:6.1f} s")
    for name, secs in timings.items():
        print(f"  {name:<15} {secs:6.1f} s")
    print(f"  html total      {t4 - t3:6.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="write the run directory under this directory and keep it")
    ap.add_argument("--phases", action="store_true", help="also print where the time goes (in this process)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="zora-report-scale-"))
    try:
        t0 = time.perf_counter()
        syn = synthetic_run(root, args.records)
        size = (syn.dir / "history.jsonl").stat().st_size
        print(f"history: {syn.records:,} records, {size / 1e6:.0f} MB, written in {time.perf_counter() - t0:.1f} s "
              f"({syn.dir})")
        cmd = [str(Path(sys.executable).parent / "zora-harness"), "report", str(syn.dir)]
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - t0
        _out, err = child.communicate()
        code = os.waitstatus_to_exitcode(status)
        rss_mb = usage.ru_maxrss / 1024  # kB on Linux
        html = syn.dir / "index.html"
        print(f"zora-harness report: exit {code}, wall {wall:.1f} s, peak RSS {rss_mb:.0f} MB, index.html "
              f"{html.stat().st_size / 1e6:.1f} MB" if html.exists() else f"zora-harness report: exit {code}: {err}")
        print(f"goal: within 60 s and well under 2 GB: {'met' if code == 0 and wall <= 60 and rss_mb < 2048 else 'NOT met'}")
        if args.phases:
            _phases(syn.dir)
        print(f"(this process's peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
