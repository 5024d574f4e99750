"""Checkers on small hand-written histories: every delivery class, unknowns, latency, ordering, verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.checks import combine, completeness, latency, ordering, percentile, run_checker
from harness.criteria import CriteriaError, evaluate, load_criteria

MS = 1_000_000


def write(t: int, process: str, op_id: int, eid: str, row: str, deliver_to: list[str], criterion: str = "order_visible",
          table: str = "orders", type_: str = "INSERT") -> list[dict[str, Any]]:
    exp = {"eid": eid, "table": table, "type": type_, "match": {"id": row}, "deliver_to": deliver_to,
           "criterion": criterion}
    return [{"kind": "op", "type": "invoke", "process": process, "op_id": op_id, "f": "place_order", "t": t},
            {"kind": "op", "type": "ok", "process": process, "op_id": op_id, "f": "place_order", "t": t + MS,
             "expect": [exp]}]


def seen(t: int, probe: str, row: str, table: str = "orders", type_: str = "INSERT",
         commit_ns: int | None = None, **rec: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"kind": "obs", "event": "change", "probe": probe, "table": table, "type": type_,
                         "record": {"id": row, **rec}, "t": t}
    if commit_ns is not None:
        r["commit_ns"] = commit_ns
    return r


def classes(result: Any) -> dict[str, int]:
    return result.details["counts"]


def test_all_delivered_is_valid() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor", "admin"]), seen(5 * MS, "vendor", "1"), seen(6 * MS, "admin", "1")]
    r = completeness(h)
    assert r.valid is True and r.value == 100.0
    assert classes(r)["delivered"] == 2


def test_unseen_when_nothing_arrives() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor", "admin"]), seen(5 * MS, "vendor", "1")]
    r = completeness(h)
    assert r.valid is False
    assert classes(r)["unseen"] == 1 and classes(r)["lost"] == 0
    assert r.details["evidence"][0] == {"class": "unseen", "eid": "o1", "probe": "admin", "criterion": "order_visible",
                                         "copies": 0}


def test_lost_when_a_later_event_of_the_same_writer_arrived() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor"]), *write(10 * MS, "c1", 2, "o2", "2", ["vendor"]),
         seen(15 * MS, "vendor", "2")]
    r = completeness(h)
    assert r.valid is False and classes(r)["lost"] == 1 and classes(r)["unseen"] == 0


def test_duplicated() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor"]), seen(5 * MS, "vendor", "1"), seen(7 * MS, "vendor", "1")]
    r = completeness(h)
    assert r.valid is False and classes(r)["duplicated"] == 1 and classes(r)["delivered"] == 1


def test_unexpected_is_a_leak() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor"]), seen(5 * MS, "vendor", "1"), seen(5 * MS, "other-customer", "1")]
    r = completeness(h)
    assert r.valid is False and classes(r)["unexpected"] == 1
    assert r.details["per_probe"]["other-customer"]["unexpected"] == 1


def test_twins_are_entitled_to_what_their_original_is() -> None:
    twins = {"kind": "meta", "t": 0, "twins": {"vendor@js": "vendor"}}
    h = [twins, *write(0, "c1", 1, "o1", "1", ["vendor"]), seen(5 * MS, "vendor", "1")]
    r = completeness(h)
    assert r.valid is False and r.details["per_probe"]["vendor@js"]["unseen"] == 1  # the twin missed it
    r = completeness([*h, seen(6 * MS, "vendor@js", "1")])
    assert r.valid is True and classes(r)["delivered"] == 2
    r = completeness([twins, *write(0, "c1", 1, "o1", "1", ["admin"]), seen(5 * MS, "admin", "1"),
                      seen(6 * MS, "vendor@js", "1")])
    assert r.valid is False and r.details["per_probe"]["vendor@js"]["unexpected"] == 1  # nor more than it


def test_late_is_counted_but_not_a_completeness_failure() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor"]), seen(1500 * MS, "vendor", "1")]
    r = completeness(h, {"order_visible": 1000})
    assert r.valid is True and classes(r)["late"] == 1


def test_foreign_changes_are_not_judged() -> None:
    h = [*write(0, "c1", 1, "o1", "1", ["vendor"]), seen(5 * MS, "vendor", "1"), seen(5 * MS, "vendor", "999")]
    r = completeness(h)
    assert r.valid is True and r.details["foreign"] == 1


def test_update_events_match_on_their_values() -> None:
    h = [*write(0, "v1", 1, "s1", "7", ["customer"], "status_update", type_="UPDATE")]
    h[1]["expect"][0]["match"] = {"id": "7", "status": "preparing"}
    h.append(seen(3 * MS, "customer", "7", type_="UPDATE", status="confirmed"))  # an earlier status: not this event
    r = completeness(h)
    assert r.valid is False and classes(r)["unseen"] == 1
    h.append(seen(4 * MS, "customer", "7", type_="UPDATE", status="preparing"))
    assert completeness(h).valid is True


def test_unknown_without_expectations_and_when_a_checker_raises() -> None:
    assert completeness([]).valid is None

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
    h = [*write(0, "c1", 1, "o1", "1", ["vendor"]), seen(300 * MS, "vendor", "1"),
         *write(1000 * MS, "c1", 2, "o2", "2", ["vendor"]), seen(2200 * MS, "vendor", "2")]
    r = latency(h, "order_visible", "write_to_deliver", "max", 1000)
    assert r.valid is False and r.value == pytest.approx(1200)
    assert latency(h, "order_visible", "write_to_deliver", "p50", 1000).valid is True


def test_latency_commit_to_deliver_uses_clock_facts_and_error_bar() -> None:
    wall0 = 1_700_000_000 * 1_000_000_000
    meta = {"kind": "meta", "t": 0, "clock": {"wall_origin": wall0, "offset_ns": 0, "error_ns": 0}}
    h = [meta, *write(0, "c1", 1, "o1", "1", ["vendor"]),
         seen(100 * MS, "vendor", "1", commit_ns=wall0 + 60 * MS)]
    r = latency(h, None, "commit_to_deliver", "max", 500)
    assert r.valid is True and r.value == pytest.approx(40)
    # a server clock 200 ms ahead: the commit really happened 200 ms earlier on our clock
    h[0] = {**meta, "clock": {"wall_origin": wall0, "offset_ns": 200 * MS, "error_ns": 0}}
    assert latency(h, None, "commit_to_deliver", "max", 500).value == pytest.approx(240)
    # an error bar straddling the limit: unknown, not a coin toss
    h[0] = {**meta, "clock": {"wall_origin": wall0, "offset_ns": 200 * MS, "error_ns": 300 * MS}}
    assert latency(h, None, "commit_to_deliver", "max", 500).valid is None
    assert latency([], None, "commit_to_deliver", "max", 500).valid is None


def test_ordering() -> None:
    ok = [seen(1, "c", "1", type_="UPDATE", commit_ns=10), seen(2, "c", "1", type_="UPDATE", commit_ns=20)]
    assert ordering(ok).valid is True
    bad = [seen(1, "c", "1", type_="UPDATE", commit_ns=20), seen(2, "c", "1", type_="UPDATE", commit_ns=10)]
    r = ordering(bad)
    assert r.valid is False and r.details["violations"] == [{"probe": "c", "table": "orders", "key": "1"}]
    assert ordering([]).valid is None


def test_default_criteria_load_and_verdicts(tmp_path: Path) -> None:
    crit = load_criteria()
    assert {c.id for c in crit} >= {"realtime_latency", "order_visible", "status_everywhere", "cart_sync",
                                     "notifications", "delivery", "no_leaks", "ordering"}
    wall0 = 1_700_000_000 * 1_000_000_000
    good: list[dict[str, Any]] = [{"kind": "meta", "t": 0, "clock": {"wall_origin": wall0}}]
    for i, (crit_id, probes) in enumerate([("order_visible", ["vendor", "admin"]), ("status_update", ["customer"]),
                                           ("cart_sync", ["device-2"]), ("notification", ["vendor"]),
                                           ("realtime_message", ["admin"])]):
        t = i * 1000 * MS
        good += write(t, "p", i, f"e{i}", str(i), probes, crit_id)
        for p in probes:
            good.append(seen(t + 50 * MS, p, str(i), commit_ns=wall0 + t + 20 * MS))
    v = evaluate(good, crit)
    assert v.go, [(c.id, r.summary) for c, r in v.failing()]
    leaky = [*good, seen(9000 * MS, "stranger", "0", commit_ns=wall0 + 8999 * MS)]
    v = evaluate(leaky, crit)
    assert not v.go and [c.id for c, _ in v.failing()] == ["no_leaks"]
    slow = [*good[:-4], seen(3000 * MS + 2500 * MS, "vendor", "3", commit_ns=wall0 + 3000 * MS + 20 * MS), *good[-3:]]
    v = evaluate(slow, crit)
    assert not v.go and "notifications" in [c.id for c, _ in v.failing()]
    slow_broadcast = [*good[:-1], seen(4000 * MS + 700 * MS, "admin", "4")]  # a message has no commit: send->deliver
    v = evaluate(slow_broadcast, crit)
    assert not v.go and [c.id for c, _ in v.failing()] == ["broadcast_presence"]
    assert evaluate([], crit).go is False  # no evidence is no GO


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not toml [", "not valid TOML"),
        ("[x]\nkind = 'nope'\ntitle='t'", "kind must be one of"),
        ("[x]\nkind = 'latency'\ntitle='t'\nmetric='commit_to_deliver'\nstatistic='p42'\nmax_ms=1", "statistic"),
        ("[x]\nkind = 'latency'\ntitle='t'\nmetric='commit_to_deliver'\nstatistic='p99'\nmax_ms=-1", "max_ms"),
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
    with pytest.raises(CriteriaError, match="not found"):
        load_criteria(tmp_path / "missing.toml")
