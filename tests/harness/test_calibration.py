"""The fault proxy's calibration (``bench/calibration.py``) in small: against the session's stack, a latency
fault shifts deliveries by its 200 ms (+/- 20: two shared cores) against a direct subscriber, no fault adds
next to nothing, and ``DropFrames`` makes the proxied subscriber miss exactly the first k change messages."""

from __future__ import annotations

import asyncio

from bench.calibration import calibrate, report
from harness.checks.stats import percentile
from stack.server import EmbeddedStack
from tests.stack.rt_support import user_token


def test_calibration_in_small(stack: EmbeddedStack) -> None:
    f = asyncio.run(asyncio.wait_for(calibrate(
        stack.api_url, stack.anon_key, stack.service_role_key, stack.superuser_dsn,
        lambda owner: user_token(stack, owner), overhead_n=40, latency_n=30, drop_n=20, drop_k=3), 120))
    text = report(f)
    a, b, c = f.overhead, f.latency, f.drop
    assert a.missed_direct == a.missed_proxied == b.missed_direct == b.missed_proxied == [], text
    assert percentile(a.delta_ms, 50) < 5, text  # no fault: the proxy adds next to nothing
    assert len(b.delta_ms) == 30 and all(180 <= x <= 220 for x in (percentile(b.delta_ms, 50),
                                                                    percentile(b.delta_ms, 99))), text
    assert c.missed_proxied == [0, 1, 2] and c.dropped_counter == 3 and c.missed_direct == [], text
