"""Negative control for indicator accuracy: a probe page whose indicator ignores the connection state (always
"Live", as a broken connection store would show) must be judged wrong by ``indicator_reset`` and
``indicator_blackhole``, for the right reason: it never left Live while the fault proxy had cut it off."""

import pytest

from harness.checks import analyze
from harness.criteria import verdict
from harness.pytest_plugin import Zora
from harness.resilience import resilience

pytestmark = pytest.mark.zora(faults=True, heartbeat_s=2.0, backoff_s=(1.0, 2.0, 5.0, 10.0),
                              browser={"tabs": 1, "specs": ("vendor-1/portal",), "indicator": "always-live"})


def test_an_indicator_always_live_is_a_no_go(zora: Zora) -> None:
    zora.run(resilience(zora.lifecycle, blackhole_s=7.0))
    zora.settle(2.0)
    zora.check("reconnect_reset", "reconnect_blackhole")  # the client itself came back: only the page lies
    chosen = [zora.criteria[i] for i in ("indicator_reset", "indicator_blackhole")]
    v = verdict(analyze(zora.records()), chosen)
    assert not v.go
    for cid in ("indicator_reset", "indicator_blackhole"):
        r = v.line(cid).result
        assert r.valid is False and "never left Live" in r.summary, r.summary
