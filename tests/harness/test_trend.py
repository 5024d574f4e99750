"""``zora-harness trend``: the --fail-on grammar, baselines per target and machine (never mixed), the exit code
following the newest run of each series, one-line usage errors; and over real gate runs, five healthy ones
exit 0 and one more against a stack that delays delivery is flagged, charted and exits 1."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.criteria import load_criteria
from harness.gate import run_gate
from harness.report.trend import TrendError, parse_threshold, trend
from stack.server import EmbeddedStack
from tests.harness.browser import chromium

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "harness.cli", "trend"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def make_run(root: Path, n: int, p99: float, delivery: float = 100.0, cpus: int = 2, kind: str = "embedded",
             url: str = "http://127.0.0.1:1") -> Path:
    """A run directory as the gate leaves it, with the figures given (hand-written: the grammar's tests)."""
    stamp = f"20261101T{n // 3600:02d}{n // 60 % 60:02d}{n % 60:02d}Z"
    d = root / f"{stamp}-{kind}-{cpus}"
    d.mkdir(parents=True)
    target = {"kind": kind, "url": url}
    crit: list[dict[str, Any]] = [
        {"criterion": "cleanup", "kind": "run", "valid": True, "value": 0, "details": {}},
        {"criterion": "realtime_latency", "kind": "latency", "valid": p99 <= 500, "value": p99,
         "details": {"figures": {"p50": p99 / 2, "p95": p99 * 0.9, "p99": p99, "max": p99 * 1.1, "mean": p99 / 2}}},
        {"criterion": "delivery", "kind": "completeness", "valid": delivery >= 100, "value": delivery, "details": {}},
    ]
    (d / "results.json").write_text(json.dumps({"verdict": "GO", "target": target, "criteria": crit}))
    (d / "config.json").write_text(json.dumps({"run_id": f"zr{n:08x}", "target": target}))
    (d / "environment.json").write_text(json.dumps({"platform": "Linux-6.1-x86_64", "machine": "x86_64", "cpus": cpus,
                                                    "started_utc": stamp}))
    shutil.copy(ROOT / "fixtures" / "criteria.toml", d / "criteria.toml")
    return d


@pytest.mark.parametrize(("spec", "want"), [
    ("realtime_latency.p99:+10%", ("realtime_latency", "p99", "+%", 10.0, "")),
    ("delivery:<100%", ("delivery", "", "<", 100.0, "%")),
    ("reconnect_reset:+1000ms", ("reconnect_reset", "", "+", 1000.0, "ms")),
    ("connection_reliability:-0.5", ("connection_reliability", "", "-", 0.5, "")),
    ("order_visible.max:>=750", ("order_visible", "max", ">=", 750.0, "")),
])
def test_the_grammar(spec: str, want: tuple[str, str, str, float, str]) -> None:
    t = parse_threshold(spec)
    assert (t.criterion, t.stat, t.op, t.number, t.unit) == want


@pytest.mark.parametrize("spec", ["realtime_latency", "realtime_latency:10%", "realtime_latency.p42:+10%",
                                  "delivery:=100", "delivery:<", ":+10%", "delivery:<abc", "delivery: <100"])
def test_bad_thresholds_are_refused(spec: str) -> None:
    with pytest.raises(TrendError, match="--fail-on"):
        parse_threshold(spec)


def test_relative_and_absolute_conditions() -> None:
    up = parse_threshold("x.p99:+10%")
    assert up.broken(111.0, 100.0) and not up.broken(110.0, 100.0)
    assert up.broken(100.0, None) is None  # no baseline: no verdict either way
    down = parse_threshold("delivery:-1")
    assert down.broken(98.9, 100.0) and not down.broken(99.5, 100.0)
    floor = parse_threshold("delivery:<100%")
    assert floor.broken(99.9, None) and not floor.broken(100.0, None)
    assert parse_threshold("x:+5").broken(float("inf"), 10.0)  # never reconnected: worse than any baseline


def test_five_healthy_runs_pass_and_a_regression_of_the_newest_fails(tmp_path: Path) -> None:
    for n, p99 in enumerate((20.0, 22.0, 21.0, 21.5, 20.5)):
        make_run(tmp_path, n * 60, p99)
    r = cli(str(tmp_path), "--fail-on", "realtime_latency.p99:+10%", "--fail-on", "delivery:<100%")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok          realtime_latency.p99:+10%" in r.stdout and "5 runs in 1 series, 0 regression(s)" in r.stdout
    make_run(tmp_path, 400, 66.0)
    r = cli(str(tmp_path), "--fail-on", "realtime_latency.p99:+10%", "--fail-on", "delivery:<100%")
    assert r.returncode == 1, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("REGRESSION"))
    assert "realtime_latency.p99:+10%" in line and "66.00" in line and "baseline 21.00 (median of 5 earlier runs)" in line
    html = (tmp_path / "trend.html").read_text()
    assert "REGRESSION" in html and "realtime_latency.p99:+10%" in html
    assert (tmp_path / "trend" / "realtime_latency.p99.png").stat().st_size > 5_000
    assert (tmp_path / "trend" / "delivery.png").is_file()
    data = json.loads((tmp_path / "trend.json").read_text())
    assert len(data["regressions"]) == 1 and "20261101T000640Z" in data["regressions"][0]


def test_a_regression_fixed_since_does_not_fail_tonight(tmp_path: Path) -> None:
    for n, p99 in enumerate((20.0, 21.0, 90.0, 20.0)):
        make_run(tmp_path, n * 60, p99)
    res = trend(tmp_path, ["realtime_latency.p99:+10%"])
    assert res.regressions == []
    assert [f.run.name[:16] for f in res.flags if f.broken] == ["20261101T000200Z"]  # charted, not failing


