"""What a private channel may do, as plain data, and the interface the sans-IO connection asks it through.

``Private`` is implemented by ``stack.realtime.authorization.Authorizer`` (RLS on ``realtime.messages``); the
connection only awaits it, so it stays free of I/O and is tested against a fake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["REPLAY_DEFAULT_LIMIT", "REPLAY_HARD_LIMIT", "Policies", "Private", "PrivateError", "replay_params"]

REPLAY_HARD_LIMIT = 25  # supabase/realtime Realtime.Messages: at most 25 messages replayed
REPLAY_DEFAULT_LIMIT = 25  # the channel's default when the join names no limit


class PrivateError(Exception):
    """The policies could not be evaluated (a role that cannot be assumed, a policy raising, no database)."""


@dataclass
class Policies:
    """None: not evaluated yet (Supabase evaluates a write only when the client first sends)."""

    broadcast_read: bool | None = None
    presence_read: bool | None = None
    broadcast_write: bool | None = None
    presence_write: bool | None = None


class Private(Protocol):
    async def read(self, topic: str, claims: dict[str, Any], presence: bool = True) -> tuple[bool, bool]:
        """(may receive broadcasts, may receive presence) on the topic (no ``realtime:`` prefix)."""
        ...

    async def write(self, topic: str, claims: dict[str, Any], extension: str) -> bool:
        """May these claims send on the topic (``extension``: broadcast or presence)?"""
        ...

    async def replay(self, topic: str, since_ms: int, limit: int) -> list[dict[str, Any]]:
        """The topic's private broadcasts inserted at or after ``since_ms`` (epoch ms), oldest first, at most
        ``limit``: dicts with ``id``, ``event``, and ``payload`` (JSON) or ``binary`` (bytes)."""
        ...


def replay_params(raw: Any) -> tuple[int, int] | None:
    """``config.broadcast.replay`` -> (since in epoch ms, limit clamped to 1..25), or None if malformed."""
    if not isinstance(raw, dict):
        return None
    since, limit = raw.get("since", 0), raw.get("limit", REPLAY_DEFAULT_LIMIT)
    if limit is None:
        limit = REPLAY_DEFAULT_LIMIT
    if isinstance(since, bool) or isinstance(limit, bool) or not isinstance(since, int) or not isinstance(limit, int):
        return None
    if since < 0:
        return None
    return since, max(1, min(limit, REPLAY_HARD_LIMIT))
