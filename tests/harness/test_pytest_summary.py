"""``pytest scenarios`` shows the figures: a terminal summary with one table per scenario module (its criteria, the
measured figure, the limit, the verdict) and where each module's run directory and index.html are; a failing
criterion reads FAIL there. The table's rows come from ``terminal_table``, tested here on a judged history."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness.checks import analyze
from harness.criteria import load_criteria, verdict
from harness.report.text import terminal_table
from tests.harness.histories import MS, finished, probes, seen, started, write

ROOT = Path(__file__).resolve().parents[2]


def test_scenario_modules_print_their_criteria_and_where_their_report_is(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pytest", "scenarios/test_cart_sync.py", "scenarios/test_order_flow.py",
                        "--probes", "py", "-q", "-p", "no:cacheprovider", "--report-dir", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "zora: criteria per scenario module" in out
    blocks = re.findall(r"^(test_\w+): pass \((\d+) criteria checked\)  (\S+index\.html)$", out, flags=re.M)
    assert [(m, n) for m, n, _ in blocks] == [("test_cart_sync", "3"), ("test_order_flow", "5")]
    for _, _, html in blocks:
        assert Path(html).is_file() and Path(html).parent.parent == tmp_path
    assert re.search(r"^ +criterion +measured +limit +verdict$", out, flags=re.M)
    assert re.search(r"^ +cart_sync +max [\d.]+ ms +max write->deliver <= 2000 ms +pass$", out, flags=re.M), out
    assert re.search(r"^ +order_visible +max [\d.]+ ms +max write->deliver <= 1000 ms +pass$", out, flags=re.M), out
    assert re.search(r"^ +cleanup +0 +- +pass$", out, flags=re.M)
    assert "status_everywhere" not in out  # not checked by these modules: not in their tables


def test_a_failing_criterion_reads_fail_in_the_table() -> None:
    recs = [started(), probes(("vendor", "ours", None)),
            *write(0, "c", 1, "e1", "o1", ["vendor"]), seen(1500 * MS, "vendor", "o1"), *finished()]
    v = verdict(analyze(recs), load_criteria())
    rows = terminal_table(v, {"order_visible", "delivery"})
    assert rows[0].split() == ["criterion", "measured", "limit", "verdict"]
    line = next(r for r in rows if r.startswith("order_visible"))
    assert line.endswith("FAIL") and "max 1500.0 ms" in line and "<= 1000 ms" in line
    assert next(r for r in rows if r.startswith("delivery")).endswith("pass")
    assert not any(r.startswith("cart_sync") for r in rows)
