"""Reconnection, reliability and recovery on hand-written histories: the two regimes, each milestone, the
negative cases (never reconnected, rejoined without its bindings, joins refused), delivery after recovery."""

from __future__ import annotations

from harness.checks import analyze, completeness
from harness.checks.reconnection import check_reconnection, check_reliability, recoveries, reliability
from harness.criteria import parse_criteria, verdict
from harness.records import (
    ConnState,
    Fault,
    JoinAttempt,
    ProbeInfo,
    ProbeSet,
    Record,
    Refetch,
    RunFinished,
    RunPlan,
    SubInfo,
    System,
)
from tests.harness.histories import MS, finished, seen, started, write

S = 1000 * MS
PG, NEWS = "realtime:p:orders:0", "realtime:platform-announcements"
INFO = ProbeInfo(name="p", app="app", user="u", flavour="ours", subs=(SubInfo(table="orders"),),
                 topics=("platform-announcements",), via="proxy")


def probe_set(*extra: ProbeInfo) -> ProbeSet:
    return ProbeSet(probes=(INFO, *extra))


def fault(fid: str, name: str, start: int, end: int) -> list[Record]:
    return [Fault(t=start, fault_id=fid, name=name, phase="start", target="proxy"),
            Fault(t=end, fault_id=fid, name=name, phase="end", target="proxy")]


def rejoin(t: int, probe: str = "p", pg_ok: bool = True) -> list[Record]:
    """The socket opens at t; both channels' joins are ok 10 ms later; postgres_changes live 50 ms later."""
    out: list[Record] = [ConnState(t=t, probe=probe, state="open"),
                         JoinAttempt(t=t + 10 * MS, probe=probe, channel=PG, outcome="ok"),
                         JoinAttempt(t=t + 10 * MS, probe=probe, channel=NEWS, outcome="ok")]
    if pg_ok:
        out.append(System(t=t + 50 * MS, probe=probe, channel=PG, status="ok", extension="postgres_changes"))
    return out


def healthy_start() -> list[Record]:
    return [started(), probe_set(), *rejoin(0)]


def test_a_reset_is_timed_from_its_end_to_each_milestone() -> None:
    h = [*healthy_start(), *fault("f1", "reset", 1 * S, 1 * S), ConnState(t=1 * S + MS, probe="p", state="closed"),
         *rejoin(2 * S), Refetch(t=2 * S + 100 * MS, probe="p", table="orders", since_ns=0),
         seen(2 * S + 500 * MS, "p", "9"), RunFinished(t=3 * S, outcome="completed")]
    [r] = recoveries(h, {"p": INFO})
    assert r.regime == "reset" and r.disconnected
    assert (r.detection_ms, r.ms("socket"), r.ms("rejoined"), r.ms("first_event"), r.ms("converged")) == \
        (1.0, 1000.0, 1050.0, 1500.0, 1100.0)
    line = check_reconnection([r], "reset", "rejoined", "max", 5000)
    assert line.valid is True and line.value == 1050.0
    assert check_reconnection([r], "reset", "rejoined", "max", 1000).valid is False
    assert check_reconnection([r], "blackhole", "rejoined", "max", 5000).valid is None  # no evidence: unknown


def test_a_black_hole_is_noticed_by_the_heartbeat_and_reported_apart() -> None:
    h = [*healthy_start(), *fault("f1", "blackhole", 5 * S, 35 * S),
         ConnState(t=30 * S, probe="p", state="heartbeat_timeout"), ConnState(t=30 * S + MS, probe="p", state="closed"),
         *rejoin(35 * S + 200 * MS), RunFinished(t=40 * S, outcome="completed")]
    [r] = recoveries(h, {"p": INFO})
    assert r.regime == "blackhole" and r.detection_ms == 25_000.0 and r.ms("rejoined") == 250.0
    line = check_reconnection([r], "blackhole", "rejoined", "max", 5000)
    assert line.valid is True and "noticed after p50 25.0 s" in line.summary
    # a black hole shorter than the heartbeat: the connection survives, nothing to reconnect
    short = [*healthy_start(), *fault("f1", "blackhole", 5 * S, 6 * S), RunFinished(t=9 * S, outcome="completed")]
    [s] = recoveries(short, {"p": INFO})
    assert not s.disconnected and s.ms("rejoined") == 0.0
    assert check_reconnection([s], "blackhole", "rejoined", "max", 5000).valid is True