def test_targets_and_machines_are_never_mixed(tmp_path: Path) -> None:
    # a slow 8-cpu machine and a fast 2-cpu one, interleaved in time, and a URL target: three series, three baselines
    for n in range(4):
        make_run(tmp_path, n * 60, 20.0 + n, cpus=2)
        make_run(tmp_path, n * 60 + 1, 200.0 + n, cpus=8)
        make_run(tmp_path, n * 60 + 2, 100.0, kind="url", url="https://staging.example")
    res = trend(tmp_path, ["realtime_latency.p99:+10%"])
    assert len(res.series) == 3 and res.regressions == []  # mixed, the 8-cpu runs would be far above a shared median
    newest = {f.series: f for f in res.flags if f.newest}
    assert newest["embedded on Linux x86_64, 8 cpus"].baseline == 201.0
    assert newest["embedded on Linux x86_64, 2 cpus"].baseline == 21.0
    make_run(tmp_path, 500, 200.0, cpus=2)  # a 2-cpu run as slow as the 8-cpu machine: a regression of its own series
    res = trend(tmp_path, ["realtime_latency.p99:+10%"])
    assert [f.series for f in res.regressions] == ["embedded on Linux x86_64, 2 cpus"]


def test_a_given_baseline_run(tmp_path: Path) -> None:
    first = make_run(tmp_path, 0, 50.0)
    make_run(tmp_path, 60, 20.0)
    make_run(tmp_path, 120, 54.0)
    assert trend(tmp_path, ["realtime_latency.p99:+10%"]).regressions  # the median (35) says regression
    res = trend(tmp_path, ["realtime_latency.p99:+10%"], baseline=first)
    assert res.regressions == []  # 54 against 50: within 10 %
    assert next(f for f in res.flags if f.newest).basis == f"run {first.name}"


def test_unreadable_runs_are_skipped_and_named(tmp_path: Path) -> None:
    make_run(tmp_path, 0, 20.0)
    bad = make_run(tmp_path, 60, 20.0)
    (bad / "results.json").write_text("{not json")
    (tmp_path / "20261101T000000Z-embedded-2" / "analysis" / "x").mkdir(parents=True)  # not a run of its own
    res = trend(tmp_path)
    assert len(res.runs) == 1 and len(res.skipped) == 1 and bad.name in res.skipped[0]


@pytest.mark.parametrize(("args", "needle"), [
    (["{tmp}/nowhere"], "not a directory"),
    (["{tmp}"], "no run directories there"),
    (["{runs}", "--fail-on", "bogus"], "expected METRIC:CONDITION"),
    (["{runs}", "--fail-on", "nosuch.p99:+10%"], "no run has a criterion 'nosuch'"),
    (["{runs}", "--fail-on", "delivery.p99:+10%"], "delivery has no statistic 'p99'"),
    (["{runs}", "--fail-on", "delivery:<100ms"], "in %, not ms"),
    (["{runs}", "--baseline", "{tmp}/elsewhere"], "not one of the runs"),
    (["{runs}", "--last", "0"], "--last 0"),
])
def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "empty").mkdir()
    runs = tmp_path / "runs"
    make_run(runs, 0, 20.0)
    make_run(runs, 60, 21.0)
    r = cli(*[a.format(tmp=tmp_path / "empty", runs=runs) for a in args])
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.slow
def test_trend_over_real_gate_runs(stack: EmbeddedStack, tmp_path: Path) -> None:
    """Five real gate runs (no fault phase, one round, our probes: a few seconds each) against the session's stack,
    then one against a stack that holds every postgres_changes frame 150 ms (one after the other, so bursts queue):
    several times slower than every night before."""
    criteria = load_criteria()
    kw: dict[str, Any] = {"rounds": 1, "settle_s": criteria.settle_floor_s(), "quiet": True, "js": False,
                          "faults": False}
    for _ in range(5):
        assert run_gate(stack.target(), criteria, tmp_path, stack=stack, **kw).verdict.go
    flags = ["--fail-on", "realtime_latency.p99:+300%", "--fail-on", "delivery:<100%"]
    r = cli(str(tmp_path), *flags)
    assert r.returncode == 0, r.stdout + r.stderr
    with EmbeddedStack.from_fixtures(seed=False, fault_delivery_delay_ms=150) as slow:
        slowed = run_gate(slow.target(), criteria, tmp_path, stack=slow, **kw)
    r = cli(str(tmp_path), *flags)
    assert r.returncode == 1, r.stdout + r.stderr
    latency = [ln for ln in r.stdout.splitlines() if ln.startswith("REGRESSION  realtime_latency.p99:+300%")]
    assert len(latency) == 1 and slowed.run_dir.name in latency[0], r.stdout
    data = json.loads((tmp_path / "trend.json").read_text())
    flagged = [f for f in data["flags"] if f["broken"] and f["threshold"].startswith("realtime_latency")]
    assert [f["run"] for f in flagged] == [slowed.run_dir.name] and flagged[0]["value"] > 150
    with chromium(tmp_path / "trend.html") as b:  # the chart shows it: the regression's chart renders, offline
        assert b.js("document.getElementById('trend-status').textContent").endswith(("1 regression", "2 regressions"))
        ok = b.js("[...document.querySelectorAll('#charts img')].every(i => i.complete && i.naturalWidth > 300)")
        assert ok and b.js("document.querySelectorAll('#charts img').length") >= 10
        assert b.js("document.querySelectorAll('#runs-table tbody tr').length") == 6
        assert b.requests == [(tmp_path / "trend.html").resolve().as_uri()] and b.errors == []
        b.page.screenshot(path=str(tmp_path / "trend.png"), full_page=True)
