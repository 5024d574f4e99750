"""Subscribers: the apps' realtime subscriptions, exactly as ``harness/apps.py`` declares them.

Each user opens one socket (``harness.phoenix.sync``) signed in as one of the run's users and joins every
channel of its app's screens; ``--tags subscribe`` keeps only these.
"""

from __future__ import annotations

from harness.load.users import SubscriberUser


class CustomerAppSubscriber(SubscriberUser):
    """The customer mobile app: its session (orders, notifications, cart) and the catalogue (products, shops)."""

    app = "customer-app"
    role = "customer"
    screens = ("session", "catalogue")
    weight = 2


class VendorPortalSubscriber(SubscriberUser):
    """The vendor portal: its shop's orders and notifications, and the shop screen (products, messages, profiles)."""

    app = "vendor-portal"
    role = "vendor"
    screens = ("session", "shop")
    weight = 1


class AdminDashboardSubscriber(SubscriberUser):
    """The admin dashboard: every order, shop, message and product, with presence."""

    app = "admin-dashboard"
    role = "admin"
    screens = ("dashboard",)
    weight = 1