def test_a_client_that_never_reconnects_fails_the_line() -> None:
    h = [*healthy_start(), *fault("f1", "reset", 1 * S, 1 * S), ConnState(t=1 * S + MS, probe="p", state="closed"),
         RunFinished(t=20 * S, outcome="completed")]
    [r] = recoveries(h, {"p": INFO})
    line = check_reconnection([r], "reset", "rejoined", "max", 5000)
    assert line.valid is False and "1 never rejoined" in line.summary
    # a rejoin without its postgres_changes bindings: joined, never live again
    h2 = [*healthy_start(), *fault("f1", "reset", 1 * S, 1 * S), ConnState(t=1 * S + MS, probe="p", state="closed"),
          *rejoin(2 * S, pg_ok=False), RunFinished(t=20 * S, outcome="completed")]
    assert check_reconnection(recoveries(h2, {"p": INFO}), "reset", "rejoined", "max", 5000).valid is False


def test_faults_reach_only_the_probes_behind_their_proxy() -> None:
    direct = ProbeInfo(name="d", app="app", user="u", flavour="ours", subs=(SubInfo(table="orders"),))
    h = [started(), probe_set(direct), *fault("f1", "reset", 1 * S, 1 * S), RunFinished(t=2 * S, outcome="completed")]
    assert [r.probe for r in recoveries(h, {"p": INFO, "d": direct})] == ["p"]


def test_reliability_counts_attempts_that_held_until_a_fault_or_the_end() -> None:
    h = [*healthy_start(), *fault("f1", "reset", 1 * S, 1 * S), ConnState(t=1 * S + MS, probe="p", state="closed"),
         *rejoin(2 * S), RunFinished(t=3 * S, outcome="completed")]
    rel = reliability(h, {"p": INFO})
    assert (rel.attempts, rel.held) == (4, 4)
    refused = [*h[:-1], JoinAttempt(t=2 * S + 900 * MS, probe="p", channel=NEWS, outcome="error", detail="nope"),
               RunFinished(t=3 * S, outcome="completed")]
    rel = reliability(refused, {"p": INFO})
    assert (rel.attempts, rel.held) == (5, 4) and rel.failures[0]["why"] == "join error: nope"
    dropped = [*healthy_start(), ConnState(t=1 * S, probe="p", state="closed"), RunFinished(t=3 * S, outcome="completed")]
    rel = reliability(dropped, {"p": INFO})  # the socket went with no fault active: both joins failed to hold
    assert rel.held == 0 and "no fault active" in str(rel.failures[0]["why"])
    no_bindings = [started(), probe_set(), *rejoin(0, pg_ok=False), RunFinished(t=3 * S, outcome="completed")]
    rel = reliability(no_bindings, {"p": INFO})
    assert rel.held == 1 and "never went live" in str(rel.failures[0]["why"])
    line = check_reliability(rel, 99.9)
    assert line.valid is False and "weak evidence" in line.summary and "1000" in line.summary


