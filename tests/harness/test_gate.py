"""The gate against the embedded stack: GO when healthy, NO-GO naming the right criterion when broken.

A gate that cannot fail is a defect: each negative control breaks the stack one way and checks the
verdict names what broke.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from harness.apps import PROBES, Declaration
from harness.browser import browser_unavailable
from harness.checks import analyze
from harness.checks.completeness import recovered
from harness.criteria import Verdict, load_criteria, parse_criteria
from harness.flows import FLOWS, BrowserPlan, database_broadcast
from harness.gate import PG_NOTIFY_PROBLEM, run_gate
from harness.history import read_history
from harness.records import ChannelClosed, Interrupted, RunFinished
from stack import jwt
from stack.server import EmbeddedStack

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = load_criteria()
ANON, SERVICE = jwt.make_api_key("anon", "k" * 40), jwt.make_api_key("service_role", "k" * 40)


def gate(stack: EmbeddedStack, tmp: Path, skip_preflight: bool = False, faults: bool = False,
         browser: bool = False) -> tuple[Verdict, Path]:
    """One gate run; the negative controls break the flows, so they run without the fault phase (which has its
    own controls in test_resilience_controls.py) and without browser probes (their own in test_browser.py)."""
    r = run_gate(stack.target(), CRITERIA, tmp, rounds=1, settle_s=CRITERIA.settle_floor_s(),
                 skip_preflight=skip_preflight, quiet=True, faults=faults, stack=stack,
                 browser=BrowserPlan() if browser else None)
    return r.verdict, r.run_dir


def failing(v: Verdict) -> dict[str, str]:
    return {ln.criterion.id: ln.result.summary for ln in v.failing()}


@pytest.fixture
def fresh() -> Iterator[EmbeddedStack]:
    with EmbeddedStack.from_fixtures(seed=False) as s:
        yield s


def break_db(stack: EmbeddedStack, statements: str) -> None:
    with psycopg.connect(stack.superuser_dsn, autocommit=True) as c:
        c.execute(statements)


def test_healthy_stack_is_go_and_the_run_directory_is_complete(fresh: EmbeddedStack, tmp_path: Path) -> None:
    # the gate as a user runs it: with its fault phase (reset, a black hole of 53 s, the phone offline, churn), and
    # with browser probes (Chromium is installed by .ci/setup: without it this fails, naming the fix)
    assert browser_unavailable() is None, browser_unavailable()
    v, run_dir = gate(fresh, tmp_path, faults=True, browser=True)
    assert v.go, failing(v)
    assert not v.skipped and {ln.criterion.id for ln in v.lines} >= {"reconnect_reset", "reconnect_blackhole",
                                                                    "connection_reliability", "offline_sync",
                                                                    "order_on_screen", "status_on_screen",
                                                                    "indicator_reset", "indicator_blackhole"}
    assert v.flavours["browser"]["delivered"] > 0 and v.flavours["browser"]["front"]["write_to_screen"]["max"] > 0
    assert {p.name.rsplit("-", 1)[1] for p in (run_dir / "screenshots").glob("*.png")} >= {"Offline.png", "Live.png"}
    for name in ("history.jsonl", "config.json", "environment.json", "criteria.toml", "results.json", "verdict.md",
                 "junit.xml", "charts/latency_cdf.png", "charts/delivery_matrix.png", "charts/latency_over_time.png"):
        assert (run_dir / name).is_file(), name
    assert v.line("cleanup").result.valid is True  # verified by the run's tag: nothing of it left
    assert json.loads((run_dir / "results.json").read_text())["verdict"] == "GO"
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["packages"]["supabase"] and env["js"]["@supabase/supabase-js"] and env["js"]["node"].startswith("v")
    # no secret anywhere in what the run wrote
    secrets = [fresh.service_role_key, fresh.settings.jwt_secret]  # type: ignore[union-attr]
    for f in run_dir.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for s in secrets:
                assert s.encode() not in data, f"secret in {f.name}"
    # the supabase-js twins got everything their originals did, stamped on the same clock: never before the write
    loaded = read_history(run_dir / "history.jsonl")
    assert loaded.problems == []
    a = analyze(loaded.records)
    js = [d for (_, p), d in a.deliveries.items() if a.flavour(p) == "supabase-js"]
    assert {d.probe for d in js} >= {"vendor-1/portal@js", "admin/dashboard@js", "customer-1/phone@js"}
    for d in js:
        assert d.seen or recovered(a, d), f"{d.probe} missed {d.exp.eid}"
        if d.seen and not a.degraded(d):
            assert 0 < d.seen[0].t - d.t_write < 5e9, (d.probe, d.exp.eid)
    # analyze re-checks the stored history and agrees, into a directory of its own
    out = subprocess.run([sys.executable, "-m", "harness.cli", "analyze", str(run_dir)], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().startswith("GO"), out.stderr
    [again] = list((run_dir / "analysis").iterdir())
    assert json.loads((again / "results.json").read_text())["criteria"] == \
        json.loads((run_dir / "results.json").read_text())["criteria"]


def test_table_removed_from_publication(fresh: EmbeddedStack, tmp_path: Path) -> None:
    break_db(fresh, "alter publication supabase_realtime drop table public.orders")
    v, _ = gate(fresh, tmp_path)
    assert not v.go and "publication supabase_realtime lacks: orders" in failing(v)["preflight"]
    v, _ = gate(fresh, tmp_path, skip_preflight=True)  # the checkers see it too, not only the preflight
    assert not v.go and "delivery" in failing(v) and "unseen" in failing(v)["delivery"]


def test_rls_hiding_orders_from_the_vendor(fresh: EmbeddedStack, tmp_path: Path) -> None:
    break_db(fresh, """drop policy orders_select on public.orders;
        create policy orders_select on public.orders for select to authenticated
        using (user_id = auth.uid() or public.is_admin());""")
    v, run_dir = gate(fresh, tmp_path)
    f = failing(v)
    assert not v.go and "delivery" in f
    evidence = json.loads((run_dir / "results.json").read_text())
    lines = {c["criterion"]: c for c in evidence["criteria"]}
    assert lines["delivery"]["details"]["per_probe"]["vendor-1/portal"]["unseen"] > 0
    assert lines["delivery"]["details"]["per_probe"]["vendor-1/portal@js"]["unseen"] > 0  # supabase-js sees it too
    assert lines["delivery"]["details"]["per_probe"]["customer-1/phone"]["unseen"] == 0


def test_status_change_trigger_dropped(fresh: EmbeddedStack, tmp_path: Path) -> None:
    break_db(fresh, "drop trigger on_order_status_change on public.orders")
    v, _ = gate(fresh, tmp_path)
    assert not v.go and "on_order_status_change" in failing(v)["preflight"]
    v, run_dir = gate(fresh, tmp_path, skip_preflight=True)
    assert not v.go and "delivery" in failing(v)
    lines = {c["criterion"]: c for c in json.loads((run_dir / "results.json").read_text())["criteria"]}
    missed = lines["delivery"]["details"]["per_group"]["notification"]
    assert missed["unseen"] + missed["lost"] > 0  # lost: a later notification of the same writer did arrive


def test_rls_leaking_other_customers_orders_shows_as_unexpected(fresh: EmbeddedStack, tmp_path: Path) -> None:
    break_db(fresh, """drop policy orders_select on public.orders;
        create policy orders_select on public.orders for select to authenticated using (true);""")
    v, _ = gate(fresh, tmp_path)
    f = failing(v)
    assert not v.go and "no_leaks" in f and re.search(r"[1-9]\d* unexpected", f["no_leaks"])


# 001 §4.1.1 (migration 016) as the documents wrote it
DOCUMENTS_BROADCAST_EVENT = """create or replace function public.broadcast_event(channel_name text, event_type text,
    payload jsonb) returns void language plpgsql security definer set search_path = '' as $$
