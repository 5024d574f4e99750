"""A verdict you can stake a release on, and a harness that is safe on a shared database: one regression test
per defect found by trying the gate as a user and a tester would (bad inputs, signals, kills, a database
restart). The signal tests are in test_gate.py; `stack up --db-url` in tests/test_cli.py."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from postgrest.exceptions import APIError

from harness.criteria import DEFAULT_CRITERIA, load_criteria
from harness.flows import order_flow
from harness.history import read_history
from harness.lifecycle import Lifecycle
from harness.records import Cleanup, RunError
from stack.server import EmbeddedStack
from tests.harness.test_gate import assert_nothing_left

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "harness.cli"]


def env_for(stack: EmbeddedStack) -> dict[str, str]:
    return {**os.environ, "SUPABASE_URL": stack.api_url, "SUPABASE_ANON_KEY": stack.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key}


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def digest(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and "analysis" not in p.parts}


@pytest.fixture(scope="module")
def strict_run(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """A gate run judged by criteria no run can meet (a new order visible within 1 microsecond): NO-GO."""
    tmp = tmp_path_factory.mktemp("strict")
    strict = tmp / "strict.toml"
    strict.write_text(DEFAULT_CRITERIA.read_text().replace("max_ms = 1000", "max_ms = 0.001"))
    r = cli("gate", "--target", "url", "--criteria", str(strict), "--report-dir", str(tmp / "runs"), "--rounds", "1",
            "--probes", "py", "--quiet", "--no-faults", env=env_for(stack))
    assert r.returncode == 1, r.stdout + r.stderr
    [run_dir] = list((tmp / "runs").iterdir())
    yield run_dir, strict, r.stdout


def test_analyze_judges_by_the_runs_own_criteria_and_never_overwrites_its_verdict(strict_run: tuple[Path, Path, str],
                                                                                  tmp_path: Path) -> None:
    run_dir, strict, _ = strict_run
    before = digest(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["criteria"]["sha256"] == hashlib.sha256((run_dir / "criteria.toml").read_bytes()).hexdigest()
    strict.write_text(DEFAULT_CRITERIA.read_text())  # the file changes after the run: the run keeps its copy
    r = cli("analyze", str(run_dir))
    assert r.returncode == 1 and r.stdout.lstrip().startswith("NO-GO"), r.stdout + r.stderr
    assert "order_visible" in r.stdout and "wrote the analysis to" in r.stderr
    assert digest(run_dir) == before  # verdict.md, results.json, junit.xml and charts untouched
    [out] = list((run_dir / "analysis").iterdir())
    assert json.loads((out / "results.json").read_text())["verdict"] == "NO-GO"
    # other criteria only when asked for, into a directory of their own
    r = cli("analyze", str(run_dir), "--criteria", str(DEFAULT_CRITERIA), "--out", str(tmp_path / "lenient"))
    assert r.returncode == 0 and r.stdout.lstrip().startswith("GO"), r.stdout + r.stderr
    assert digest(run_dir) == before
    r = cli("analyze", str(run_dir), "--out", str(run_dir))
    assert r.returncode == 2 and "never overwritten" in r.stderr


def test_the_verdict_names_the_target_it_ran_against_first(strict_run: tuple[Path, Path, str],
                                                           stack: EmbeddedStack) -> None:
    run_dir, _, stdout = strict_run
    first = stdout.strip().splitlines()[0]
    assert first.startswith(f"NO-GO  (target: url {stack.api_url}; not tested: reconnect_reset"), first  # --no-faults
    assert (run_dir / "verdict.md").read_text().startswith(f"# Verdict: NO-GO  (target: url {stack.api_url};")


def test_a_history_cut_short_or_damaged_is_not_judged_go(stack: EmbeddedStack, strict_run: tuple[Path, Path, str],
                                                         tmp_path: Path) -> None:
    run_dir, _, _ = strict_run
    lines = (run_dir / "history.jsonl").read_text().splitlines(keepends=True)
    for name, text in (("half", "".join(lines[: len(lines) // 2])),
                       ("no-finish", "".join(lines[:-1])),
                       ("damaged", "".join([*lines[:5], '{"kind":"op","process":7}\n', *lines[5:]]))):
        d = tmp_path / name
        d.mkdir()
        (d / "history.jsonl").write_text(text)
        r = cli("analyze", str(d), "--criteria", str(DEFAULT_CRITERIA), "--out", str(d / "out"))
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        res = json.loads((d / "out" / "results.json").read_text())
        lines_by_id = {c["criterion"]: c for c in res["criteria"]}
        if name == "damaged":
            assert lines_by_id["history"]["valid"] is False and res["history"]["unreadable"][0]["line"] == 6
            assert "process: Input should be a valid string" in lines_by_id["history"]["summary"]
        else:
            assert "did not finish" in lines_by_id["run"]["summary"] and not res["history"]["finished"]


def test_a_failed_world_build_leaves_nothing_behind(stack: EmbeddedStack, tmp_path: Path) -> None:
    # the auth user is created first; if making them a vendor then fails, cleanup must still find them
    with psycopg.connect(stack.superuser_dsn, autocommit=True) as c:
        c.execute("""create or replace function public.zr_test_refuse() returns trigger language plpgsql as $$
                     begin raise exception 'injected: no vendors today'; end $$;
                     create trigger zr_test_refuse before update of role on public.profiles for each row
                     when (new.role = 'vendor' and new.email like '%@zora-harness.test')
                     execute function public.zr_test_refuse();""")
    lc = Lifecycle(stack.target(), load_criteria(), tmp_path, js=False, quiet=True)
    try:
        with pytest.raises(APIError, match="injected") as e:
            asyncio.run(lc.main([order_flow], 1, 0.0))
        assert lc.end(e.value) is True  # a failure of the target: judged (NO-GO), not raised further
    finally:
        with psycopg.connect(stack.superuser_dsn, autocommit=True) as c:
            c.execute("drop trigger zr_test_refuse on public.profiles; drop function public.zr_test_refuse()")
    assert_nothing_left(stack, lc.run.run_id)
    records = read_history(lc.run.dir / "history.jsonl").records
    [cleanup] = [r for r in records if isinstance(r, Cleanup)]
    assert cleanup.verified and cleanup.left == {}
    assert lc.verdict is not None and not lc.verdict.go


def test_rows_left_by_a_failed_cleanup_fail_the_verdict_and_clean_removes_them(stack: EmbeddedStack,
                                                                              tmp_path: Path) -> None:
    with psycopg.connect(stack.superuser_dsn, autocommit=True) as c:  # orders of harness runs cannot be deleted
        c.execute("""create or replace function public.zr_test_keep() returns trigger language plpgsql as $$
                     begin raise exception 'injected: orders are kept'; end $$;
                     create trigger zr_test_keep before delete on public.orders for each row
                     when (old.notes like 'zr%') execute function public.zr_test_keep();""")
    lc = Lifecycle(stack.target(), load_criteria(), tmp_path, js=False, quiet=True)
    try:
        asyncio.run(lc.main([order_flow], 1, 2.0))
        lc.end(None)
    finally:
        with psycopg.connect(stack.superuser_dsn, autocommit=True) as c:
            c.execute("drop trigger zr_test_keep on public.orders; drop function public.zr_test_keep()")
    v = lc.verdict
    assert v is not None and not v.go
    line = v.line("cleanup").result
    assert line.valid is False and "1 orders" in line.summary and f"zora-harness clean --run-id {lc.run.run_id}" \
        in line.summary, line.summary
    assert v.line("delivery").result.valid is True and v.line("order_visible").result.valid is True  # sync was fine
    assert [ln.criterion.id for ln in v.failing() if ln.result.valid is False] == ["cleanup"]
    r = cli("clean", "--run-id", lc.run.run_id, env=env_for(stack))
    assert r.returncode == 0 and f"nothing of run {lc.run.run_id} is left" in r.stdout, r.stdout + r.stderr
    assert_nothing_left(stack, lc.run.run_id)
    again = cli("clean", "--run-id", lc.run.run_id, env=env_for(stack))
    assert again.returncode == 0  # idempotent


def test_cleanup_retries_through_a_database_restart(tmp_path: Path) -> None:
    with EmbeddedStack.from_fixtures(seed=False) as fresh:
        lc = Lifecycle(fresh.target(), load_criteria(), tmp_path, js=False, quiet=True)

        async def go() -> None:
            try:
                await lc.open()
                await lc.flows([order_flow], 1)
                await asyncio.to_thread(fresh.restart_postgres)  # every pooled connection of the stack is now dead
            finally:
                await lc.close()

        asyncio.run(go())
        lc.end(None)
        assert_nothing_left(fresh, lc.run.run_id)
    [cleanup] = [r for r in read_history(lc.run.dir / "history.jsonl").records if isinstance(r, Cleanup)]
    assert cleanup.verified and cleanup.left == {} and any("retrying" in p for p in cleanup.problems), cleanup
    assert lc.verdict is not None and lc.verdict.line("cleanup").result.valid is True


class _Html(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[str]:
    """A plain web server on loopback that answers 200 HTML to everything: not a Supabase."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_a_target_that_is_not_a_supabase_is_unreachable_not_preflight_ok(web_server: str, stack: EmbeddedStack,
                                                                          tmp_path: Path) -> None:
    env = {**env_for(stack), "SUPABASE_URL": web_server}
    r = cli("gate", "--target", "url", "--report-dir", str(tmp_path), env=env)
    assert r.returncode == 3 and "not a Supabase API" in r.stderr and "preflight ok" not in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    # an unreachable database in the preflight is exit 3 too
    r = cli("gate", "--target", "url", "--report-dir", str(tmp_path), "--db-url",
            "postgresql://postgres:hunter2@127.0.0.1:1/postgres", env=env_for(stack))
    assert r.returncode == 3 and "database unreachable" in r.stderr and "hunter2" not in r.stderr, r.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["--env-file", "{latin1}"], "not UTF-8"),
    (["--criteria", "/tmp"], "is a directory"),
    (["--db-url", "host=x = = y"], "not a PostgreSQL connection string"),
    (["--report-dir", "{file}"], "exists and is not a directory"),
    (["--criteria", "{bad_group}"], "no flow produces"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, stack: EmbeddedStack, tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.env"
    latin1.write_bytes(b"SUPABASE_URL=http://caf\xe9\n")
    (tmp_path / "file").write_text("x")
    bad_group = tmp_path / "bad.toml"
    bad_group.write_text("[x]\nkind='latency'\ntitle='t'\nmetric='write_to_deliver'\nstatistic='max'\nmax_ms=5\n"
                         "events='order_visibel'\n")
    subst = {"{latin1}": str(latin1), "{file}": str(tmp_path / "file"), "{bad_group}": str(bad_group)}
    argv = [subst.get(a, a) for a in args]
    r = cli("gate", "--target", "url", *argv, env=env_for(stack), timeout=60)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_credentials_in_a_url_are_never_written_or_printed(stack: EmbeddedStack, tmp_path: Path) -> None:
    url = stack.api_url.replace("http://", "http://admin:hunter2@").replace(str(stack.port), "1")
    r = cli("gate", "--target", "url", "--url", url, "--report-dir", str(tmp_path), "--db-url",
            "postgresql://postgres:s3cret@127.0.0.1:1/postgres", env=env_for(stack))
    assert r.returncode == 3
    out = r.stdout + r.stderr
    for f in tmp_path.rglob("*"):
        if f.is_file():
            out += f.read_text(errors="replace")
    assert "hunter2" not in out and "s3cret" not in out and "<redacted>" in out


def test_a_broken_pipe_keeps_the_verdicts_exit_code(stack: EmbeddedStack, tmp_path: Path) -> None:
    # `gate | head -1`, at its worst: the reader is gone before the verdict is printed (`true` reads nothing).
    # The verdict (GO here) is still the exit code, and nothing is printed about the pipe.
    cmd = (f"{sys.executable} -m harness.cli gate --target url --report-dir {tmp_path} --rounds 1 --probes py --quiet"
           " --no-faults | true; exit ${PIPESTATUS[0]}")
    r = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=180, env=env_for(stack))
    assert r.returncode == 0, r.stderr  # GO, not a crash
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr and "Exception ignored" not in r.stderr