def test_a_join_a_fault_cuts_before_its_bindings_are_live_counts_neither_way() -> None:
    # seen under load: churn's next reset 0.3 ms after a join's reply, before postgres_changes said ok
    cut = [started(), probe_set(), *rejoin(0, pg_ok=False), *fault("f1", "reset", 10 * MS + 300_000, 11 * MS),
           ConnState(t=20 * MS, probe="p", state="closed"),
           JoinAttempt(t=20 * MS, probe="p", channel=NEWS, outcome="lost"), *rejoin(1 * S),
           RunFinished(t=3 * S, outcome="completed")]
    rel = reliability(cut, {"p": INFO})
    assert (rel.attempts, rel.held) == (3, 3), rel.failures  # the cut pg join and the lost one: unjudged
    # the same join with its fault 11 s later (past the clients' push timeout): it had failed before the fault
    late = [started(), probe_set(), *rejoin(0, pg_ok=False), *fault("f1", "reset", 11 * S, 11 * S + MS),
            RunFinished(t=13 * S, outcome="completed")]
    rel = reliability(late, {"p": INFO})
    assert (rel.attempts, rel.held) == (2, 1) and "never went live" in str(rel.failures[0]["why"])
    # seen under load: a churn client rejoined while a reset was on; its socket went 0.5 s after the reset's end
    during = [*healthy_start(), *fault("f1", "reset", 1 * S, 1 * S + 30 * MS),
              ConnState(t=1 * S + MS, probe="p", state="closed"), *rejoin(1 * S + 5 * MS),
              ConnState(t=1 * S + 530 * MS, probe="p", state="closed"), *rejoin(2 * S),
              RunFinished(t=3 * S, outcome="completed")]
    rel = reliability(during, {"p": INFO})
    assert (rel.attempts, rel.held) == (6, 6), rel.failures
    # the same loss 3 s after the fault's end is not the fault's
    later = [*during[:13], ConnState(t=4 * S, probe="p", state="closed"), RunFinished(t=5 * S, outcome="completed")]
    rel = reliability(later, {"p": INFO})
    assert rel.held < rel.attempts and "no fault active" in str(rel.failures[0]["why"])
    # a join lost long after the fault ended is the target's doing
    lost = [*healthy_start(), *fault("f1", "reset", 1 * S, 1 * S + MS), *rejoin(2 * S),
            JoinAttempt(t=15 * S, probe="p", channel=NEWS, outcome="lost"), RunFinished(t=16 * S, outcome="completed")]
    rel = reliability(lost, {"p": INFO})
    assert rel.attempts == 5 and rel.held < 5


def test_a_missed_event_read_back_by_the_refetch_is_recovered_not_lost() -> None:
    base: list[Record] = [started(), probe_set(), *write(1 * S, "c1", 1, "o1", "7", ["p"], "status_update",
                                                          type_="UPDATE", status="ready",
                                                          updated_at="2026-12-01T10:00:01+00:00")]
    assert completeness(analyze(base)).details["counts"]["unseen"] == 1
    newer = {"id": "7", "status": "delivered", "updated_at": "2026-12-01T10:00:05+00:00"}  # superseded while away
    r = completeness(analyze([*base, Refetch(t=3 * S, probe="p", table="orders", since_ns=0, rows=(newer,))]))
    assert r.valid is True and r.details["counts"]["recovered"] == 1 and r.details["live_pct"] == 0.0
    older = {"id": "7", "status": "preparing", "updated_at": "2026-12-01T10:00:00+00:00"}  # the refetch is stale
    assert completeness(analyze([*base, Refetch(t=3 * S, probe="p", table="orders", since_ns=0,
                                                rows=(older,))])).valid is False
    early = Refetch(t=0, probe="p", table="orders", since_ns=0, rows=(newer,))  # read before the write: no help
    assert completeness(analyze([*base, early])).valid is False


CRIT = parse_criteria("""
[reconnect_reset]
title = "t"
kind = "reconnection"
regime = "reset"
statistic = "max"
max_ms = 5000

[connection_reliability]
title = "t"
kind = "reliability"
min_pct = 99.9

[delivery]
title = "t"
kind = "completeness"
""")


def test_the_plan_decides_which_criteria_are_judged() -> None:
    body = [*healthy_start(), *write(1, "c", 1, "e", "1", ["p"]), seen(2, "p", "1"),
            *fault("f1", "reset", 1 * S, 1 * S), ConnState(t=1 * S + MS, probe="p", state="closed"), *rejoin(2 * S),
            *finished()]
    v = verdict(analyze([RunPlan(phases=("flows", "resilience"), seed=7), *body]), CRIT)
    assert v.go and {ln.criterion.id for ln in v.lines} >= {"reconnect_reset", "connection_reliability"}
    assert v.seed == 7
    v = verdict(analyze([RunPlan(phases=("flows",)), *body]), CRIT)  # --no-faults: not judged, and said so
    assert v.go and v.skipped == ("reconnect_reset", "connection_reliability")
    assert {ln.criterion.id for ln in v.lines} == {"delivery", "cleanup"}


