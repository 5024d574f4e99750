"""The server clock offset (NTP-style) a remote target's commit->deliver figures carry as an error bar."""

from __future__ import annotations

import time
from pathlib import Path

from harness.actors import World
from harness.checks.latency import samples
from harness.clock import estimate_offset
from harness.history import read_history
from harness.run import Run
from harness.targets import Target
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


def test_offset_against_a_real_server_through_rows_it_stamps(stack: EmbeddedStack, tmp_path: Path) -> None:
    # as for a remote target: the estimate runs through the run's own rows, against the real server
    target = Target("url", stack.api_url.replace("127.0.0.1", "localhost"), stack.anon_key,
                    stack.service_role_key)
    run = Run.create(target, tmp_path, {})
    world = World.for_run(run)
    try:
        world.build(customers=1, vendors=1, products_per_vendor=1)
        off = world.clock_offset(samples=6)
        # one machine, one clock: the true offset is 0, so the estimate must hold 0 within its error bar
        # (plus PostgreSQL's microsecond rounding)
        assert abs(off.offset_ns) <= off.error_ns + 1_000
        assert off.error_ns < 100_000_000
        left = world.admin_client.table("cart_items").select("id").eq("user_id", world.users["customer-1"]["id"])
        assert left.execute().data == []  # the probe rows are gone
    finally:
        world.cleanup()
        run.history.close()


def test_loopback_target_records_a_zero_offset_and_the_checker_reads_the_latest(tmp_path: Path) -> None:
    run = Run.create(Target("embedded", "http://127.0.0.1:1", "a.b.c", "a.b.c"), tmp_path, {})
    run.history.meta(clock={"wall_origin": run.clock.wall_origin, "offset_ns": 250_000_000, "error_ns": 10_000_000})
    run.history.close()
    records, _ = read_history(run.dir / "history.jsonl")
    _, error_ms = samples(records, None, "commit_to_deliver")
    assert error_ms == 10.0  # the refined record wins over the one written at the run's start
