"""How many realtime subscribers `locust -f load` holds, in one process and in two workers, and what it costs.

    .venv/bin/python bench/load_capacity.py [--max 3000] [--hold 15] [--minutes 10] [--samples 10000000]

Every row is a real `locust -f load --headless` run against the embedded stack (started by it, in its sidecar
process): three publishers (a customer placing orders, a vendor moving an order on, an admin editing a product;
``--rate`` writes/s each, open model) and N subscribers holding the apps' subscriptions (6 channels each: the
customer app, the vendor portal, the admin dashboard). Per row, from the run's own ``load.json``:

* delivery p99: write->deliver over every delivery (HdrHistogram, 3 significant digits), from the write's intended
  time; beside it what Locust's built-in statistics said for the same deliveries (its p99, rounded);
* added delay p99: what the subscribers' own stamps add to each latency (``--zora-lag-probe``: another process
  sends a datagram every 1 ms, stamped on the machine's one monotonic clock). The subscribers' reads are stamped
  by the kernel's receive timestamp (harness/phoenix/rxstamp.py), so it is that stamp's delay after the datagram
  was sent; where a read is stamped when it returns (TLS), it is how late the load process reads what has
  arrived. ``late99`` is that lateness in every case: the wait a kernel stamp keeps out of the latency;
* writes/s sustained, completeness (delivered / expected), the load generator's CPU and memory.

The largest N with delivery p99 < 500 ms, added delay p99 <= 1 ms and nothing lost is the capacity; the same with
a master and two workers (``--master`` / ``--worker``). Then the harness's memory per million samples (recording
``--samples`` synthetic samples into a LatencyBook, against keeping them in a list), and a run of ``--minutes``
at a moderate N with the load process's memory at its start and its end (flat, or it grows).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.load.hdr import LatencyBook, figures  # noqa: E402
from harness.load.tally import process_figures  # noqa: E402
from harness.procs import stop_groups  # noqa: E402
from stack.postgres import free_port  # noqa: E402


def _locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(ROOT / "load"), *args]


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    stop_groups(procs, 60)


def run(n: int, workers: int, seconds: float, rate: float, tmp: Path, spawn_rate: int = 100) -> dict[str, Any]:
    """One `locust -f load` run with n subscribers (+3 publishers); its load.json."""
    out = tmp / f"run-{workers}-{n}-{time.monotonic_ns()}"
    common = ["--headless", "--only-summary", "-u", str(n + 3), "-r", str(spawn_rate), "-t", f"{int(seconds)}s",
              "--zora-report-dir", str(out), "--zora-rate", str(rate), "--zora-customers", "20",
              "--zora-vendors", "4", "--zora-lag-probe", "--zora-settle", "3"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if workers == 0:
            procs.append(_spawn(_locust(*common), tmp / "local.log"))
        else:
            port = free_port()
            procs.append(_spawn(_locust("--master", "--master-bind-port", str(port), "--web-port", str(free_port()),
                                        "--expect-workers", str(workers), "--expect-workers-max-wait", "120", *common),
                                tmp / "master.log"))
            procs += [_spawn(_locust("--worker", "--master-port", str(port), "--zora-master-wait", "120"),
                             tmp / f"worker{i}.log") for i in range(workers)]
        procs[0].wait(seconds + 600)
    finally:
        _stop(procs)
    [d] = [p for p in out.iterdir() if p.is_dir()]
    load: dict[str, Any] = json.loads((d / "load.json").read_text())
    load["verdict"] = json.loads((d / "results.json").read_text())["verdict"]
    return load


def row(label: str, n: int, f: dict[str, Any], strict: bool = False) -> tuple[str, bool]:
    """The row's text, and whether it held: delivery p99 < 500 ms, nothing lost, every subscriber live (``strict``:
    and the added delay p99 <= 1 ms)."""
    lat = f["latency_ms"]
    d = lat.get("*|write_to_deliver", {})
    added_from = f.get("stamps", {}).get("added_delay", "loop_lag")
    lag = lat.get(f"*|{added_from}", {})
    late = lat.get("*|loop_lag", {})
    c = f["completeness"]
    loc = [s for k, s in f["locust_stats_ms"].items() if k.startswith("WS deliver:") and "~" not in k]
    locust_p99 = max((s["p99"] for s in loc), default=float("nan"))
    procs = [p for p in f["processes"].values() if p.get("cpu_pct") is not None]
    cpu = " + ".join(f"{p['cpu_pct']:.0f} %" for p in procs) or "n/a"
    rss = " + ".join(f"{p['rss_last_mb']:.0f}" for p in procs) or "n/a"
    ok = d.get("p99", 1e9) < 500 and c["delivered"] == c["expected"] > 0 and f["reliability"]["live"] == n
    quiet = lag.get("p99", 1e9) <= 1.0
    text = (f"  {label:>9} {n:>6} {f['reliability']['live']:>6} | {d.get('p50', float('nan')):>7.1f} "
            f"{d.get('p99', float('nan')):>8.1f} {locust_p99:>8} | {lag.get('p50', float('nan')):>6.3f} "
            f"{lag.get('p99', float('nan')):>6.3f} | {late.get('p99', float('nan')):>6.2f}"
            f" | {f['writes']['per_s']:>6.1f} | {c['delivered']:>7}/{c['expected']:<7}"
            f" | {cpu:>13} | {rss:>9} | {'ok' if ok else 'over'}, added {'<=' if quiet else '>'} 1 ms")
    return text, ok and quiet if strict else ok


HEADER = ("      mode   subs   live | deliver p50      p99 locust99 | added p50    p99 | late99 | wr/s   "
          "| delivered/expected  |  load CPU     | RSS MB    |")


def capacity(label: str, workers: int, sizes: list[int], hold: float, rate: float, tmp: Path) -> tuple[int, int]:
    """The largest N held (delivery p99 < 500 ms, nothing lost), and the largest also with added delay <= 1 ms."""
    best = quiet = 0
    all_quiet = True
    for n in sizes:
        seconds = n / 100 + hold
        f = run(n, workers, seconds, rate, tmp)
        text, ok = row(label if n else "floor", n, f)
        print(text if n else text.split(" | over")[0] + " | (no subscribers: the publishers and the probe alone)",
              flush=True)
        if not n:
            continue
        if not ok:
            break
        best = n
        all_quiet = all_quiet and row(label, n, f, strict=True)[1]
        quiet = n if all_quiet else quiet
    return best, quiet


def memory_per_million(samples: int) -> None:
    rng = random.Random(1)
    values = [rng.randint(1_000_000, 900_000_000) for _ in range(100_000)]  # ns; reused, so only the book grows
    gc.collect()
    before = process_figures()["rss_mb"]
    book = LatencyBook()
    t0 = time.perf_counter()
    for i in range(samples):
        book.record_ns("status_update", "write_to_deliver", values[i % 100_000])
    took = time.perf_counter() - t0
    gc.collect()
    after = process_figures()["rss_mb"]
    h = book.get("status_update", "write_to_deliver")
    f = figures(h)
    print(f"  {samples:,} synthetic samples into one HdrHistogram: RSS {before:.1f} -> {after:.1f} MB "
          f"(+{after - before:.2f} MB, {(after - before) / (samples / 1e6):.3f} MB per million; goal < 50 MB for 10 M); "
          f"{took / samples * 1e6:.2f} us per sample; p99 {f['p99']:.3f} ms over {h.get_total_count():,}")
    del book
    gc.collect()
    base = process_figures()["rss_mb"]
    kept = [float(values[i % 100_000]) for i in range(min(samples, 10_000_000))]
    grown = process_figures()["rss_mb"]
    print(f"  the same samples kept one by one (a list of floats, as a tool that keeps every sample does): "
          f"+{grown - base:.0f} MB for {len(kept):,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--max", type=int, default=3000, help="largest N tried")
    ap.add_argument("--hold", type=float, default=15.0, help="seconds each row holds its subscribers")
    ap.add_argument("--rate", type=float, default=2.0, help="writes/s per publisher (3 publishers)")
    ap.add_argument("--minutes", type=float, default=10.0, help="the long run's length (memory flat?)")
    ap.add_argument("--long-n", type=int, default=500, help="subscribers in the long run")
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: one,two,memory,long")
    args = ap.parse_args()
    skip = set(args.skip.split(",")) - {""}
    sizes = [n for n in (0, 100, 250, 500, 1000, 1500, 2000, 3000, 4000) if n <= args.max]
    print(f"load capacity: `locust -f load` against the embedded stack, 3 publishers x {args.rate:g} writes/s, "
          f"{os.cpu_count()} cores shared by the stack and the load; {args.hold:g} s held per row")
    with tempfile.TemporaryDirectory(prefix="zora-load-capacity-") as t:
        tmp = Path(t)
        print(HEADER, flush=True)
        found: list[tuple[str, tuple[int, int]]] = []
        if "one" not in skip:
            found.append(("one process", capacity("1 process", 0, sizes, args.hold, args.rate, tmp)))
        if "two" not in skip:
            found.append(("a master and two workers", capacity("2 workers", 2, sizes, args.hold, args.rate, tmp)))
        for what, (held, quiet) in found:
            print(f"  {what}: held {held} subscribers with delivery p99 < 500 ms and nothing lost; {quiet} with the "
                  "added delay p99 <= 1 ms as well")
        if "memory" not in skip:
            memory_per_million(args.samples)
        if "long" not in skip:
            f = run(args.long_n, 0, args.minutes * 60, args.rate, tmp, spawn_rate=50)
            text, _ = row("long", args.long_n, f)
            print(f"  a run of {args.minutes:g} minutes, {args.long_n} subscribers:")
            print(HEADER)
            print(text)
            p = next(iter(f["processes"].values()))
            lat = f["latency_ms"].get("*|write_to_deliver", {})
            print(f"  load process RSS {p['rss_first_mb']:.1f} MB at the start, {p['rss_last_mb']:.1f} MB at the end "
                  f"({p['seconds']:.0f} s, {lat.get('n', 0):,} deliveries recorded), CPU {p['cpu_pct']:.0f} %")
            series = p.get("rss_mb_over_time", [])
            if series:
                print("  RSS over the run (s: MB): " + ", ".join(f"{t:.0f}: {mb:.0f}" for t, mb in series))
                spawned = [mb for t, mb in series if t >= 30]  # every user is spawned by then (50/s)
                if spawned:
                    print(f"  after the spawn: {spawned[0]:.1f} MB at 30 s, max {max(spawned):.1f} MB, "
                          f"{spawned[-1]:.1f} MB at the end")


if __name__ == "__main__":
    main()
