"""000 §3.2: a customer's message reaches the vendor and the admin, and nobody else."""

from harness.flows import messages
from harness.pytest_plugin import Zora


def test_messages_reach_vendor_and_admin(zora: Zora) -> None:
    for r in range(2):
        zora.run(messages(zora.scene, r))
    zora.settle()
    zora.check("realtime_latency", "delivery", "no_leaks")
