"""The load's pure parts on hand-made data: SeqSet, HdrHistogram merging, completeness without a record per delivery,
the verdict through the gate's own criteria, quotas."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from harness.checks import analyze
from harness.criteria import load_criteria, verdict
from harness.load import quotas
from harness.load.hdr import LatencyBook, figures, new_histogram
from harness.load.judging import LoadEvidence, count_deliveries
from harness.load.seqset import SeqSet
from harness.load.tally import Merged, Stream, Tally, Watch
from harness.records import RunFinished, RunPlan, RunStarted

S = 1_000_000_000


@given(st.lists(st.integers(min_value=1, max_value=200), max_size=300))
def test_seqset_is_the_set_of_what_it_saw(ns: list[int]) -> None:
    s = SeqSet.of(ns)
    assert len(s) == len(set(ns)) and all(n in s for n in ns)
    assert s.duplicates == len(ns) - len(set(ns))
    assert s.out_of_order == sum(1 for i, n in enumerate(ns) if ns[:i] and n < max(ns[:i]))
    assert all(b + 1 < c for (_, b), (c, _) in zip(s.ranges, s.ranges[1:], strict=False))  # disjoint, not adjacent
    assert s.count(50, 120) == len({n for n in ns if 50 <= n <= 120})
    back = SeqSet.from_wire(s.to_wire())
    assert back.ranges == s.ranges and back.duplicates == s.duplicates and back.out_of_order == s.out_of_order


def test_an_in_order_stream_stays_one_range() -> None:
    s = SeqSet.of(range(1, 100_001))
    assert s.ranges == [[1, 100_000]] and len(s.to_wire()) == 4


def test_merged_histograms_are_the_histogram_of_the_union() -> None:
    rng = random.Random(3)
    parts = [[rng.randint(1_000, 900_000_000) for _ in range(2000)] for _ in range(3)]
    books = []
    for part in parts:
        b = LatencyBook()
        for ns in part:
            b.record_ns("status_update", "write_to_deliver", ns)
        books.append(b)
    master = LatencyBook()
    for b in books:
        master.merge(b.take())  # what a worker sends: encoded, then reset
    assert all(not b.hists["status_update|write_to_deliver"].get_total_count() for b in books)
    union = new_histogram()
    for ns in (x for part in parts for x in part):
        union.record_value(ns // 1000)
    got = master.get("status_update", "write_to_deliver")
    assert got.equals(union) and figures(got) == figures(union)
    assert master.get("*", "write_to_deliver").get_total_count() == 6000


def _watch(sid: str, app: str, screens: tuple[str, ...], viewer: dict[str, Any], seen: dict[str, SeqSet],
           live: int = 10 * S, end: int = 100 * S) -> Watch:
    return Watch(sid, app, "u", screens, viewer, live_ns=live, end_ns=end, seen=seen)


def _merged() -> Merged:
    """One customer's orders at shop v1 (seqs 1-20, one a second from 20 s); seq 5 failed."""
    m = Merged()
    s = Stream("p1", "place_order", "orders", "INSERT", "order_visible", {"user_id": "c1", "vendor_id": "v1"})
    s.sent.extend((20 + i) * S for i in range(20))
    s.bad.add(5)
    m.streams["p1"] = s
    admin = {"uid": "a", "role": "admin", "vendor_id": None}
    v1 = {"uid": "vu1", "role": "vendor", "vendor_id": "v1"}
    v2 = {"uid": "vu2", "role": "vendor", "vendor_id": "v2"}
    # the admin saw everything but 5 (failed) and 7 (lost: 8 came); twice 9
    adm = SeqSet.of([1, 2, 3, 4, 6, 8, 9, 9, *range(10, 19)])
    m.watches["a"] = _watch("a", "admin-dashboard", ("dashboard",), admin, {"p1": adm})
    m.watches["v1"] = _watch("v1", "vendor-portal", ("session",), v1, {"p1": SeqSet.of(range(1, 21))})
    m.watches["v2"] = _watch("v2", "vendor-portal", ("session",), v2, {"p1": SeqSet.of([3])})  # a leak
    # a subscriber that went live late: owes only writes sent from 1 s after it did (seqs 12..)
    m.watches["late"] = _watch("late", "admin-dashboard", ("dashboard",), admin, {"p1": SeqSet.of(range(12, 21))},
                               live=30 * S)
    return m


