"""Checkers and the verdict on small hand-written histories: every delivery class, unknowns, latency, ordering,
the run's own lines. No services run here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.apps import SPOOFING
from harness.checks import Result, analyze, combine, completeness, latency, ordering, percentile, run_checker
from harness.criteria import CriteriaError, load_criteria, parse_criteria, verdict
from harness.records import Cleanup, Expectation, Interrupted, Op, PreflightDone, Record, RunError, RunPlan
from tests.harness.histories import MS, WALL0, broadcast, clock, expectation, finished, probes, seen, started, write

CRITERIA = load_criteria()


def classes(result: Result) -> dict[str, int]:
    return result.details["counts"]


def check(records: list[Record], deadlines: dict[str, float] | None = None) -> Result:
    return completeness(analyze(records), deadlines)


def test_all_delivered_is_valid() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor", "admin"]), seen(5 * MS, "vendor", "1"), seen(6 * MS, "admin", "1")]
    r = check(h)
    assert r.valid is True and r.value == 100.0
    assert classes(r)["delivered"] == 2


def test_unseen_when_nothing_arrives() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor", "admin"]), seen(5 * MS, "vendor", "1")]
    r = check(h)
    assert r.valid is False
    assert classes(r)["unseen"] == 1 and classes(r)["lost"] == 0
    assert r.details["evidence"]["unseen"] == [{"class": "unseen", "eid": "o1", "probe": "admin",
                                                "group": "order_visible", "copies": 0}]


def test_lost_when_a_later_event_of_the_same_writer_arrived() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor"]), *write(10 * MS, "c1", 2, "o2", "2", ["vendor"]),
         seen(15 * MS, "vendor", "2")]
    r = check(h)
    assert r.valid is False and classes(r)["lost"] == 1 and classes(r)["unseen"] == 0


def test_duplicated() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor"]), seen(5 * MS, "vendor", "1"), seen(7 * MS, "vendor", "1")]
    r = check(h)
    assert r.valid is False and classes(r)["duplicated"] == 1 and classes(r)["delivered"] == 1


def test_unexpected_is_a_leak() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor"]), seen(5 * MS, "vendor", "1"), seen(5 * MS, "other-customer", "1")]
    r = check(h)
    assert r.valid is False and classes(r)["unexpected"] == 1
    assert r.details["per_probe"]["other-customer"]["unexpected"] == 1


def test_evidence_is_kept_per_class_so_a_leak_is_named_after_many_misses() -> None:
    # 25 unseen events and 1 leak: the leak must be in no_leaks' evidence (it was once crowded out)
    h: list[Record] = [started(), RunPlan(phases=("flows",))]
    for i in range(25):
        h += write(i * MS, "c1", i, f"o{i}", str(i), ["vendor"])
    h += [*write(30 * MS, "c2", 99, "leaky", "99", ["vendor"]), seen(31 * MS, "vendor", "99"),
          seen(32 * MS, "stranger", "99"), *finished()]
    v = verdict(analyze(h), CRITERIA)
    leaks = v.line("no_leaks").result
    assert leaks.valid is False and leaks.value == 1
    assert leaks.details["evidence"] == [{"class": "unexpected", "eid": "leaky", "probe": "stranger",
                                          "group": "order_visible", "entitled": ["vendor"]}]
    delivery = v.line("delivery").result
    assert delivery.valid is False and len(delivery.details["evidence"]["unseen"]) == 10  # capped per class


def test_a_twin_is_entitled_to_what_its_expectation_names_and_flavours_are_compared() -> None:
    ps = probes(("vendor", "ours", None), ("vendor@js", "supabase-js", "vendor"))
    h = [ps, *write(0, "c1", 1, "o1", "1", ["vendor", "vendor@js"]), seen(5 * MS, "vendor", "1")]
    r = check(h)
    assert r.valid is False and r.details["per_probe"]["vendor@js"]["unseen"] == 1  # the twin missed it
    a = analyze([*h, seen(8 * MS, "vendor@js", "1")])
    assert completeness(a).valid is True
    f = a.flavours()
    assert f["ours"]["delivered"] == 1 and f["supabase-js"]["delivered"] == 1
    assert f["twin_minus_original_ms"]["p50"] == pytest.approx(3.0)  # stamped 3 ms after its original
    r = check([ps, *write(0, "c1", 1, "o1", "1", ["admin"]), seen(5 * MS, "admin", "1"), seen(6 * MS, "vendor@js", "1")])
    assert r.valid is False and r.details["per_probe"]["vendor@js"]["unexpected"] == 1  # nor more than it


def test_late_is_counted_but_not_a_completeness_failure() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor"]), seen(1500 * MS, "vendor", "1")]
    r = check(h, {"order_visible": 1000})
    assert r.valid is True and classes(r)["late"] == 1
    assert r.details["evidence"]["late"][0]["ms"] == pytest.approx(1500.0)


def test_foreign_changes_are_not_judged() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor"]), seen(5 * MS, "vendor", "1"), seen(5 * MS, "vendor", "999")]
    r = check(h)
    assert r.valid is True and r.details["foreign"] == 1


def test_update_events_match_on_their_values() -> None:
    h: list[Record] = write(0, "v1", 1, "s1", "7", ["customer"], "status_update", type_="UPDATE", status="preparing")
    h.append(seen(3 * MS, "customer", "7", type_="UPDATE", status="confirmed"))  # an earlier status: not this event
    r = check(h)
    assert r.valid is False and classes(r)["unseen"] == 1
    h.append(seen(4 * MS, "customer", "7", type_="UPDATE", status="preparing"))
    assert check(h).valid is True


def test_broadcasts_and_changes_do_not_match_each_other() -> None:
    exp = expectation("b1", "x", ["admin"], "realtime_message")
    bexp = exp.__class__(eid="b1", source="broadcast", subject="announcement", match={"id": "m1"},
                         deliver_to=("admin",), group="realtime_message")
    from harness.records import Op

    h: list[Record] = [Op(t=0, process="a", type="invoke", f="b", op_id=1),
                       Op(t=MS, process="a", type="ok", f="b", op_id=1, expect=(bexp,)),
                       seen(2 * MS, "admin", "m1", table="announcement")]  # a row change is not the broadcast
    assert check(h).valid is False
    assert check([*h, broadcast(3 * MS, "admin", "announcement", id="m1")]).valid is True


def test_unknown_without_expectations_and_when_a_checker_raises() -> None:
    assert check([]).valid is None

    def boom(_: Any) -> Any:
        raise RuntimeError("broken")

    r = run_checker("x", boom, [])
    assert r.valid is None and "broken" in r.summary
    assert combine([r]) is None
    assert combine([]) is None


def test_percentile_nearest_rank() -> None:
    v = [float(i) for i in range(1, 101)]
    assert percentile(v, 50) == 50 and percentile(v, 99) == 99 and percentile(v, 100) == 100
    assert percentile([3.0], 99) == 3.0


def test_latency_write_to_deliver_pass_and_fail() -> None:
    a = analyze([*write(0, "c1", 1, "o1", "1", ["vendor"]), seen(300 * MS, "vendor", "1"),
                 *write(1000 * MS, "c1", 2, "o2", "2", ["vendor"]), seen(2200 * MS, "vendor", "2")])
    r = latency(a, "order_visible", "write_to_deliver", "max", 1000)
    assert r.valid is False and r.value == pytest.approx(1200)
    assert r.details["evidence"][0] == {"eid": "o2", "probe": "vendor", "write_to_deliver_ms": 1200.0}
    assert latency(a, "order_visible", "write_to_deliver", "p50", 1000).valid is True


def test_latency_commit_to_deliver_uses_clock_facts_and_error_bar() -> None:
    body = [*write(0, "c1", 1, "o1", "1", ["vendor"]), seen(100 * MS, "vendor", "1", commit_ns=WALL0 + 60 * MS)]
    r = latency(analyze([clock(), *body]), None, "commit_to_deliver", "max", 500)
    assert r.valid is True and r.value == pytest.approx(40)
    # a server clock 200 ms ahead: the commit really happened 200 ms earlier on our clock
    assert latency(analyze([clock(200 * MS), *body]), None, "commit_to_deliver", "max", 500).value == pytest.approx(240)
    # an error bar straddling the limit: unknown, not a coin toss
    assert latency(analyze([clock(200 * MS, 300 * MS), *body]), None, "commit_to_deliver", "max", 500).valid is None
    # the latest clock record refines the first one
    a = analyze([clock(), clock(250 * MS, 10 * MS), *body])
    assert a.error_ms == 10.0 and latency(a, None, "commit_to_deliver", "max", 500).value == pytest.approx(290)
    assert latency(analyze([]), None, "commit_to_deliver", "max", 500).valid is None


def test_ordering() -> None:
    ok: list[Record] = [seen(1, "c", "1", type_="UPDATE", commit_ns=10), seen(2, "c", "1", type_="UPDATE", commit_ns=20)]
    assert ordering(analyze(ok)).valid is True
    bad: list[Record] = [seen(1, "c", "1", type_="UPDATE", commit_ns=20), seen(2, "c", "1", type_="UPDATE", commit_ns=10)]
    r = ordering(analyze(bad))
    assert r.valid is False and r.details["evidence"] == [{"probe": "c", "table": "orders", "key": "1"}]
    assert ordering(analyze([])).valid is None


def spoof_attempt() -> list[Record]:
    """The gate's check that a customer cannot send announcements (no_spoofing): an attempt nobody may receive."""
    exp = Expectation(eid="announcement:broadcast:s1", source="broadcast", subject="announcement", match={"id": "s1"},
                      deliver_to=(), group=SPOOFING)
    return [Op(t=0, process="customer", type="invoke", f="spoof_announcement_ws", op_id=99),
            Op(t=MS, process="customer", type="ok", f="spoof_announcement_ws", op_id=99, expect=(exp,))]