begin
    perform pg_notify(channel_name, json_build_object('event', event_type, 'payload', payload)::text);
end;
$$;"""


def test_broadcast_event_with_the_documents_pg_notify_body(fresh: EmbeddedStack, tmp_path: Path) -> None:
    break_db(fresh, DOCUMENTS_BROADCAST_EVENT)
    v, _ = gate(fresh, tmp_path)
    assert not v.go and failing(v)["preflight"] == PG_NOTIFY_PROBLEM
    v, run_dir = gate(fresh, tmp_path, skip_preflight=True)  # and the event really reaches nobody
    assert not v.go and "unseen" in failing(v)["delivery"]
    lines = {c["criterion"]: c for c in json.loads((run_dir / "results.json").read_text())["criteria"]}
    unseen = lines["delivery"]["details"]["evidence"]["unseen"]
    assert unseen and all(u["eid"].startswith("platform_event:") for u in unseen)


def test_announcements_on_the_documents_public_channel_can_be_spoofed(fresh: EmbeddedStack, tmp_path: Path) -> None:
    """The apps join platform-announcements as a public channel (001 §3.2): a customer's message reaches them."""
    public = Declaration(private_topics=frozenset())
    flows = [f for f in FLOWS if f is not database_broadcast]  # broadcast_event sends on the private channel
    r = run_gate(fresh.target(), CRITERIA, tmp_path, rounds=1, settle_s=CRITERIA.settle_floor_s(), quiet=True,
                 faults=False, stack=fresh, declaration=public, flows=flows)
    f = failing(r.verdict)
    assert not r.verdict.go and set(f) == {"no_spoofing"}, f
    assert "platform-announcements" in f["no_spoofing"] and "INSERT policy on realtime.messages" in f["no_spoofing"]
    assert r.verdict.line("no_spoofing").result.value >= len(PROBES)  # every app instance got it, at least once


