"""Browser probes, without a browser: the indicator checker against a fault proxy's ground truth (and its negative
controls), the browser criteria (what they judge, and that a run without browser probes leaves them out, saying
so), the page clock's mapping, and the one-line errors of bad input. The browser itself runs in
scenarios/test_browser.py, scenarios/test_browser_faults.py and the healthy gate (tests/harness/test_gate.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.browser import browser_unavailable, tab_names
from harness.browser_driver import page_clock
from harness.checks import analyze
from harness.checks.indicator import check_indicator, detection_ns
from harness.criteria import CriteriaError, load_criteria, parse_criteria, verdict
from harness.records import Fault, Indicator, ProbeInfo, ProbeSet, Record, RunPlan
from tests.harness.histories import MS, finished, seen, started, write

S = 1_000_000_000
CRITERIA = load_criteria()
ROOT = Path(__file__).resolve().parents[2]


def tab(name: str = "vendor-1/portal@browser", heartbeat_s: float = 2.0) -> ProbeInfo:
    return ProbeInfo(name=name, app="vendor-portal", user="vendor-1", flavour="browser", original="vendor-1/portal",
                     via="net:vendor-1/portal", heartbeat_s=heartbeat_s)


def fault(name: str, start: int, end: int, fid: str = "f1") -> list[Record]:
    return [Fault(t=start, fault_id=fid, name=name, phase="start", target="net:vendor-1/portal"),
            Fault(t=end, fault_id=fid, name=name, phase="end", target="net:vendor-1/portal")]


def shows(*states: tuple[float, str], probe: str = "vendor-1/portal@browser") -> list[Record]:
    return [Indicator(t=int(t * S), probe=probe, state=s) for t, s in states]  # type: ignore[arg-type]


def judge(records: list[Record], regime: str, max_ms: float = 5000) -> tuple[bool | None, str]:
    r = check_indicator(records, {"vendor-1/portal@browser": tab()}, regime, max_ms)
    return r.valid, r.summary


def test_an_indicator_that_follows_a_reset_is_right() -> None:
    h = [*shows((1, "Live"), (10.02, "Reconnecting"), (11.2, "Live")), *fault("reset", 10 * S, 10 * S + MS)]
    valid, summary = judge(h, "reset")
    assert valid is True, summary
    r = check_indicator(h, {"vendor-1/portal@browser": tab()}, "reset", 5000)
    [run] = r.details["runs"]
    assert run["leave_lag_ms"] == pytest.approx(20, abs=0.1) and run["back_lag_ms"] == pytest.approx(1180, abs=0.1)
    assert 70 < run["right_pct"] < 80  # wrong from the reset's end until Live again: 1.2 of 5 s


def test_negative_control_an_indicator_always_live_fails_both_regimes() -> None:
    always = shows((1, "Live"))
    valid, summary = judge([*always, *fault("reset", 10 * S, 10 * S + MS)], "reset")
    assert valid is False and "never left Live" in summary
    valid, summary = judge([*always, *fault("blackhole", 10 * S, 17 * S)], "blackhole")
    assert valid is False and "never left Live" in summary


def test_a_black_hole_is_allowed_the_clients_detection_time_and_no_more() -> None:
    allowed = (detection_ns(tab()) + 5000 * MS) / S  # two heartbeats of its policy, and the criterion's lag
    on_time = [*shows((1, "Live"), (10 + allowed - 0.1, "Reconnecting"), (10 + allowed + 0.9, "Live")),
               *fault("blackhole", 10 * S, 17 * S)]
    assert judge(on_time, "blackhole")[0] is True
    late = [*shows((1, "Live"), (10 + allowed + 0.5, "Reconnecting"), (23, "Live")), *fault("blackhole", 10 * S, 17 * S)]
    valid, summary = judge(late, "blackhole")
    assert valid is False and "left Live after" in summary


def test_an_indicator_that_never_comes_back_fails() -> None:
    h = [*shows((1, "Live"), (10.02, "Reconnecting")), *fault("reset", 10 * S, 10 * S + MS)]
    valid, summary = judge(h, "reset")
    assert valid is False and "never showed Live again" in summary
    slow = [*shows((1, "Live"), (10.02, "Reconnecting"), (16, "Live")), *fault("reset", 10 * S, 10 * S + MS)]
    valid, summary = judge(slow, "reset")
    assert valid is False and "back to Live after 5.98 s" in summary


def test_no_fault_reaching_a_browser_probe_is_unknown_not_a_pass() -> None:
    valid, summary = judge(shows((1, "Live")), "reset")
    assert valid is None and "not seen" in summary
    other = [Fault(t=S, fault_id="x", name="reset", phase="start", target="net:someone-else"),
             Fault(t=S, fault_id="x", name="reset", phase="end", target="net:someone-else")]
    assert judge([*shows((0.5, "Live")), *other], "reset")[0] is None


def _browser_run(screen_ms: float, phases: tuple[str, ...] = ("flows", "browser")) -> list[Record]:
    probes = ProbeSet(probes=(ProbeInfo(name="vendor-1/portal", app="vendor-portal", user="vendor-1", flavour="ours"),
                              tab()))
    got = seen(30 * MS, "vendor-1/portal@browser", "o1")
    shown = type(got)(**{**{f: getattr(got, f) for f in got.__dataclass_fields__ if f not in ("seq",)},
                         "screen_t": int((screen_ms) * MS)})
    return [started(), RunPlan(phases=phases), probes,
            *write(0, "customer-1/phone", 1, "e1", "o1", ["vendor-1/portal", "vendor-1/portal@browser"]),
            seen(20 * MS, "vendor-1/portal", "o1"), shown, *finished()]


def test_order_on_screen_judges_the_browser_probes_write_to_screen_and_fails_past_its_limit() -> None:
    crit = [CRITERIA.criteria[[c.id for c in CRITERIA].index(i)] for i in ("order_on_screen", "order_visible")]
    ok = verdict(analyze(_browser_run(45)), crit)
    assert ok.line("order_on_screen").result.value == pytest.approx(45)
    assert ok.line("order_visible").result.details["n"] == 1  # the protocol criterion: our probe only
    slow = verdict(analyze(_browser_run(1500)), crit)
    assert slow.line("order_on_screen").result.valid is False and slow.line("order_visible").result.valid is True


def test_a_run_without_browser_probes_leaves_their_criteria_out_and_says_so() -> None:
    v = verdict(analyze(_browser_run(45, phases=("flows",))), CRITERIA)
    assert {"order_on_screen", "status_on_screen", "indicator_reset", "indicator_blackhole"} <= set(v.skipped)


@pytest.mark.parametrize(("toml", "needle"), [
    ('[x]\ntitle="t"\nkind="latency"\nmetric="write_to_screen"\nstatistic="max"\nmax_ms=1', "needs probes"),
    ('[x]\ntitle="t"\nkind="latency"\nmetric="write_to_deliver"\nstatistic="max"\nmax_ms=1\nprobes="tv"',
     "probes must be one of"),
    ('[x]\ntitle="t"\nkind="indicator"\nregime="storm"\nmax_ms=1', "regime must be one of"),
    ('[x]\ntitle="t"\nkind="indicator"\nregime="reset"\nmax_ms=-1', "max_ms must be a positive"),
])
def test_bad_browser_criteria_are_one_line_errors(toml: str, needle: str) -> None:
    with pytest.raises(CriteriaError, match=needle) as e:
        parse_criteria(toml, "c.toml")
    assert "\n" not in str(e.value)


class _Page:
    """A page whose clock runs ``offset_ms`` behind ours and answers after ``delay_ns``."""

    def __init__(self, offset_ns: int) -> None:
        self.offset_ns = offset_ns

    def evaluate(self, expression: str) -> object:
        import time

        if expression == "self.crossOriginIsolated":
            return False
        return (time.perf_counter_ns() - self.offset_ns) / 1e6


def test_page_clock_mapping_recovers_the_offset_within_its_stated_error() -> None:
    off, err = page_clock(_Page(123_456_789_000))
    assert abs(off - 123_456_789_000) <= err and 100_000 <= err < 5 * MS


def test_tab_names_and_availability() -> None:
    assert tab_names("admin/dashboard", 3) == ["admin/dashboard@browser", "admin/dashboard@browser#2",
                                               "admin/dashboard@browser#3"]
    assert "Chromium" in (browser_unavailable(Path("/nonexistent/chromium")) or "")


def test_bad_browser_tabs_is_a_one_line_usage_error() -> None:
    out = subprocess.run([sys.executable, "-m", "harness.cli", "gate", "--browser-tabs", "9"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "--browser-tabs 9: must be from 1 to 4" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_report_shows_the_browser_figures_the_indicator_and_its_screenshots(tmp_path: Path) -> None:
    import io

    import matplotlib.pyplot as plt
    import numpy as np

    from harness.records import BrowserTab, Screenshot
    from harness.report import write_report
    from tests.harness.browser import chromium

    records = [*_browser_run(45, ("flows", "resilience", "browser"))[:-2],
               BrowserTab(t=MS, probe="vendor-1/portal@browser", clock_error_ns=1_200_000),
               *shows((0.01, "Live"), (10.02, "Reconnecting"), (11.2, "Live")), *fault("reset", 10 * S, 10 * S + MS),
               Screenshot(t=2 * S, probe="vendor-1/portal@browser", state="Live",
                          path="screenshots/vendor-1_portal@browser-Live.png"), *finished()]
    (tmp_path / "screenshots").mkdir()
    png = io.BytesIO()
    plt.imsave(png, np.full((40, 60, 3), 0.2), format="png")
    (tmp_path / "screenshots" / "vendor-1_portal@browser-Live.png").write_bytes(png.getvalue())
    a = analyze(records)
    crit = [c for c in CRITERIA if c.id in ("order_on_screen", "indicator_reset")]
    v = verdict(a, crit)
    assert v.line("indicator_reset").result.valid is True and v.flavours["browser"]["clock_error_ms"] == 1.2
    write_report(tmp_path, a, v)
    with chromium(tmp_path / "index.html") as b:
        assert b.js("document.querySelectorAll('#browser-table tbody tr').length") >= 2  # write->screen, ->frame
        assert "indicator_reset" in b.js("document.getElementById('indicator-table').textContent")
        assert "+/- 1.200 ms" in b.js("document.getElementById('browser').textContent")
        assert b.js("[...document.querySelectorAll('#browser img')].every(i => i.complete && i.naturalWidth == 60)")
        assert b.requests == [(tmp_path / "index.html").resolve().as_uri()]  # inlined: no other file, no network
        assert b.errors == []


def test_a_browser_that_will_not_start_is_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    import json

    cfg = {"chromium": "/bin/false", "run_dir": str(tmp_path), "url": "http://127.0.0.1:1", "anonKey": "a",
           "serverOffsetNs": 0, "indicator": "state", "tabs": []}
    r = subprocess.run([sys.executable, "-m", "harness.browser_driver"], input=json.dumps(cfg) + "\n", cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 1 and [x["ev"] for x in lines] == ["hello", "error"], r.stdout + r.stderr
    assert lines[1]["message"].startswith("browser driver: ") and "Traceback" not in r.stderr
