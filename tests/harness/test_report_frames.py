"""The report's frames agree with the verdict (one computation, two views), and the analysis's indexes (expected
events by the values they match on; refetched rows by id) decide exactly what a scan of everything would."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.report_scale import synthetic_run
from harness.checks import analyze, completeness
from harness.checks.analysis import Analysis
from harness.criteria import load_criteria, verdict
from harness.history import read_history
from harness.records import Change, Expectation, Op, Record
from harness.report import frames
from harness.report.frames import nearest_rank
from tests.harness.histories import MS, finished, probes, started, write

CRITERIA = load_criteria()


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Analysis, frames.Frames]:
    syn = synthetic_run(tmp_path_factory.mktemp("frames"), 6_000, leaks=3)
    a = analyze(read_history(syn.dir / "history.jsonl").records)
    v = verdict(a, CRITERIA)
    deadlines = {ln.criterion.events: ln.criterion.max_ms for ln in v.lines
                 if ln.criterion.kind == "latency" and ln.criterion.events != "*"}
    return a, frames.build(a, deadlines)


def test_latency_columns_give_the_verdicts_own_figures(judged: tuple[Analysis, frames.Frames]) -> None:
    a, f = judged
    v = verdict(a, CRITERIA)
    lat = [ln for ln in v.lines if ln.criterion.kind == "latency"]
    assert lat
    for ln in lat:
        c = ln.criterion
        s = f.latencies(c.events, c.metric)
        assert sorted(s.tolist()) == sorted(a.samples(None if c.events == "*" else c.events, c.metric))
        q = 100 if c.statistic == "max" else float(c.statistic[1:])
        assert nearest_rank(s, q) == ln.result.value, c.id


def test_delivery_classes_are_the_completeness_checkers_counts(judged: tuple[Analysis, frames.Frames]) -> None:
    a, f = judged
    counts = completeness(a, {"order_visible": 1000.0}).details["counts"]
    k = frames.classes(f)
    for cls in ("delivered", "recovered", "lost", "unseen", "unexpected", "duplicated"):
        assert k[cls] == counts[cls], cls
    assert k["recovered"] > 0 and k["unexpected"] == 3  # the synthetic run's faults and leaks are there
    m = frames.matrix(f)
    assert int(m["expected"].sum()) == len(a.deliveries)
    assert int(m["leaks"].sum()) == 3
    assert int((m["delivered"] + m["recovered"] + m["missed"]).sum()) == len(a.deliveries)


def test_flavours_and_twin_lag_match_the_analysis(judged: tuple[Analysis, frames.Frames]) -> None:
    a, f = judged
    want = a.flavours()
    rows = {r["flavour"]: r for r in frames.flavour_table(f).to_dict("records")}
    for name in ("ours", "supabase-js"):
        assert rows[name]["expected"] == want[name]["expected"]
        assert rows[name]["delivered"] == want[name]["delivered"]
        assert rows[name]["p99"] == pytest.approx(want[name]["p99"])
    gaps = frames.twin_gaps(f)
    assert len(gaps) == want["twin_minus_original_ms"]["n"]
    assert nearest_rank(gaps, 50) == pytest.approx(want["twin_minus_original_ms"]["p50"])


def test_recoveries_and_faults_frames(judged: tuple[Analysis, frames.Frames]) -> None:
    a, f = judged
    assert len(f.recoveries) == len(a.recoveries()) > 0
    assert set(f.faults["regime"]) == {"reset", "blackhole"}
    per = frames.per_probe(f)
    assert int(per["received"].sum()) == len(a.observations)
    assert int(per["foreign"].sum()) == a.foreign


def _brute(records: list[Record]) -> dict[tuple[str, str], int]:
    """Every observation matched against every expectation (what analyze's index must reproduce)."""
    exps = [(e, r) for r in records if isinstance(r, Op) and r.type == "ok" for e in r.expect]
    seen_by: dict[tuple[str, str], int] = {}
    for o in records:
        if not isinstance(o, Change):
            continue
        for e, _ in exps:
            if e.matches(o) and o.probe in e.deliver_to:
                seen_by[(e.eid, o.probe)] = seen_by.get((e.eid, o.probe), 0) + 1
    return seen_by


@pytest.mark.parametrize("seed", range(5))
def test_the_expectation_index_decides_as_a_scan_would(seed: int) -> None:
    """Expectations matching on different columns (id; user and URL), values that collide as text, a None
    column, observations of other tables: the index finds exactly the matches a scan finds."""
    rng = random.Random(seed)
    recs: list[Record] = [started(), probes(("p1", "ours", None), ("p2", "ours", None))]
    t = 10 * MS
    for i in range(60):
        row = str(rng.randrange(8))  # rows repeat: several expectations share a value
        if rng.random() < 0.5:
            recs += write(t, "w", i, f"e{i}", row, ["p1", "p2"][: rng.randrange(1, 3)], table="orders")
        else:
            exp = Expectation(eid=f"e{i}", source="change", subject="notifications", type="INSERT",
                              match={"user_id": row, "action_url": f"/o/{rng.randrange(3)}"}, deliver_to=("p1",),
                              group="notification")
            recs += [Op(t=t, process="w", type="invoke", f="n", op_id=i),
                     Op(t=t + MS, process="w", type="ok", f="n", op_id=i, expect=(exp,))]
        t += 5 * MS
    for _ in range(120):
        p = rng.choice(["p1", "p2"])
        table = rng.choice(["orders", "notifications", "products"])
        user = str(rng.randrange(8)) if rng.random() < 0.9 else None
        recs.append(Change(t=t, probe=p, channel=f"realtime:{p}", table=table, type="INSERT",
                           record={"id": str(rng.randrange(8)), "user_id": user, "action_url": f"/o/{rng.randrange(3)}"}))
        t += MS
    recs += finished()
    a = analyze(recs)
    got = {k: len(d.seen) for k, d in a.deliveries.items() if d.seen}
    brute = _brute(recs)
    assert got == brute
    assert brute  # the history is not trivially empty


def test_refetched_rows_by_id_are_every_row_read_back(tmp_path: Path) -> None:
    syn = synthetic_run(tmp_path, 3_000)
    a = analyze(read_history(syn.dir / "history.jsonl").records)
    for probe, fetches in a.refetches.items():
        for fetch in fetches:
            for row in fetch.rows:
                assert (fetch.t, row) in a.refetched(probe, fetch.table, str(row["id"]))
                assert (fetch.t, row) in a.refetched(probe, fetch.table)
    assert a.refetched("nobody", "orders", "x") == []