def test_an_internal_error_has_its_own_exit_code_and_keeps_the_record(
        stack: EmbeddedStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from harness import cli as harness_cli
    from harness import flows

    async def broken(s: object, round_: int) -> None:
        raise TypeError("a bug in a flow")

    monkeypatch.setattr("harness.gate.FLOWS", [flows.order_flow, broken])
    for k, v in env_for(stack).items():
        monkeypatch.setenv(k, v)
    code = harness_cli.main(["gate", "--target", "url", "--report-dir", str(tmp_path), "--probes", "py", "--quiet",
                             "--rounds", "1", "--no-faults"])
    err = capsys.readouterr().err
    assert code == 4 and "internal error: TypeError: a bug in a flow" in err and "Traceback" not in err
    [run_dir] = list(tmp_path.iterdir())
    records = read_history(run_dir / "history.jsonl").records
    assert any(isinstance(r, RunError) and r.internal for r in records)
    assert "NO-GO" in (run_dir / "verdict.md").read_text()
    assert_nothing_left(stack, json.loads((run_dir / "config.json").read_text())["run_id"])


def test_the_pytest_plugin_stops_with_one_line_naming_its_options(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    r = subprocess.run([sys.executable, "-m", "pytest", "scenarios/test_cart_sync.py", "--target", "url", "-q",
                        "-p", "no:cacheprovider", "--report-dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "zora: url target: no URL" in out and "--target url with SUPABASE_URL" in out, out
    assert "Traceback" not in out and "pass --url" not in out and len(out.splitlines()) < 15, out


def test_kill_9_in_the_middle_of_a_black_hole_leaves_nothing_running_and_a_readable_history(tmp_path: Path) -> None:
    # the gate on its own embedded stack, killed while every device's network is black-holed
    import signal
    import time

    p = subprocess.Popen([*CLI, "gate", "--report-dir", str(tmp_path), "--rounds", "1", "--blackhole-s", "60",
                          "--churn", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    seen = []
    for line in p.stderr:  # bounded: the gate prints this within seconds, or ends by itself
        seen.append(line)
        if "during the blackhole" in line:
            break
    children = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert children, "".join(seen)  # it had started its own processes (Node for the twins; PostgreSQL runs as postgres)
    [run_dir] = list(tmp_path.iterdir())
    run_id = json.loads((run_dir / "config.json").read_text())["run_id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # bounded: the kernel's parent-death signals and closed pipes end them
        left = subprocess.run(["pgrep", "-f", f"{run_dir}|zora-harness/clusters"], capture_output=True,
                              text=True).stdout.split()
        alive = [c for c in children if Path(f"/proc/{c}").exists()]
        if not alive and not [x for x in left if x != str(os.getpid())]:
            break
        time.sleep(0.2)
    assert not [c for c in children if Path(f"/proc/{c}").exists()], "a child of the killed gate is still running"
    # the run is readable and says it did not finish
    r = cli("analyze", str(run_dir), "--out", str(tmp_path / "after"))
    assert r.returncode == 1 and "did not finish" in r.stdout, r.stdout + r.stderr
    assert run_id and "Traceback" not in r.stderr
    # and the next run starts cleanly
    again = cli("gate", "--report-dir", str(tmp_path / "next"), "--rounds", "1", "--no-faults", "--probes", "py",
                "--quiet")
    assert again.returncode == 0, again.stdout + again.stderr


def test_sigterm_to_pytest_scenarios_cleans_up_like_ctrl_c(stack: EmbeddedStack, tmp_path: Path) -> None:
    # CI cancels a job with SIGTERM: the plugin treats it as Ctrl-C, so pytest tears the fixtures down and the
    # module's run deletes its rows and writes its verdict
    import signal
    import time

    p = subprocess.Popen([sys.executable, "-m", "pytest", "scenarios/test_order_flow.py", "--target", "url", "-q",
                          "-p", "no:cacheprovider", "--report-dir", str(tmp_path), "--probes", "py"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_for(stack))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any((d / "history.jsonl").is_file() and "place_order" in
                                                  (d / "history.jsonl").read_text() for d in tmp_path.iterdir()):
        time.sleep(0.05)  # bounded: until the module's flows are writing
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    assert p.returncode != 0, out
    [run_dir] = list(tmp_path.iterdir())
    assert_nothing_left(stack, json.loads((run_dir / "config.json").read_text())["run_id"])
    assert "interrupted by SIGTERM" in (run_dir / "verdict.md").read_text(), out
