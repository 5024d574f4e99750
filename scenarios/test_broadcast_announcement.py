"""001 §3.2 BROADCAST: an admin announcement reaches every app."""

from harness.flows import announcement
from harness.pytest_plugin import Zora
from harness.records import Broadcast


def test_announcement_reaches_everyone(zora: Zora) -> None:
    zora.run(announcement(zora.scene, 0))
    zora.settle()
    zora.check("delivery", "broadcast_presence")
    got = {r.probe for r in zora.records() if isinstance(r, Broadcast) and r.event == "announcement"}
    assert got == set(zora.scene.probe_names)  # our probes and their supabase-js twins
