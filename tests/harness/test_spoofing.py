"""no_spoofing on hand-written histories: a spoofed announcement received fails it (and only it), none received
passes, no attempt at all is unknown; the criterion parses and can be left out of the file."""

from __future__ import annotations

import pytest

from harness.apps import SPOOFING
from harness.checks import analyze, completeness
from harness.checks.spoofing import FIX, check_spoofing
from harness.criteria import CriteriaError, parse_criteria
from harness.records import Expectation, Op, Record
from tests.harness.histories import MS, broadcast, started, write


def spoof(op_id: int, mid: str) -> list[Record]:
    exp = Expectation(eid=f"announcement:broadcast:{mid}", source="broadcast", subject="announcement",
                      match={"id": mid}, deliver_to=(), group=SPOOFING)
    return [Op(t=op_id * MS, process="customer-2/phone", type="invoke", f="spoof_announcement_ws", op_id=op_id),
            Op(t=op_id * MS + 1, process="customer-2/phone", type="ok", f="spoof_announcement_ws", op_id=op_id,
               expect=(exp,))]


def test_a_received_spoof_fails_no_spoofing_and_not_no_leaks() -> None:
    h = [started(), *write(0, "driver", 9, "o1", "r1", ["vendor"]), *spoof(1, "s1"), *spoof(2, "s2"),
         broadcast(5 * MS, "vendor", "announcement", id="s1"), broadcast(5 * MS, "admin", "announcement", id="s1")]
    a = analyze(h)
    r = check_spoofing(a)
    assert r.valid is False and r.value == 2 and FIX in r.summary and r.details["probes"] == ["admin", "vendor"]
    c = completeness(a)
    assert c.details["counts"]["unexpected"] == 0  # judged by no_spoofing, not counted as leaks


def test_spoofs_that_reach_nobody_pass_and_no_attempt_is_unknown() -> None:
    a = analyze([started(), *spoof(1, "s1"), broadcast(5 * MS, "vendor", "announcement", id="other")])
    assert check_spoofing(a).valid is True
    assert check_spoofing(analyze([started()])).valid is None


def test_the_criterion_parses_and_refuses_unknown_keys() -> None:
    cs = parse_criteria('[no_spoofing]\ntitle = "t"\nkind = "spoofing"\n')
    assert [c.kind for c in cs] == ["spoofing"]
    with pytest.raises(CriteriaError, match="unknown key"):
        parse_criteria('[no_spoofing]\ntitle = "t"\nkind = "spoofing"\nmax_ms = 5\n')
