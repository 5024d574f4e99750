"""001 §3.2 PRESENCE: the admin dashboard sees another tab come online and leave, within the realtime budget."""

from harness.flows import presence_online
from harness.pytest_plugin import Zora
from harness.records import Presence


def test_presence_join_and_leave(zora: Zora) -> None:
    zora.run(presence_online(zora.scene, 0))
    zora.settle()
    # presence has no commit timestamp: its latency is send->deliver, judged by broadcast_presence
    zora.check("delivery", "no_leaks", "broadcast_presence")
    seen = {(r.probe, r.event) for r in zora.records() if isinstance(r, Presence)}
    assert {("admin/dashboard", "join"), ("admin/dashboard", "leave")} <= seen
    if zora.scene.js_probes:  # supabase-js's presence events too
        assert {("admin/dashboard@js", "join"), ("admin/dashboard@js", "leave")} <= seen
