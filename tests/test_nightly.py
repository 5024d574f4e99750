"""``zora-harness nightly``: from a clean clone against the embedded stack it exits 0 and leaves index.html and the
Markdown summary (appended to $GITHUB_STEP_SUMMARY); the load profile is run when ``load/`` exposes one and
skipped with a note otherwise, and its outcome reaches the exit code; the example workflow passes keys as
environment variables, never as flags."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.report_scale import synthetic_run
from harness import nightly as nightly_mod
from harness.criteria import Verdict, load_criteria
from harness.judge import judge
from tests.harness.browser import chromium

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FakeGate:
    verdict: Verdict
    run_dir: Path


def args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(no_load=False, quiet=True, **kw)


@pytest.fixture
def gate_result(tmp_path: Path) -> FakeGate:
    syn = synthetic_run(tmp_path / "runs", 600)
    return FakeGate(judge(syn.dir / "history.jsonl", load_criteria()).verdict, syn.dir)


def fake_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    """A project root whose load/ package has the body given; imported fresh."""
    root = tmp_path / "project"
    (root / "load").mkdir(parents=True)
    (root / "load" / "__init__.py").write_text(body)
    monkeypatch.delitem(sys.modules, "load", raising=False)
    monkeypatch.setattr(nightly_mod, "ROOT", root)
    monkeypatch.setattr(sys, "path", [str(root), *sys.path])
    importlib.invalidate_caches()
    return root


def no_load_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(nightly_mod, "ROOT", tmp_path / "empty-project")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "load" else real(name, *a))


def test_without_load_the_profile_is_skipped_with_a_note_and_the_summary_is_posted(
        gate_result: FakeGate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_load_package(monkeypatch, tmp_path)
    step = tmp_path / "step-summary.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    code = nightly_mod.nightly(args(), lambda a: (0 if gate_result.verdict.go else 1, gate_result), lambda a: None)
    assert code == (0 if gate_result.verdict.go else 1)
    summary = (gate_result.run_dir / "summary.md").read_text()
    assert summary.startswith(f"## Zora nightly: {gate_result.verdict.label}")
    assert "| realtime_latency |" in summary and "p99 commit->deliver <= 500 ms" in summary
    assert "load profile skipped: there is no load/ package yet" in summary
    assert step.read_text() == "earlier step\n" + summary + "\n"


@pytest.mark.parametrize(("body", "code", "note"), [
    ("def nightly_profile(run_dir, target, quiet):\n    run_dir.mkdir(parents=True)\n    return 0\n", 0,
     "load profile (nightly_profile): GO"),
    ("def nightly_profile(run_dir, target, quiet):\n    return 1\n", 1, "load profile (nightly_profile): NO-GO"),
    ("def nightly_profile(run_dir, target, quiet):\n    raise RuntimeError('no workers')\n", 4,
     "load profile failed: RuntimeError: no workers"),
    ("X = 1\n", 0, "load profile skipped: load/ exposes no nightly_profile()"),
    ("raise ImportError('half written')\n", 0, "load profile skipped: importing load/ failed"),
])
def test_the_load_profile_and_the_exit_code(gate_result: FakeGate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            body: str, code: int, note: str) -> None:
    fake_load(tmp_path, monkeypatch, body)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    got = nightly_mod.nightly(args(), lambda a: (0, gate_result), lambda a: None)  # a GO gate, whatever the run says
    assert got == code
    assert note in (gate_result.run_dir / "summary.md").read_text()


def test_a_no_go_gate_is_the_exit_code_and_skips_the_load(gate_result: FakeGate, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake_load(tmp_path, monkeypatch, "def nightly_profile(run_dir, target, quiet):\n    raise AssertionError\n")
    assert nightly_mod.nightly(args(), lambda a: (1, gate_result), lambda a: None) == 1
    assert "load profile skipped: the gate was NO-GO" in (gate_result.run_dir / "summary.md").read_text()


def test_a_gate_without_a_verdict_says_so_on_the_job_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    step = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    assert nightly_mod.nightly(args(), lambda a: (3, None), lambda a: None) == 3
    assert "no verdict" in step.read_text() and "exit 3" in step.read_text()


@pytest.mark.slow
def test_nightly_from_a_clean_clone_against_the_embedded_stack(tmp_path: Path) -> None:
    """A clone of the committed tree (no reports/, no node_modules; this environment's packages) runs
    `zora-harness nightly --no-faults --rounds 1 --probes py` (the fault phase left out to stay short: the gate's
    own tests run it), then the ci load profile of load/ (`locust -f load --zora-profile ci` in a child process):
    exit 0, index.html and summary.md in the run directory, the load run's verdict files under load/, the summary
    on the job's page; the report opens in Chromium, offline."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True, timeout=120)
    assert not (clone / "reports").exists() or not any(p.name != ".gitkeep" for p in (clone / "reports").iterdir())
    step = tmp_path / "github-step-summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(step), "PYTHONPATH": str(clone)}
    r = subprocess.run([sys.executable, "-m", "harness.cli", "nightly", "--no-faults", "--rounds", "1", "--probes", "py",
                        "--quiet", "--report-dir", str(tmp_path / "runs")], cwd=clone, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{clone}/harness" in subprocess.run(
        [sys.executable, "-c", "import harness.nightly as n; print(n.__file__)"], cwd=clone, env=env,
        capture_output=True, text=True, timeout=60).stdout  # the clone's code ran, not this worktree's
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1
    run = runs[0]
    for name in ("index.html", "summary.md", "results.json", "verdict.md", "junit.xml", "history.jsonl"):
        assert (run / name).is_file(), name
    summary = (run / "summary.md").read_text()
    assert summary.startswith("## Zora nightly: GO") and "Not tested in this run: reconnect_reset" in summary
    assert "load profile (nightly_profile): GO" in summary
    [load_run] = [p for p in (run / "load").iterdir() if p.is_dir()]
    assert json.loads((load_run / "results.json").read_text())["verdict"] == "GO"
    assert (load_run / "load.json").is_file() and (run / "load" / "locust.html").is_file()
    assert step.read_text().strip() == summary.strip()
    assert "GO  (target: embedded" in r.stdout and "summary.md" in r.stderr
    with chromium(run / "index.html") as b:
        assert b.js("document.getElementById('verdict-label').textContent") == "GO"
        assert b.js("document.querySelectorAll('figure img').length") >= 3
        assert b.requests == [(run / "index.html").resolve().as_uri()] and b.errors == []


def test_the_example_workflow_keeps_keys_out_of_flags() -> None:
    text = (ROOT / "docs" / "ci" / "nightly.yml").read_text()
    wf = yaml.safe_load(text)
    assert "schedule" in wf[True] or "schedule" in wf.get("on", {})  # YAML 1.1 reads the key `on` as True
    steps = wf["jobs"]["nightly"]["steps"]
    run = next(s for s in steps if "zora-harness nightly" in s.get("run", ""))
    for var in ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY"):
        assert run["env"][var] == f"${{{{ secrets.{var} }}}}"
    for flag in ("--url", "--anon-key", "--service-key", "--db-url", "--env-file"):
        assert flag not in text
    assert any("zora-harness trend" in s.get("run", "") and "--fail-on" in s["run"] for s in steps)
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
    assert "bash .ci/setup" in text
