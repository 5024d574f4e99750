"""000 §2.2 example 3: the admin approves an application; the vendor appears and the applicant is notified."""

from harness.flows import vendor_approval
from harness.pytest_plugin import Zora


def test_approval_creates_vendor_and_notifies(zora: Zora) -> None:
    zora.run(vendor_approval(zora.scene, 0))
    zora.settle()
    zora.check("notifications", "delivery", "no_leaks")
