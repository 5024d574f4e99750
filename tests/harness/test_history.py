"""The history file: append-only, one whole line per record, readable after a crash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from harness.clock import Clock, parse_wall
from harness.history import History, read_history


def test_records_carry_monotonic_time_and_sequence(tmp_path: Path) -> None:
    with History(tmp_path / "h.jsonl") as h:
        h.op("customer-1", "invoke", "place_order", op_id=1)
        h.obs("vendor-1", "change", table="orders")
        h.fault("reset", "start")
    recs, skipped = read_history(tmp_path / "h.jsonl")
    assert skipped == 0 and [r["seq"] for r in recs] == [0, 1, 2]
    assert recs[0]["t"] <= recs[1]["t"] <= recs[2]["t"]
    assert [r["kind"] for r in recs] == ["op", "obs", "fault"]


def test_crash_keeps_everything_written_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    script = textwrap.dedent(f"""
        import os
        from harness.history import History
        h = History({str(path)!r})
        for i in range(100):
            h.obs("p", "change", i=i)
        os._exit(1)  # no close, no flush at exit
    """)
    subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], check=False)
    with path.open("a") as f:
        f.write('{"seq": 100, "kind": "ob')  # a line torn by a crash mid-write
    recs, skipped = read_history(path)
    assert len(recs) == 100 and skipped == 1
    assert os.path.getsize(path) > 0


def test_measure_and_wall_conversion() -> None:
    c = Clock()
    with c.measure() as span:
        sum(range(1000))
    assert span.end >= span.start and span.ms >= 0
    assert c.wall_to_run(c.wall_origin + 5) == 5
    assert parse_wall("2026-11-24T21:50:03.655679Z") % 1_000_000_000 == 655_679_000
    assert parse_wall("2026-11-24T21:50:03+00:00") % 1_000_000_000 == 0
