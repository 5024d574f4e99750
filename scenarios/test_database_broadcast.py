"""001 §4.1.1 (migration 016): ``broadcast_event`` called in the database reaches the channel's subscribers."""

from harness.flows import database_broadcast
from harness.pytest_plugin import Zora
from harness.records import Broadcast


def test_broadcast_event_reaches_the_channels_subscribers(zora: Zora) -> None:
    zora.run(database_broadcast(zora.scene, 0))
    zora.settle()
    zora.check("delivery", "broadcast_presence")
    got = {r.probe for r in zora.records() if isinstance(r, Broadcast) and r.event == "platform_event"}
    assert got == set(zora.scene.probe_names)  # every app joins the announcements channel, both flavours
