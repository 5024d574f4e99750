"""001 §3.2 / §4.5.3: a customer cannot send platform announcements as the admin (criterion no_spoofing)."""

from harness.flows import announcement, spoof_announcement
from harness.pytest_plugin import Zora
from harness.records import Broadcast, Op


def test_a_customers_announcement_reaches_nobody(zora: Zora) -> None:
    zora.run(spoof_announcement(zora.scene, 0))
    zora.run(announcement(zora.scene, 0))  # the admin's still reaches everyone
    zora.settle()
    zora.check("no_spoofing", "delivery")
    attempts = [r for r in zora.records() if isinstance(r, Op) and r.type == "ok" and r.f.startswith("spoof_")]
    assert len(attempts) == 4  # websocket and REST, to the private and the public channel
    got = [r for r in zora.records() if isinstance(r, Broadcast) and r.event == "announcement"]
    assert {r.probe for r in got} == set(zora.scene.probe_names) and len(got) == len(zora.scene.probe_names)
