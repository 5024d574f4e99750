"""Publishers: the customer, vendor and admin apps writing on an open model (``harness.load.users``).

``locust -f load`` loads this file with the subscribers; ``--tags publish`` keeps only these.
"""

from __future__ import annotations

from harness.load.users import AdminProducts, CustomerOrders, VendorStatus


class CustomerPublisher(CustomerOrders):
    """A customer places orders at a shop: the vendor's portal, every admin dashboard and the customer's own
    devices must see each one (group order_visible)."""


class VendorPublisher(VendorStatus):
    """A vendor moves an order of its shop on: the customer's devices, the portal and the admins (status_update)."""


class AdminPublisher(AdminProducts):
    """An admin edits a product: every catalogue, the shop's portal and the dashboards (realtime)."""
