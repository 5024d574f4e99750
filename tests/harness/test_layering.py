"""The layering, checked: judging a stored run needs nothing of the runtime (no HTTP client, no database
driver, no embedded stack), and the harness's Phoenix codec does not come from the stack's server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("httpx", "psycopg", "stack", "supabase", "postgrest", "websockets", "harness.actors", "harness.lifecycle")


def imported_by(*modules: str) -> list[str]:
    code = (f"import sys\nfor m in {list(modules)!r}: __import__(m)\n"
            "import json; print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return list(json.loads(out.stdout))


def test_judging_and_reporting_import_nothing_of_the_runtime() -> None:
    loaded = imported_by("harness.criteria", "harness.report", "harness.judge", "harness.checks", "harness.history",
                         "harness.report.frames", "harness.report.charts", "harness.report.html",
                         "harness.report.trend", "harness.report.text")
    assert "harness.criteria" in loaded and "harness.report.trend" in loaded  # the probe itself works
    assert "pandas" in loaded  # the report's tables
    bad = [m for m in loaded if any(m == r or m.startswith(r + ".") for r in RUNTIME)]
    assert bad == []


def test_the_harness_client_protocol_does_not_import_the_stack() -> None:
    loaded = imported_by("harness.phoenix.protocol", "harness.phoenix.codec")
    assert "harness.phoenix.codec" in loaded
    assert [m for m in loaded if m == "stack" or m.startswith("stack.")] == []
