"""Broadcast from the database: rows of ``realtime.messages`` committed in the WAL, delivered to their channels.

``realtime.send`` / ``realtime.send_binary`` / ``realtime.broadcast_changes`` insert a row (extension
``broadcast``); when its transaction commits, the WAL source hands it here, before the postgres_changes
dispatcher sees the rest of the transaction. As supabase/realtime's ``ReplicationConnection`` does, each row
becomes one broadcast to the channels of its topic: private channels (whose policies allow broadcast read)
when the row is private, public channels otherwise, with ``meta: {"id": <row id>}``. A binary payload goes as
a binary frame to vsn 2.0.0 clients only. A message a channel already got by replay at its join is not sent
to it again. Rows the authorization checks insert are rolled back and never reach the WAL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from stack.realtime.hub import Hub
from stack.realtime.wal import Change, Transaction

__all__ = ["MessageRelay", "is_message"]

log = logging.getLogger("stack.realtime.messages")


def is_message(change: Change) -> bool:
    return change.schema == "realtime" and change.table == "messages"


def _binary(value: Any) -> bytes | None:
    """wal2json renders bytea as its hex digits (PostgreSQL's ``\\x`` form without the prefix)."""
    if value is None:
        return None
    return bytes.fromhex(str(value).removeprefix("\\x"))


class MessageRelay:
    def __init__(self, hub: Callable[[], Hub]) -> None:
        self.hub = hub  # the server's current hub (a restart makes a new one)
        self.delivered = 0  # frames handed to channels (tests, benchmarks)

    def split(self, tx: Transaction) -> Transaction:
        """Deliver the transaction's realtime.messages inserts; return it with the other changes only."""
        rest = [c for c in tx.changes if not is_message(c)]
        if len(rest) == len(tx.changes):
            return tx
        for c in tx.changes:
            if is_message(c) and c.action == "INSERT":
                try:
                    self._deliver(c.record)
                except (ValueError, TypeError, KeyError) as e:
                    log.warning("realtime.messages row not delivered (UnableToBroadcastChanges): %s", e)
        return Transaction(commit_lsn=tx.commit_lsn, commit_timestamp=tx.commit_timestamp, changes=rest,
                           received_ns=tx.received_ns, xid=tx.xid)

    def _deliver(self, row: dict[str, Any]) -> None:
        if row.get("extension") != "broadcast":
            return
        topic, event, mid = row.get("topic"), row.get("event"), row.get("id")
        if not isinstance(topic, str) or not isinstance(event, str) or mid is None:
            raise ValueError("a message needs a topic, an event and an id")
        private = row.get("private") is True
        binary = _binary(row.get("binary_payload"))
        body: Any = binary if binary is not None else row.get("payload")
        if body is None:
            raise ValueError("a message needs a payload")
        room = f"private:realtime:{topic}" if private else f"realtime:{topic}"
        payload = {"type": "broadcast", "event": event, "payload": body, "meta": {"id": str(mid)}}
        self.delivered += self.hub().fan_out(room, "broadcast", payload, vsn2_only=binary is not None,
                                             skip_id=str(mid))
