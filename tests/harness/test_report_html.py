"""``index.html`` as people see it: opened from file:// in real Chromium (Debian's, through Playwright), it renders
every chart and table, logs no error, makes no request, fits a phone's width and prints without its navigation;
a screenshot is kept in the run directory as ``report.png``. Secrets never reach it. ``zora-harness report``'s
usage errors are one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report_scale import synthetic_run
from harness.criteria import load_criteria
from harness.judge import judge
from harness.report import VERDICT_FILES, write_report
from tests.harness.browser import chromium

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "harness.cli"]
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ"
CHARTS = ("latency_cdf", "latency_over_time", "reconnection", "probe_flavours")
TABLES = ("criteria-table", "latency-table", "delivery-matrix", "delivery-classes", "delivery-probes",
          "reconnection-table", "recoveries-table", "flavour-table", "faults-table", "environment-table", "config-table")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A NO-GO run (two leaks) with faults, reconnections, refetches and both probe flavours, whose config.json
    carries secrets a careless writer could have left (the report must redact them again); reported by the CLI."""
    syn = synthetic_run(tmp_path_factory.mktemp("report"), 8_000, leaks=2)
    cfg = json.loads((syn.dir / "config.json").read_text())
    cfg["target"]["service_role_key"] = JWT
    cfg["extra"] = {"api_token": "tok-3f9a-never-shown", "note": f"bearer {JWT}",
                    "dsn": "postgresql://postgres:hunter2@127.0.0.1:5432/postgres"}
    (syn.dir / "config.json").write_text(json.dumps(cfg))
    r = cli("report", str(syn.dir))
    assert r.returncode == 0, r.stderr
    assert (syn.dir / "index.html").is_file()
    assert r.stdout.strip().endswith("(NO-GO)")
    return syn.dir


def test_report_renders_every_chart_and_table_in_chromium_offline(run_dir: Path) -> None:
    page = run_dir / "index.html"
    with chromium(page) as b:
        assert b.js("document.getElementById('verdict-label').textContent") == "NO-GO"
        assert "no_leaks" in b.js("document.getElementById('why').textContent")
        for chart in CHARTS:
            size = b.js(f"(() => {{ const i = document.querySelector('#chart-{chart} img');"
                        f" return i && i.complete ? [i.naturalWidth, i.naturalHeight] : null }})()")
            assert size and size[0] > 300 and size[1] > 100, chart
        for table in TABLES:
            rows = b.js(f"document.querySelectorAll('#{table} tbody tr').length")
            assert rows >= 1, table
        v = judge(run_dir / "history.jsonl", load_criteria()).verdict
        assert b.js("document.querySelectorAll('#criteria-table tbody tr').length") == len(v.lines) + len(v.skipped)
        b.page.screenshot(path=str(run_dir / "report.png"), full_page=True)
        assert b.requests == [page.resolve().as_uri()]  # the page itself; no network, no other file
        assert [m for m in b.console if m[0] in ("error", "warning")] == []
        assert b.errors == []
    assert (run_dir / "report.png").stat().st_size > 50_000


def test_report_fits_a_phone_and_prints_without_navigation(run_dir: Path) -> None:
    with chromium(run_dir / "index.html", width=390, height=844) as b:
        assert b.js("document.documentElement.scrollWidth") <= b.js("window.innerWidth")  # wide tables scroll inside
        widest = b.js("Math.max(...[...document.querySelectorAll('figure img')].map(i => i.getBoundingClientRect()"
                      ".right))")
        assert widest <= 390
        b.page.emulate_media(media="print")
        assert b.js("getComputedStyle(document.querySelector('nav')).display") == "none"
        b.js("window.dispatchEvent(new Event('beforeprint'))")
        assert b.js("[...document.querySelectorAll('details')].every(d => d.open)")
        assert len(b.page.pdf()) > 10_000
        assert b.errors == []


def test_no_secret_reaches_the_page(run_dir: Path) -> None:
    text = (run_dir / "index.html").read_text()
    for secret in (JWT, "tok-3f9a-never-shown", "hunter2", "c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ"):
        assert secret not in text
    assert "&lt;redacted&gt;" in text


def test_write_report_writes_every_verdict_file(tmp_path: Path) -> None:
    syn = synthetic_run(tmp_path, 2_000)
    j = judge(syn.dir / "history.jsonl", load_criteria())
    write_report(syn.dir, j.analysis, j.verdict)
    for name in (*VERDICT_FILES, "charts/reconnection.png"):
        assert (syn.dir / name).is_file(), name
    html = (syn.dir / "index.html").read_text()
    assert "charts/" in html and 'src="data:image/png;base64,' in html
    assert "http://" not in html.replace("http://127.0.0.1:9", "")  # nothing to fetch: only the target's own URL


@pytest.mark.parametrize(("args", "needle"), [
    ([], "the following arguments are required: RUN"),
    (["{tmp}"], "no history.jsonl there"),
    (["{tmp}/nowhere"], "no history.jsonl there"),
])
def test_report_usage_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    r = cli("report", *[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_report_of_a_run_without_criteria_asks_for_them(tmp_path: Path) -> None:
    syn = synthetic_run(tmp_path, 500)
    (syn.dir / "criteria.toml").unlink()
    r = cli("report", str(syn.dir))
    assert r.returncode == 2 and "pass --criteria FILE" in r.stderr
    r = cli("report", str(syn.dir), "--criteria", str(ROOT / "fixtures" / "criteria.toml"))
    assert r.returncode == 0, r.stderr
    assert (syn.dir / "index.html").is_file()
