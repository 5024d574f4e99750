"""000 §5.2 Update while offline, 001 §9.1 Zero data loss on optimistic updates, 001 §8 last write wins: the
phone goes offline and queues a cart change, a profile update and an order while the tablet changes the same
cart item; back online, the phone flushes its queue (each write sent twice, as a retry does: the idempotency
keys make that harmless). Every write lands once, every subscriber gets its events, and every view of the
conflicting cart item ends at the state the database holds."""

import pytest

from harness.flows import cart_sync, order_flow
from harness.offline import offline
from harness.pytest_plugin import Zora
from harness.records import Conflict, Queued

pytestmark = pytest.mark.zora(faults=True, heartbeat_s=2.0, backoff_s=(1.0, 2.0, 5.0, 10.0))


def test_the_phone_syncs_its_offline_queue_once(zora: Zora) -> None:
    zora.run(order_flow(zora.scene, 0))
    zora.run(cart_sync(zora.scene, 0))  # the cart item the phone will change offline
    zora.run(offline(zora.lifecycle, replays=2))
    zora.settle(2.0)
    zora.check("offline_sync", "delivery", "no_leaks")
    records = zora.records()
    assert len([r for r in records if isinstance(r, Queued)]) == 3
    assert [r.table for r in records if isinstance(r, Conflict)] == ["cart_items"]  # the tablet's edit, detected
