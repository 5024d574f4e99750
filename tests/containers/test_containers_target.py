"""``--target containers``: same verdicts as the embedded stack, the official images' one-line failure, and
nothing of a run left in Docker afterwards, also after ``kill -9``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.containers import runs
from harness.containers.config import ContainersConfigError, load_profile

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "harness.cli"]
GATE = ["gate", "--rounds", "1", "--no-faults", "--probes", "py", "--quiet"]


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60, check=True).stdout


def _left(run: str) -> list[str]:
    """Every container, network and volume labelled with this run."""
    flt = ["--filter", f"label={runs.LABEL_RUN}={run}"]
    out = _docker("ps", "-aq", *flt) + _docker("network", "ls", "-q", *flt) + _docker("volume", "ls", "-q", *flt)
    return out.split()


def _verdict(run_dir: Path) -> dict[str, Any]:
    """The verdict, each criterion's validity and what was not tested: what "the same verdict" compares."""
    res = json.loads((run_dir / "results.json").read_text())
    return {"verdict": res["verdict"], "skipped": sorted(res["skipped"]),
            "criteria": sorted((c["criterion"], c["valid"]) for c in res["criteria"])}


def _only_run_dir(root: Path) -> Path:
    dirs = [d for d in root.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


# -- settings and owners: no Docker needed ------------------------------------------------------------------

def test_profiles_come_from_one_file_and_env_overrides(tmp_path: Path) -> None:
    p = load_profile("supabase-official", env={})
    assert {"postgres", "gotrue", "postgrest", "realtime", "kong"} <= set(p.images)
    assert load_profile("supabase-official", env={"ZORA_IMAGE_REALTIME": "x/realtime:1"}).images["realtime"] == \
        "x/realtime:1"
    assert load_profile("embedded-in-container", env={}).built_here
    with pytest.raises(ContainersConfigError, match="not one of"):
        load_profile("nope", env={})
    bad = tmp_path / "c.toml"
    bad.write_text("[supabase-official]\ngotrue = 'a'\n")
    with pytest.raises(ContainersConfigError, match="no postgres image"):
        load_profile("supabase-official", env={"ZORA_CONTAINERS_CONFIG": str(bad)})


def test_owner_is_alive_only_while_its_process_is() -> None:
    assert runs.owner_alive(runs.owner_id())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = runs.owner_id(child.pid)
    child.wait()
    assert not runs.owner_alive(owner)  # reaped: the pid is gone (or, reused, another start time)
    assert not runs.owner_alive("another-boot:1:1")
    assert runs.owner_alive("not an owner label")  # never ours to judge: left alone


def test_no_docker_daemon_is_one_line_exit_5(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    r = subprocess.run([*CLI, *GATE, "--target", "containers", "--report-dir", str(tmp_path)], capture_output=True,
                       text=True, timeout=60, cwd=ROOT, env=env)
    assert r.returncode == 5, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zora-harness: no Docker daemon answers"), r.stderr


# -- with a Docker daemon --------------------------------------------------------------------------------------

@pytest.mark.docker
def test_official_images_cannot_be_had_here_one_line_exit_6(tmp_path: Path) -> None:
    before = set(_docker("ps", "-aq").split())
    r = subprocess.run([*CLI, *GATE, "--target", "containers", "--container-profile", "supabase-official",
                        "--report-dir", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    if r.returncode == 0:
        pytest.fail("the official images were pulled: this machine reaches a registry (run the profile for real)")
    assert r.returncode == 6, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("zora-harness: image supabase/postgres:") and "cannot be had" in last, r.stderr
    assert "Traceback" not in r.stderr
    assert set(_docker("ps", "-aq").split()) <= before


@pytest.mark.docker
@pytest.mark.slow
def test_gate_in_containers_gets_the_embedded_verdict_and_leaves_nothing(tmp_path: Path) -> None:
    verdicts = {}
    for target in ("embedded", "containers"):
        root = tmp_path / target
        t0 = time.monotonic()
        r = subprocess.run([*CLI, *GATE, "--target", target, "--report-dir", str(root)], capture_output=True,
                           text=True, timeout=600, cwd=ROOT)
        print(f"gate --target {target}: exit {r.returncode} in {time.monotonic() - t0:.1f} s")
        assert r.returncode == 0, r.stdout + r.stderr
        run_dir = _only_run_dir(root)
        verdicts[target] = _verdict(run_dir)
        if target == "containers":
            cfg = json.loads((run_dir / "config.json").read_text())
            label = cfg["containers"]["run_label"]
            assert cfg["containers"]["profile"] == "embedded-in-container"
            assert "Ryuk is off" in r.stderr and f"org.zora.run={label}" in r.stderr
            assert _left(label) == []
            assert cfg["target"]["db_url"].count("<redacted>") == 1  # the container's password is not recorded
    assert verdicts["containers"] == verdicts["embedded"]


@pytest.mark.docker
@pytest.mark.slow
def test_order_flow_scenario_in_containers_gets_the_embedded_verdict(tmp_path: Path) -> None:
    outcome = {}
    for target in ("embedded", "containers"):
        root = tmp_path / target
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "scenarios/test_order_flow.py",
                            "--target", target, "--probes", "py", "--report-dir", str(root)],
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        assert "1 passed" in r.stdout
        outcome[target] = _verdict(_only_run_dir(root))
    assert outcome["containers"] == outcome["embedded"]


_HOLDER = """
import sys
from harness.containers import ContainerStack
s = ContainerStack(log=lambda line: None).start()
print(s.run, s.target().db_url and 'ready', flush=True)
sys.stdin.read()
"""


@pytest.mark.docker
def test_kill_9_leaves_no_container_network_or_volume() -> None:
    p = subprocess.Popen([sys.executable, "-c", _HOLDER], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout is not None
        run, state = p.stdout.readline().split()
        assert state == "ready"
        ids = _docker("ps", "-q", "--filter", f"label={runs.LABEL_RUN}={run}").split()
        assert len(ids) == 1
        mode = _docker("inspect", "-f", "{{.HostConfig.NetworkMode}} {{len .Mounts}}", ids[0]).split()
        assert mode == ["host", "0"]  # host networking, never the default bridge; no volume
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    deadline = time.monotonic() + 60
    while _left(run) and time.monotonic() < deadline:  # the reaper's docker rm: bounded
        time.sleep(0.2)
    assert _left(run) == []


@pytest.mark.docker
def test_the_next_start_sweeps_what_a_dead_run_left() -> None:
    """A run whose reaper died with it: its container is removed by the next start's sweep, a live one's never."""
    import docker

    client = docker.from_env(timeout=30)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = runs.owner_id(child.pid)
    child.wait()
    image = load_profile("embedded-in-container").images["postgres"]
    mine = {runs.LABEL_RUN: "zctestlive", runs.LABEL_OWNER: runs.owner_id()}
    theirs = {runs.LABEL_RUN: "zctestdead", runs.LABEL_OWNER: dead}
    made = [client.containers.create(image, entrypoint=["sleep", "60"], network_mode="host", labels=lab)
            for lab in (mine, theirs)]
    try:
        logged: list[str] = []
        removed = runs.sweep(logged.append, client)
        assert any("zctestdead" in line and "process is gone" in line for line in logged), logged
        assert removed and _left("zctestdead") == [] and len(_left("zctestlive")) == 1
    finally:
        for c in made:
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
        client.close()


@pytest.mark.parametrize(("args", "needle"), [
    (["--fault", "netem_blackhole"], "needs --target containers"),
    (["--target", "containers", "--fault", "restart_postgres"], "needs --target embedded"),
    (["--target", "containers", "--url", "http://127.0.0.1:1"], "drop --target containers"),
    (["--target", "containers", "--container-profile", "nope"], "invalid choice"),
])
def test_containers_usage_errors_are_one_line_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    gate = [a for a in GATE if a != "--no-faults"]
    r = subprocess.run([*CLI, *gate, *args, "--report-dir", str(tmp_path)], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_locust_against_containers_is_go_and_leaves_nothing(tmp_path: Path) -> None:
    from tests.load.locust_support import locust_cmd, processes, results, start

    log = tmp_path / "locust.log"
    with processes() as procs:
        p = start(procs, locust_cmd("--headless", "-u", "9", "-r", "9", "-t", "8s", "--only-summary", "--target",
                                    "containers", "--zora-report-dir", str(tmp_path / "reports"), "--zora-rate", "2",
                                    "--zora-vendors", "1"), log)
        code = p.wait(240)
    out = log.read_text()
    assert code == 0, out[-3000:]
    res, load = results(tmp_path / "reports")
    assert res["verdict"] == "GO" and res["target"]["kind"] == "containers"
    assert load["completeness"]["delivered"] == load["completeness"]["expected"] > 0
    sidecar = (tmp_path / "reports" / "load-sidecar.log").read_text()  # the stack's side of the run: its log
    label = next(line.split("org.zora.run=")[1].split()[0] for line in sidecar.splitlines() if "org.zora.run=" in line)
    assert _left(label) == []


@pytest.mark.docker
def test_an_http_wait_strategy_works_on_host_networking() -> None:
    """What the supabase-official profile's services wait on (their HTTP health), checked with the local image:
    with host networking a container's port is the host's, and testcontainers' HttpWaitStrategy must find it."""
    from testcontainers.core.wait_strategies import HttpWaitStrategy

    from harness.containers import ContainerStack
    from stack.postgres import free_port

    cs = ContainerStack()
    port = free_port()
    # reads the request to its blank line before answering (closing on an unread request would be a reset)
    script = ("cat > /tmp/respond <<'X'\n"
              "while read -r line; do case \"$line\" in \"$(printf '\\r')\"|'') break;; esac; done\n"
              "printf 'HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok'\n"
              "X\n"
              f"exec socat TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr EXEC:'sh /tmp/respond'")
    c = cs._container(cs.local_image, entrypoint=["sh", "-c", script])
    c.waiting_for(HttpWaitStrategy(port, "/health").for_status_code(200).with_startup_timeout(30))
    try:
        c.start()
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).text == "ok"
    finally:
        c.stop()
    assert _left(cs.run) == []
