"""The server clock offset (NTP-style) a remote target's commit->deliver figures carry as an error bar."""

from __future__ import annotations

import time
from pathlib import Path

from harness.checks import analyze
from harness.clock import estimate_offset
from harness.criteria import load_criteria
from harness.history import read_history
from harness.lifecycle import Lifecycle
from harness.records import ClockFacts
from stack.server import EmbeddedStack


def test_a_skewed_server_clock_is_found_within_its_error_bar() -> None:
    skew = 4_321_000_000  # the server's clock runs 4.321 s ahead of ours

    def server() -> int:
        time.sleep(0.002)  # the request's way out ...
        t = time.time_ns() + skew
        time.sleep(0.003)  # ... and back: asymmetric, as networks are
        return t

    off = estimate_offset(server, samples=5)
    assert 2_000_000 <= off.error_ns <= 50_000_000  # about RTT/2
    assert abs(off.offset_ns - skew) <= off.error_ns


def clock_facts(lc: Lifecycle) -> list[ClockFacts]:
    lc.run.history.close()
    return [r for r in read_history(lc.run.dir / "history.jsonl").records if isinstance(r, ClockFacts)]


def test_the_lifecycle_records_one_clock_fact_estimated_for_a_remote_target(stack: EmbeddedStack,
                                                                           tmp_path: Path) -> None:
    lc = Lifecycle(stack.target(), load_criteria(), tmp_path, quiet=True)
    try:
        lc.world.build(customers=1, vendors=1, products_per_vendor=1)
        lc._build_thread_started = True
        off = lc.place_clock(estimate=True)  # as for a remote target: through the run's own rows, on the real server
        # one machine, one clock: the true offset is 0, so the estimate must hold 0 within its error bar
        # (plus PostgreSQL's microsecond rounding)
        assert abs(off.offset_ns) <= off.error_ns + 1_000
        assert 0 < off.error_ns < 100_000_000
        left = lc.world.admin_client.table("cart_items").select("id").eq("user_id", lc.world.users["customer-1"]["id"])
        assert left.execute().data == []  # the probe rows are gone
    finally:
        lc.cleanup()
    [fact] = clock_facts(lc)
    assert fact.estimated and fact.error_ns == off.error_ns and fact.offset_ns == off.offset_ns
    assert analyze(read_history(lc.run.dir / "history.jsonl").records).error_ms == off.error_ns / 1e6


def test_a_loopback_target_records_a_zero_offset_without_asking(stack: EmbeddedStack, tmp_path: Path) -> None:
    lc = Lifecycle(stack.target(), load_criteria(), tmp_path, quiet=True)
    assert lc.run.target.is_loopback
    off = lc.place_clock()  # no world was built: a loopback target must not need one
    [fact] = clock_facts(lc)
    assert (off.offset_ns, off.error_ns) == (0, 0) and not fact.estimated and fact.wall_origin == lc.run.clock.wall_origin