def test_completeness_counts_as_the_gate_counts() -> None:
    t = count_deliveries(_merged(), settle_ns=3 * S)  # writes owed up to 97 s: all of them
    c = t["counts"]
    # admin: 19 owed (20 less the failed one), 16 seen of them, 7 lost, 19 and 20 unseen; vendor 1: 19 of 19;
    # the late one: 12..20 = 9 owed, 9 seen
    assert t["expected"] == 19 + 19 + 9
    assert (c["delivered"], c["lost"], c["unseen"], c["duplicated"], c["unexpected"]) == (16 + 19 + 9, 1, 2, 1, 1)
    assert t["per_app"]["vendor-portal"]["unexpected"] == 1 and t["pairs"] == 3
    assert c["delivered"] + c["lost"] + c["unseen"] == t["expected"]


def test_a_fault_window_is_not_judged_for_live_delivery() -> None:
    t = count_deliveries(_merged(), settle_ns=3 * S, faults=[(26 * S, 28 * S)])  # seqs 7, 8, 9 sent in it
    assert t["counts"]["lost"] == 0 and t["expected"] == 16 + 16 + 9


def _analysis() -> Any:
    return analyze([RunStarted(run_id="zr00000000", format=2, target={"kind": "embedded"}, wall_origin=0),
                    RunPlan(phases=("flows",)), RunFinished(outcome="completed")])


def test_the_verdict_is_the_gates_on_load_evidence() -> None:
    crit = load_criteria()
    m = _merged()
    for ms in (5, 8, 700):
        m.book.record_ns("order_visible", "write_to_deliver", ms * 1_000_000)
        m.book.record_ns("order_visible", "commit_to_deliver", ms * 1_000_000)
    v = verdict(_analysis(), crit, LoadEvidence(m, settle_ns=3 * S))
    lines = {ln.criterion.id: ln.result for ln in v.lines}
    assert not v.go
    assert lines["order_visible"].valid is True and lines["order_visible"].value == 700.415  # max, 3 digits
    assert lines["realtime_latency"].valid is False  # p99 of three samples is the 700 ms one
    assert lines["delivery"].valid is False and lines["no_leaks"].valid is False
    assert lines["ordering"].valid is True
    assert {"cart_sync", "notifications", "broadcast_presence", "offline_sync"} <= set(v.skipped)


def test_a_healthy_load_is_go() -> None:
    m = Merged()
    s = Stream("p1", "set_status", "orders", "UPDATE", "status_update", {"user_id": "c1", "vendor_id": "v1"})
    s.sent.extend((20 + i) * S for i in range(10))
    m.streams["p1"] = s
    m.watches["c"] = _watch("c", "customer-app", ("session",), {"uid": "c1", "role": "customer", "vendor_id": None},
                            {"p1": SeqSet.of(range(1, 11))})
    for _ in range(10):
        m.book.record_ns("status_update", "write_to_deliver", 4_000_000)
        m.book.record_ns("status_update", "commit_to_deliver", 3_000_000)
    v = verdict(_analysis(), load_criteria(), LoadEvidence(m, settle_ns=3 * S))
    assert v.go, [ln.result.summary for ln in v.failing()]


def test_a_worker_report_round_trips() -> None:
    t = Tally()
    s = t.stream(Stream("p", "place_order", "orders", "INSERT", "order_visible", {"user_id": "c", "vendor_id": "v"}))
    w = t.watch(Watch("s", "admin-dashboard", "admin", ("dashboard",), {"uid": "a", "role": "admin"}))
    s.sent.extend([1, 2, 3])
    w.seen["p"] = SeqSet.of([1, 2])
    t.book.record_ns("order_visible", "write_to_deliver", 5_000_000)
    m = Merged()
    m.add("w0", t.take(), 0)
    s.sent.append(4)
    w.seen["p"].add(3)
    m.add("w0", t.take(), 1)  # the second report carries only the new send time and no histogram twice
    assert list(m.streams["p"].sent) == [1, 2, 3, 4] and len(m.watches["s"].seen["p"]) == 3
    assert m.book.count() == 1 and m.source_of["s"] == "w0"


def test_quotas_of_a_hosted_plan() -> None:
    assert "500 concurrent clients" in quotas.describe("pro")
    over = quotas.over("pro", quotas.Load(clients=800, messages_per_s=100, joins_per_s=50, channels_per_client=7))
    assert over == ["800 subscribers > 500 concurrent clients"]
    assert quotas.over("team", quotas.Load(800, 100, 50, 7)) == []
