"""Connection status indicator accuracy (001 §9.2, 000 §3.1 Task 4) in real Chromium: the vendor portal's and the
admin dashboard's pages go through their devices' fault proxies. A reset: the indicator shows "Reconnecting",
then "Live" again. A black hole: it must leave "Live" within the client's detection time (two heartbeats of its
policy) and be "Live" again once the network is back. Judged against the proxy's ground truth; the share of
time right and the longest lag are in the verdict; a screenshot of each state the page showed is in the run
directory.

The client policy is supabase-js's backoff with a 2 s heartbeat (the gate uses supabase-js's own 25 s), so the
black hole lasts 7 s instead of 53."""

import pytest

from harness.pytest_plugin import Zora
from harness.records import Indicator, Screenshot
from harness.resilience import resilience

pytestmark = pytest.mark.zora(faults=True, heartbeat_s=2.0, backoff_s=(1.0, 2.0, 5.0, 10.0), browser={"tabs": 1})


def test_the_indicator_follows_a_reset_and_a_black_hole(zora: Zora) -> None:
    zora.run(resilience(zora.lifecycle, blackhole_s=7.0))
    zora.settle(2.0)
    zora.check("indicator_reset", "indicator_blackhole", "reconnect_reset", "reconnect_blackhole", "delivery",
               "no_leaks")
    records = zora.records()
    tabs = [n for names in zora.scene.tabs.values() for n in names]
    for name in tabs:
        states = [r.state for r in records if isinstance(r, Indicator) and r.probe == name]
        assert "Reconnecting" in states and states[-1] == "Live", (name, states)
    shots = {(r.probe, r.state) for r in records if isinstance(r, Screenshot)}
    for name in tabs:
        assert {(name, s) for s in ("Offline", "Live", "Reconnecting")} <= shots, name
    for r in records:
        if isinstance(r, Screenshot):
            assert (zora.scene.run.dir / r.path).stat().st_size > 1000, r.path