def test_offline_sync_applied_once_lost_twice_and_diverged() -> None:
    from harness.checks.offline import check_offline
    from harness.records import Conflict, Op, Queued, QueueVerified
    from tests.harness.histories import expectation

    exp = expectation("e-cart", "c9", ["phone", "tablet"], "cart_sync", "cart_items", "UPDATE", quantity="3")
    flush = [Op(t=10 * S, process="phone", type="invoke", f="flush:add_to_cart", op_id=5, args={"idem_key": "k1"}),
             Op(t=10 * S + MS, process="phone", type="ok", f="flush:add_to_cart", op_id=5, expect=(exp,))]
    base: list[Record] = [started(), Queued(t=S, process="phone", key="k1", f="add_to_cart", table="cart_items"),
                          *flush, seen(10 * S + 20 * MS, "tablet", "c9", "cart_items", "UPDATE", quantity=3)]
    state = {"id": "c9", "quantity": 3, "updated_at": "x"}
    conflict = Conflict(process="phone", key="k1", table="cart_items", base="a", server="b")
    phone_refetch = Refetch(t=12 * S, probe="phone", table="cart_items", since_ns=0, rows=({"id": "c9", "quantity": 3},))
    good = [*base, conflict, phone_refetch, QueueVerified(key="k1", table="cart_items", count=1, state=state)]
    r = check_offline(analyze(good))
    assert r.valid is True and "1 applied once" in r.summary and "every view ended" in r.summary
    twice = [*base, phone_refetch, QueueVerified(key="k1", table="cart_items", count=2, state=state)]
    r = check_offline(analyze(twice))
    assert r.valid is False and r.details["duplicated"] == ["k1"] and "1 applied twice" in r.summary
    lost = [*base, phone_refetch, QueueVerified(key="k1", table="cart_items", count=0, state={})]
    assert check_offline(analyze(lost)).details["lost"] == ["k1"]
    stale = Refetch(t=12 * S, probe="phone", table="cart_items", since_ns=0, rows=({"id": "c9", "quantity": 9},))
    r = check_offline(analyze([*base, conflict, stale, QueueVerified(key="k1", table="cart_items", count=1,
                                                                      state=state)]))
    assert r.valid is False and {"class": "diverged", "key": "k1", "probe": "phone", "differs": {"quantity": ("9", "3")}} \
        in r.details["evidence"]  # the phone ended at another state than the database's
    no_phone = [*base, QueueVerified(key="k1", table="cart_items", count=1, state=state)]
    r = check_offline(analyze(no_phone))  # the phone never saw the flushed row, live or by refetch
    assert r.valid is False and r.details["evidence"][0] == {"class": "unseen", "key": "k1", "probe": "phone",
                                                             "eid": "e-cart"}
    assert check_offline(analyze([started()])).valid is None
    unflushed = [base[0], base[1], QueueVerified(key="k1", table="cart_items", count=1, state=state)]
    r = check_offline(analyze(unflushed))  # in the database, but no flush of the queue recorded its events
    assert r.valid is False and "1 never flushed" in r.summary


def test_the_next_fault_excuses_a_client_only_before_the_limit_has_passed() -> None:
    # not back 10 s after a reset when the next fault came: a failure (it once hid as "cut short": a wrong GO)
    late = [*healthy_start(), *fault("f1", "reset", 1 * S, 1 * S), ConnState(t=1 * S + MS, probe="p", state="closed"),
            *fault("f2", "blackhole", 11 * S, 16 * S), RunFinished(t=20 * S, outcome="completed")]
    line = check_reconnection(recoveries(late, {"p": INFO}), "reset", "rejoined", "max", 5000)
    assert line.valid is False and "never rejoined" in line.summary
    # the next fault 0.5 s after the reset, before the client could be back: no evidence either way
    soon = [*healthy_start(), *fault("f1", "reset", 1 * S, 1 * S), ConnState(t=1 * S + MS, probe="p", state="closed"),
            *fault("f2", "reset", 1 * S + 500 * MS, 1 * S + 500 * MS), RunFinished(t=1 * S + 600 * MS,
                                                                                  outcome="completed")]
    line = check_reconnection(recoveries(soon, {"p": INFO}), "reset", "rejoined", "max", 5000)
    assert line.valid is None and "cut short" in line.summary
