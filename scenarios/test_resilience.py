"""000 §5.2 Network Issues, 001 §9.1: the apps lose their network (a reset, then a black hole only the heartbeat
notices) while the world keeps changing; every app rejoins within 5 s of the network's return, reads back what
it missed, and every event reaches everyone entitled to it, live or by that refetch.

The client policy here is supabase-js's backoff with a 2 s heartbeat (the gate uses supabase-js's own 25 s),
so the black hole lasts 7 s instead of 53."""

import pytest

from harness.pytest_plugin import Zora
from harness.records import Refetch
from harness.resilience import resilience

pytestmark = pytest.mark.zora(faults=True, heartbeat_s=2.0, backoff_s=(1.0, 2.0, 5.0, 10.0))


def test_apps_come_back_from_a_reset_and_a_black_hole(zora: Zora) -> None:
    zora.run(resilience(zora.lifecycle, blackhole_s=7.0))
    zora.settle(2.0)
    zora.check("reconnect_reset", "reconnect_blackhole", "delivery", "no_leaks", "ordering")
    refetched = {r.probe for r in zora.records() if isinstance(r, Refetch)}
    assert set(zora.scene.probe_names) <= refetched  # every app read back what it missed, both flavours