def test_no_spoofing_can_be_turned_off_in_the_criteria(fresh: EmbeddedStack, tmp_path: Path) -> None:
    text = (ROOT / "fixtures" / "criteria.toml").read_text()
    assert "[no_spoofing]" in text
    without = parse_criteria(text[:text.index("[no_spoofing]")], "criteria without no_spoofing")
    public = Declaration(private_topics=frozenset())
    flows = [f for f in FLOWS if f is not database_broadcast]
    r = run_gate(fresh.target(), without, tmp_path, rounds=1, settle_s=without.settle_floor_s(), quiet=True,
                 faults=False, stack=fresh, declaration=public, flows=flows)
    assert r.verdict.go, failing(r.verdict)  # the spoofed messages are not counted as leaks either


def test_artificial_delay_above_budget(tmp_path: Path) -> None:
    with EmbeddedStack.from_fixtures(seed=False, fault_delivery_delay_ms=700) as slow:
        v, _ = gate(slow, tmp_path)
    f = failing(v)
    assert not v.go and "status_everywhere" in f and "realtime_latency" in f


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["gate", "--target", "nowhere"], 2, "not embedded, containers, url, or a readable env file"),
        (["gate", "--target", "url", "--url", "http://127.0.0.1:1", "--anon-key", ANON, "--service-key", SERVICE],
         3, "unreachable"),
        # URL and key flags imply --target url: never silently ignored in favour of the embedded stack
        (["gate", "--url", "http://127.0.0.1:1", "--anon-key", ANON, "--service-key", SERVICE], 3, "unreachable"),
        (["gate", "--target", "embedded", "--url", "http://127.0.0.1:1"], 2, "imply --target url"),
        (["gate", "--settle", "0"], 2, "the criteria's longest deadline"),
        (["gate", "--criteria", "/tmp"], 2, "is a directory"),
        (["gate", "--url", "http://127.0.0.1:1", "--anon-key", SERVICE, "--service-key", SERVICE], 2,
         "anon key has role 'service_role'"),
        (["gate", "--url", "http://127.0.0.1:1", "--anon-key", ANON, "--service-key", SERVICE, "--db-url", "x = = y"],
         2, "not a PostgreSQL connection string"),
        (["gate", "--criteria", "/nonexistent.toml"], 2, "not found"),
        # a bad fault specification is refused before anything starts
        (["gate", "--fault", "frob"], 2, "unknown fault 'frob'"),
        (["gate", "--fault", "latency:-1"], 2, "ms must be >= 0"),
        (["gate", "--fault", "latency:200,sideways=1"], 2, "latency"),
        (["gate", "--fault", "pause_postgres:2", "--url", "http://127.0.0.1:1", "--anon-key", ANON, "--service-key",
          SERVICE], 2, "needs the embedded target"),
        (["gate", "--fault", "reset", "--no-faults"], 2, "--no-faults leaves out"),
        (["gate", "--blackhole-s", "0"], 2, "--blackhole-s"),
        (["gate", "--rounds", "0"], 2, "--rounds"),
        (["analyze", "/nonexistent"], 2, "not a run directory"),
    ],
)
def test_bad_usage(args: list[str], code: int, needle: str, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "harness.cli", *args, *(["--report-dir", str(tmp_path)]
                        if args[0] == "gate" else [])], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == code, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("zora-harness:")]) == 1


def test_js_probes_without_node_is_a_configuration_error(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "harness.cli", "gate", "--report-dir", str(tmp_path)], capture_output=True,
                       text=True, cwd=ROOT, timeout=60, env={"PATH": "/nonexistent", "HOME": str(tmp_path)})
    assert r.returncode == 2 and "need Node.js" in r.stderr and "--probes py" in r.stderr and "Traceback" not in r.stderr


