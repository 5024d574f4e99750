"""The history file: typed records, append-only, one whole line per record, readable after a crash, and every
line it cannot read reported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.clock import Clock, parse_wall
from harness.history import History, read_history
from harness.records import Change, Expectation, Fault, Op, RecordError, decode, encode


def test_records_carry_monotonic_time_sequence_and_round_trip(tmp_path: Path) -> None:
    exp = Expectation(eid="e1", source="change", subject="orders", type="INSERT", match={"id": "1"},
                      deliver_to=("vendor-1/portal",), group="order_visible")
    with History(tmp_path / "h.jsonl") as h:
        h.append(Op(process="customer-1", type="invoke", f="place_order", op_id=1))
        h.append(Op(process="customer-1", type="ok", f="place_order", op_id=1, expect=(exp,)))
        h.append(Change(probe="vendor-1", channel="realtime:x", table="orders", type="INSERT", record={"id": "1"},
                        t=123))
        h.append(Fault(fault_id="f1", name="reset", phase="start"))
    loaded = read_history(tmp_path / "h.jsonl")
    assert loaded.problems == [] and [r.seq for r in loaded.records] == [0, 1, 2, 3]
    op, ok, change, fault = loaded.records
    assert isinstance(ok, Op) and ok.expect == (exp,)  # nested records come back as what was written
    assert isinstance(change, Change) and change.t == 123  # a probe's own stamp is kept
    assert 0 < op.t < ok.t < fault.t  # stamped on append, on the monotonic clock
    assert isinstance(fault, Fault) and fault.phase == "start"


def test_writers_cannot_misspell_a_field() -> None:
    with pytest.raises(TypeError):
        Change(probe="p", channel="c", table="orders", type="INSERT", recrod={})  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"kind":"op","seq":0,"t":1}', "op record: process: Field required"),
        ('{"kind":"change","probe":"p","channel":"c","table":"t","type":"INSERT","recrod":{}}', "recrod: unknown key"),
        ('{"kind":"change","probe":"p","channel":"c","table":"t","type":"INSERT","commit_ns":"12"}',
         "commit_ns: Input should be a valid integer"),
        ('{"kind":"frobnicate"}', "unknown record kind 'frobnicate'"),
        ('{"seq":1}', "no record kind"),
        ("[1, 2]", "not a JSON object"),
        ('{"kind": "op", "proc', "not JSON"),
    ],
)
def test_a_malformed_record_is_reported_never_defaulted(line: str, needle: str) -> None:
    with pytest.raises(RecordError, match=needle):
        decode(line)


def test_unreadable_lines_in_the_middle_are_malformed_a_torn_tail_is_not(tmp_path: Path) -> None:
    good = encode(Op(process="c", type="invoke", f="x", op_id=1), 0, 5)
    p = tmp_path / "h.jsonl"
    p.write_text(f'{good}\n{{"kind":"op","op_id":"one"}}\n{good}\n{{"kind": "ch')  # no newline: torn
    loaded = read_history(p)
    assert len(loaded.records) == 2 and loaded.torn_tail
    assert [x.line for x in loaded.problems] == [2, 4]
    assert [x.line for x in loaded.malformed] == [2]
    p.write_text(f'{good}\n{{"kind": "ch\n')  # a bad last line that ends with a newline was not torn by a crash
    loaded = read_history(p)
    assert not loaded.torn_tail and [x.line for x in loaded.malformed] == [2]


def test_crash_keeps_everything_written_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    script = textwrap.dedent(f"""
        import os
        from harness.history import History
        from harness.records import Change
        h = History({str(path)!r})
        for i in range(100):
            h.append(Change(probe="p", channel="c", table="orders", type="INSERT", record={{"i": i}}))
        os._exit(1)  # no close, no flush at exit
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], check=False)
    assert r.returncode == 1  # it died the way the script says, not of an import error
    with path.open("a") as f:
        f.write('{"seq": 100, "kind": "ch')  # a line torn by a crash mid-write
    loaded = read_history(path)
    assert len(loaded.records) == 100 and loaded.torn_tail and loaded.malformed == []
    assert [r.record for r in loaded.records if isinstance(r, Change)] == [{"i": i} for i in range(100)]


def test_measure_and_wall_conversion() -> None:
    c = Clock()
    with c.measure() as span:
        time.sleep(0.02)
    assert 15 <= span.ms < 2000  # it measured the sleep, on the monotonic clock
    assert c.wall_to_run(c.wall_origin + 5) == 5
    assert parse_wall("2026-11-24T21:50:03.655679Z") % 1_000_000_000 == 655_679_000
    assert parse_wall("2026-11-24T21:50:03+00:00") % 1_000_000_000 == 0
