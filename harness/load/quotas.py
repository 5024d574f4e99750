"""A hosted Supabase project's realtime quotas, printed before a load run starts and checked against its plan.

Going over a quota disconnects clients (or refuses joins and messages), which a load run would read as the
app's failure. The figures are Supabase's published ones per plan (Realtime "Quotas by plan"); a loopback
target (the embedded stack, ``supabase start``) has none. Every delivered copy counts as a message.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PLANS", "Load", "Quota", "describe", "over"]


@dataclass(frozen=True)
class Quota:
    clients: int  # concurrent clients (connections)
    messages_per_s: int
    joins_per_s: int
    channels_per_client: int


PLANS: dict[str, Quota] = {
    "free": Quota(200, 100, 100, 100),
    "pro": Quota(500, 500, 500, 100),
    "pro-no-cap": Quota(10_000, 2_500, 2_500, 100),
    "team": Quota(10_000, 2_500, 2_500, 100),
}


@dataclass(frozen=True)
class Load:
    """What the configured run asks of the project, estimated from its options before it starts."""

    clients: int
    messages_per_s: float
    joins_per_s: float
    channels_per_client: int


def describe(plan: str) -> str:
    q = PLANS[plan]
    return (f"realtime quotas of the {plan} plan: {q.clients} concurrent clients, {q.messages_per_s} messages/s "
            f"(every delivered copy counts), {q.joins_per_s} channel joins/s, {q.channels_per_client} channels per "
            "client; going over disconnects clients")


def over(plan: str, load: Load) -> list[str]:
    """One sentence per quota the load would exceed."""
    q = PLANS[plan]
    out = []
    if load.clients > q.clients:
        out.append(f"{load.clients} subscribers > {q.clients} concurrent clients")
    if load.messages_per_s > q.messages_per_s:
        out.append(f"about {load.messages_per_s:.0f} delivered messages/s > {q.messages_per_s}/s")
    if load.joins_per_s > q.joins_per_s:
        out.append(f"about {load.joins_per_s:.0f} joins/s while spawning > {q.joins_per_s}/s")
    if load.channels_per_client > q.channels_per_client:
        out.append(f"{load.channels_per_client} channels per subscriber > {q.channels_per_client}")
    return out