def test_wrong_key_is_a_configuration_error_and_the_history_stays(fresh: EmbeddedStack, tmp_path: Path) -> None:
    forged = jwt.make_api_key("service_role", "w" * 40)
    r = subprocess.run([sys.executable, "-m", "harness.cli", "gate", "--target", "url", "--url", fresh.api_url,
                        "--anon-key", fresh.anon_key, "--service-key", forged, "--report-dir", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "refuses the service-role key" in r.stderr and "Traceback" not in r.stderr
    [run_dir] = list(tmp_path.iterdir())
    assert (run_dir / "history.jsonl").read_text().count("\n") >= 2
    assert forged.encode() not in (run_dir / "config.json").read_bytes()


@pytest.mark.parametrize(("after", "sig", "code"), [
    ("preflight ok", signal.SIGINT, 130), ("world built", signal.SIGINT, 130), ("probes", signal.SIGINT, 130),
    # SIGTERM is what CI cancellation, `timeout`, Docker and Kubernetes send; SIGHUP a closed terminal
    ("world built", signal.SIGTERM, 143), ("probes", signal.SIGTERM, 143), ("round 1/3 done", signal.SIGHUP, 129),
])
def test_a_signal_cleans_up_the_runs_rows_and_keeps_what_was_recorded(stack: EmbeddedStack, tmp_path: Path,
                                                                      after: str, sig: int, code: int) -> None:
    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "gate", "--target", "url", "--report-dir", str(tmp_path)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "SUPABASE_URL": stack.api_url, "SUPABASE_ANON_KEY": stack.anon_key,
                              "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key})
    assert p.stderr is not None
    seen = []
    for line in p.stderr:  # bounded: the gate ends by itself within seconds if the signal came too late
        seen.append(line)
        if after in line:
            p.send_signal(sig)
            break
    _out, err = p.communicate(timeout=120)
    assert p.returncode == code, "".join(seen) + err
    name = signal.Signals(sig).name
    assert "Traceback" not in err and f"zora-harness: interrupted ({name})" in err, err
    [run_dir] = list(tmp_path.iterdir())
    run_id = json.loads((run_dir / "config.json").read_text())["run_id"]
    assert_nothing_left(stack, run_id)
    loaded = read_history(run_dir / "history.jsonl")
    [stop] = [r for r in loaded.records if isinstance(r, Interrupted)]
    assert stop.signal == name
    assert isinstance(loaded.records[-1], RunFinished) and loaded.records[-1].outcome == "interrupted"
    verdict_md = (run_dir / "verdict.md").read_text()
    assert "NO-GO" in verdict_md and f"interrupted by {name}" in verdict_md


def test_timeout_terminating_the_gate_leaves_nothing_behind(stack: EmbeddedStack, tmp_path: Path) -> None:
    # the reproduction: `timeout 4 zora-harness gate --target url ...` left users, shops and orders behind
    r = subprocess.run(["timeout", "--preserve-status", "4", sys.executable, "-m", "harness.cli", "gate", "--target",
                        "url", "--report-dir", str(tmp_path), "--quiet", "--rounds", "20", "--no-faults"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SUPABASE_URL": stack.api_url, "SUPABASE_ANON_KEY": stack.anon_key,
                            "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key})
    assert r.returncode == 143, r.stderr
    [run_dir] = list(tmp_path.iterdir())
    assert_nothing_left(stack, json.loads((run_dir / "config.json").read_text())["run_id"])
    assert "interrupted by SIGTERM" in (run_dir / "verdict.md").read_text()


def assert_nothing_left(stack: EmbeddedStack, run_id: str) -> None:
    """Nothing of the run stays behind on a shared database: asked of the database itself, by the run's tag."""
    with psycopg.connect(stack.superuser_dsn) as c:
        for q in ("select count(*) from auth.users where email like %s",
                  "select count(*) from public.vendors where shop_name like %s",
                  "select count(*) from public.products where name like %s",
                  "select count(*) from public.orders where notes like %s"):
            pattern = f"%-{run_id}@zora-harness.test" if "auth.users" in q else f"%{run_id}%"
            assert c.execute(q, (pattern,)).fetchone() == (0,), q


def test_node_dying_mid_run_shows_as_the_twins_misses_not_a_pass(stack: EmbeddedStack, tmp_path: Path) -> None:
    from harness.checks import completeness
    from harness.flows import order_flow
    from harness.lifecycle import Lifecycle

    lc = Lifecycle(stack.target(), CRITERIA, tmp_path, quiet=True)

    async def go() -> None:
        try:
            scene = await lc.open()
            assert scene.js_probes is not None and scene.js_probes.proc is not None
            scene.js_probes.proc.kill()
            await asyncio.sleep(0.5)
            await order_flow(scene, 0)
            await asyncio.sleep(1.0)
        finally:
            await lc.close()

    asyncio.run(go())
    lc.end(None)
    records = read_history(lc.run.dir / "history.jsonl").records
    assert any(isinstance(r, ChannelClosed) and "supabase-js process exited" in r.reason for r in records)
    r = completeness(analyze(records))
    assert r.valid is False
    assert r.details["per_probe"]["vendor-1/portal@js"]["unseen"] > 0
    assert r.details["per_probe"]["vendor-1/portal"]["unseen"] == 0  # our own probe still got it
    assert lc.verdict is not None and not lc.verdict.go