def good_history() -> list[Record]:
    """A healthy run of the flows phase (no faults: the resilience criteria are not judged)."""
    h: list[Record] = [started(), RunPlan(phases=("flows",)), clock(), *spoof_attempt()]
    for i, (group, ps) in enumerate([("order_visible", ["vendor", "admin"]), ("status_update", ["customer"]),
                                     ("cart_sync", ["device-2"]), ("notification", ["vendor"]),
                                     ("realtime_message", ["admin"])]):
        t = i * 1000 * MS
        h += write(t, "p", i, f"e{i}", str(i), ps, group)
        for p in ps:
            h.append(seen(t + 50 * MS, p, str(i), commit_ns=WALL0 + t + 20 * MS))
    return h


def failing(records: list[Record]) -> list[str]:
    return [ln.criterion.id for ln in verdict(analyze(records), CRITERIA).failing()]


def test_default_criteria_and_verdicts() -> None:
    assert {c.id for c in CRITERIA} >= {"realtime_latency", "order_visible", "status_everywhere", "cart_sync",
                                        "notifications", "delivery", "no_leaks", "ordering"}
    good = good_history()
    v = verdict(analyze([*good, *finished()]), CRITERIA)
    assert v.go, [(ln.criterion.id, ln.result.summary) for ln in v.failing()]
    assert v.target["url"] == "https://x.test"
    leaky = [*good, seen(9000 * MS, "stranger", "0", commit_ns=WALL0 + 8999 * MS), *finished()]
    assert failing(leaky) == ["no_leaks"]
    slow = [*good[:-4], seen(3000 * MS + 2500 * MS, "vendor", "3", commit_ns=WALL0 + 3020 * MS), *good[-3:],
            *finished()]
    assert "notifications" in failing(slow)
    slow_message = [*good[:-1], seen(4000 * MS + 700 * MS, "admin", "4"), *finished()]  # no commit: send->deliver
    assert failing(slow_message) == ["broadcast_presence"]
    spoofed = [*good, broadcast(9000 * MS, "admin", "announcement", id="s1"), *finished()]
    assert failing(spoofed) == ["no_spoofing"]
    assert verdict(analyze([]), CRITERIA).go is False  # no evidence is no GO


