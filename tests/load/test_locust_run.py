"""``locust -f load --headless`` against the embedded stack, bounded in time: its exit code is the verdict."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from stack.postgres import free_port
from tests.load.locust_support import locust_cmd, processes, results, run_dir, start

pytestmark = pytest.mark.slow

ANON = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJl")
SERVICE = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl")


def headless(tmp_path: Path, *extra: str, seconds: int = 10) -> tuple[int, str]:
    log = tmp_path / "locust.log"
    with processes() as procs:
        p = start(procs, locust_cmd("--headless", "-u", "9", "-r", "9", "-t", f"{seconds}s", "--only-summary",
                                    "--zora-report-dir", str(tmp_path / "reports"), "--zora-rate", "2",
                                    "--zora-vendors", "1", *extra), log)
        code = p.wait(240)
    return code, log.read_text()


def test_healthy_stack_is_go(tmp_path: Path) -> None:
    code, out = headless(tmp_path, "--csv", str(tmp_path / "csv" / "run"), "--html", str(tmp_path / "run.html"))
    assert code == 0, out[-3000:]
    res, load = results(tmp_path / "reports")
    assert res["verdict"] == "GO"
    lines = {c["criterion"]: c for c in res["criteria"]}
    assert lines["delivery"]["valid"] is True and lines["status_everywhere"]["valid"] is True
    c = load["completeness"]
    assert c["expected"] > 50 and c["delivered"] == c["expected"] and c["unexpected"] == 0
    assert load["reliability"]["live"] == load["reliability"]["subscribers"] == 6
    assert set(c["per_app"]) == {"customer-app", "vendor-portal", "admin-dashboard"}  # one shop: each app is owed
    assert load["writes"]["publishers"] == 3 and load["writes"]["failed"] == 0
    # Locust's own stats saw the same deliveries (and wrote its csv and html as usual)
    assert load["locust_stats_ms"]["WS deliver:status_update"]["n"] == load["latency_ms"][
        "status_update|write_to_deliver"]["n"]
    assert (tmp_path / "run.html").is_file() and (tmp_path / "csv" / "run_stats.csv").is_file()
    d = run_dir(tmp_path / "reports")
    assert {"results.json", "verdict.md", "junit.xml", "history.jsonl", "criteria.toml"} <= {p.name for p in d.iterdir()}
    assert "GO" in out and "locust vs exact" in out


def test_delivery_delayed_past_the_budget_is_no_go(tmp_path: Path) -> None:
    code, out = headless(tmp_path, "--zora-delivery-delay-ms", "700")
    assert code == 1, out[-3000:]
    res, _ = results(tmp_path / "reports")
    failing = {c["criterion"] for c in res["criteria"] if c["valid"] is not True}
    assert {"status_everywhere", "realtime_latency"} <= failing  # (the stack holds changes one after another, so
    # most are still unseen at the end: delivery fails too)


def test_ci_profile_and_tags(tmp_path: Path) -> None:
    code, out = headless(tmp_path, "--zora-profile", "ci", "--tags", "publish", "subscribe")
    assert code == 0, out[-3000:]
    _, load = results(tmp_path / "reports")
    assert load["reliability"]["subscribers"] == 6 and load["writes"]["publishers"] == 3


@pytest.mark.parametrize(("extra", "code", "needle"), [
    (["--target", "url", "--host", "http://127.0.0.1:1"], 2, "no anon key"),
    (["--host", "http://127.0.0.1:{port}"], 3, "unreachable"),
    (["--zora-settle", "0.5"], 2, "--zora-settle"),
])
def test_unusable_target_is_one_line_and_not_no_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str],
                                                   code: int, needle: str) -> None:
    monkeypatch.setenv("SUPABASE_ANON_KEY", ANON) if "{port}" in " ".join(extra) else monkeypatch.delenv(
        "SUPABASE_ANON_KEY", raising=False)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SERVICE)
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    args = [a.replace("{port}", str(free_port())) for a in extra]
    got, out = headless(tmp_path, *args, seconds=5)
    assert got == code, out[-2000:]
    lines = [ln for ln in out.splitlines() if ln.startswith("zora load:")]
    assert len(lines) == 1 and needle in lines[0], out[-2000:]


def test_worker_without_a_master_gives_up_with_its_own_code(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with processes() as procs:
        p = start(procs, locust_cmd("--worker", "--master-port", str(free_port()), "--zora-master-wait", "5"), log)
        code = p.wait(60)
    out = log.read_text()
    assert code not in (0, 1), out[-2000:]
    assert "Failed to connect to the Locust master" in out
    assert subprocess.run(["true"]).returncode == 0


def test_stress_profile_with_a_reset_in_the_middle(tmp_path: Path) -> None:
    code, out = headless(tmp_path, "--zora-profile", "stress", "--zora-subscribers", "6", "--zora-hold", "8",
                         "--zora-fault", "reset")
    assert code == 0, out[-3000:]
    res, load = results(tmp_path / "reports")
    lines = {c["criterion"]: c for c in res["criteria"]}
    assert lines["reconnect_reset"]["valid"] is True and lines["connection_reliability"]["valid"] is True
    assert "reconnect_blackhole" in res["skipped"]
    r = load["reliability"]
    assert r["reconnects"] == r["subscribers"] == 6 and r["still_joined_at_end"] == r["joins_attempted"] // 2
    assert [f["name"] for f in load["faults"]] == ["reset"]
    history = (run_dir(tmp_path / "reports") / "history.jsonl").read_text()
    assert history.count('"kind":"fault"') == 2  # its start and end, as the gate records faults


def test_a_run_ended_by_ctrl_c_is_stopped_settled_and_judged(tmp_path: Path) -> None:
    """Ctrl-C is how a web UI session or a headless run without -t ends: Locust fires ``quitting`` before it stops
    the users, so the harness stops them first (publishers, then the settle window) and judges what was sent,
    with the stack still up for every write in flight."""
    log = tmp_path / "locust.log"
    with processes() as procs:
        p = start(procs, locust_cmd("--headless", "-u", "9", "-r", "9", "--only-summary", "--zora-report-dir",
                                    str(tmp_path / "reports"), "--zora-rate", "2", "--zora-vendors", "1"), log)
        deadline = time.monotonic() + 120
        while "All users spawned" not in log.read_text() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.2)
        time.sleep(6)
        p.send_signal(signal.SIGINT)
        code = p.wait(120)
    out = log.read_text()
    assert code == 0, out[-3000:]
    res, load = results(tmp_path / "reports")
    assert res["verdict"] == "GO"
    c = load["completeness"]
    assert c["expected"] > 20 and c["delivered"] == c["expected"]
    assert load["writes"]["sent"] > 10 and load["writes"]["failed"] == 0 and load["writes"]["unknown"] == 0
    assert "Connection refused" not in out