def test_a_run_without_its_finish_record_is_no_go() -> None:
    good = good_history()
    v = verdict(analyze(good), CRITERIA)  # killed in the settle window: every criterion holds, yet
    assert not v.go and [ln.criterion.id for ln in v.failing()] == ["run"]
    assert "did not finish" in v.line("run").result.summary
    half = good[: len(good) // 2]  # a history cut to its first half
    assert "did not finish" in verdict(analyze(half), CRITERIA).line("run").result.summary
    assert "no run_started" in verdict(analyze(good[1:] + finished()), CRITERIA).line("run").result.summary


def test_interruption_errors_unreadable_lines_and_leftovers_are_named() -> None:
    good = good_history()
    v = verdict(analyze([*good, Interrupted(signal="SIGTERM", stage="settling (3 s)"), *finished()]), CRITERIA)
    assert not v.go and "interrupted by SIGTERM during settling" in v.line("run").result.summary
    v = verdict(analyze([*good, RunError(error="APIError: boom", stage="round 1/3"), *finished()]), CRITERIA)
    assert "APIError: boom" in v.line("run").result.summary
    v = verdict(analyze([*good, *finished()], unreadable=[(7, "op record: op_id: Field required")]), CRITERIA)
    assert not v.go and v.line("history").result.value == 1 and "line 7" in v.line("history").result.summary
    left = [*good, Cleanup(verified=True, left={"orders": 2, "users": 1}), *finished()[1:]]
    v = verdict(analyze(left), CRITERIA)
    line = v.line("cleanup").result
    assert not v.go and line.valid is False and "2 orders" in line.summary and "zora-harness clean --run-id zr00000001" \
        in line.summary


def test_after_a_preflight_failure_the_cause_comes_first_and_criteria_are_not_judged() -> None:
    h = [started(), RunPlan(phases=("flows",)), PreflightDone(problems=("publication supabase_realtime lacks: orders",)),
         *finished()[1:]]
    v = verdict(analyze(h), CRITERIA)
    assert not v.go and v.lines[0].criterion.id == "preflight" and "lacks: orders" in v.lines[0].result.summary
    assert not v.judged and all(ln.result.summary.startswith("not judged") for ln in v.lines[1:])


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not toml [", "not valid TOML"),
        ("[x]\nkind = 'nope'\ntitle='t'", "kind must be one of"),
        ("[x]\nkind = 'latency'\ntitle='t'\nmetric='commit_to_deliver'\nstatistic='p42'\nmax_ms=1", "statistic"),
        ("[x]\nkind = 'latency'\ntitle='t'\nmetric='commit_to_deliver'\nstatistic='p99'\nmax_ms=-1", "max_ms"),
        ("[x]\nkind = 'latency'\ntitle='t'\nmetric='commit_to_deliver'\nstatistic='p99'\nmax_ms=inf", "finite"),
        ("[x]\nkind = 'latency'\ntitle='t'\nmetric='commit_to_deliver'\nstatistic='p99'\nmax_ms=nan", "finite"),
        ("[x]\nkind = 'latency'\ntitle='t'\nmetric='write_to_deliver'\nstatistic='p99'\nmax_ms=5\nevents='orderz'",
         "no flow produces"),
        ("[x]\nkind = 'latency'\ntitle='t'\nmetric='write_to_deliver'\nstatistic='p99'\nmax_ms=5\nevents=3",
         "events must be a string"),
        ("[x]\nkind = 'completeness'\ntitle='t'\nmin_delivered_pct=101", "0 to 100"),
        ("[x]\nkind = 'completeness'\ntitle='t'\nmin_delivered_pct=nan", "0 to 100"),
        ("[run]\nkind = 'ordering'\ntitle='t'", "reserved"),
        ("[preflight]\nkind = 'ordering'\ntitle='t'", "reserved"),
        ("[x]\nkind = 'ordering'\ntitle='t'\nsurprise=1", "unknown key"),
        ("", "no criteria"),
    ],
)
def test_bad_criteria_files(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(CriteriaError, match=needle) as e:
        load_criteria(p)
    assert "\n" not in str(e.value)


def test_criteria_files_that_are_not_files() -> None:
    with pytest.raises(CriteriaError, match="not found"):
        load_criteria(Path("/nonexistent/c.toml"))
    with pytest.raises(CriteriaError, match="is a directory"):
        load_criteria(Path("/tmp"))


def test_the_criteria_text_and_hash_travel_with_the_set() -> None:
    a = parse_criteria("[o]\nkind='ordering'\ntitle='t'\n")
    b = parse_criteria("[o]\nkind='ordering'\ntitle='t2'\n")
    assert a.sha256 != b.sha256 and len(a.sha256) == 64 and a.text.startswith("[o]")
    assert CRITERIA.settle_floor_s() == 2.0  # the longest group deadline of fixtures/criteria.toml (cart, notifications)
