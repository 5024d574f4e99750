"""Removing a run's rows from a target, found by the run's tag, and proving that nothing is left.

Every row a run creates carries its run id (``zr`` + 8 hex digits): its users' e-mail addresses end in
``-<run id>@zora-harness.test`` (and so do their profiles'), its shops, products, orders and
conversations name it. ``find`` asks the target (as the service role) for those rows; ``clean``
deletes them in dependency order (orders first: they restrict deleting users and shops; then the
users, whose deletion cascades to profiles, shops, products, carts, notifications and messages),
retrying transient errors (a restarting database, a 5xx) with bounded backoff, and then asks again:
what it still finds is reported as left, never assumed gone. Only rows carrying the tag are ever
deleted, so this is safe on a shared database; ``zora-harness clean --run-id`` runs the same code
for a run that was killed before its own cleanup.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from postgrest.exceptions import APIError
from supabase import Client
from supabase_auth.errors import AuthError

__all__ = ["RUN_ID", "CleanupReport", "clean", "find", "tag_email"]

RUN_ID = re.compile(r"^zr[0-9a-f]{8}$")
EMAIL_DOMAIN = "zora-harness.test"
ATTEMPTS = 6  # with backoff 0.25, 0.5, 1, 2, 4 s: a database restart has about 8 s to come back
T = TypeVar("T")


def tag_email(name: str, run_id: str) -> str:
    return f"{name}-{run_id}@{EMAIL_DOMAIN}"


@dataclass
class CleanupReport:
    problems: list[str] = field(default_factory=list)  # errors met on the way (retried or not)
    left: dict[str, int] = field(default_factory=dict)  # table -> rows of the run still found afterwards
    verified: bool = False  # ``left`` comes from asking the target after the deletes


def _transient(e: Exception) -> bool:
    if isinstance(e, httpx.TransportError):
        return True
    if isinstance(e, APIError):
        code = str(e.code or "")
        return not code or code.startswith(("08", "57P", "53", "PGRST00")) or code in ("40001", "40P01")
    if isinstance(e, AuthError):
        return int(getattr(e, "status", 0) or 0) >= 500 or getattr(e, "status", None) is None
    return False


def _message(e: Exception) -> str:
    return str(getattr(e, "message", None) or e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__


def _retry(what: str, fn: Callable[[], T], problems: list[str], sleep: Callable[[float], None] = time.sleep) -> T | None:
    delay = 0.25
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return fn()
        except (APIError, AuthError, httpx.HTTPError) as e:
            transient = _transient(e)
            problems.append(f"{what}: {_message(e)}" + (f" (attempt {attempt}, retrying)" if transient
                                                          and attempt < ATTEMPTS else ""))
            if not transient or attempt == ATTEMPTS:
                return None
            sleep(delay)
            delay *= 2
    return None


def _ids(data: Any, col: str = "id") -> list[str]:
    return [str(r[col]) for r in data if isinstance(r, dict) and r.get(col)] if isinstance(data, list) else []


def find(admin: Client, run_id: str, known_users: Iterable[str] = (), problems: list[str] | None = None
         ) -> dict[str, list[str]] | None:
    """The run's rows on the target, by table (ids); None if the target could not be asked."""
    if not RUN_ID.match(run_id):
        raise ValueError(f"{run_id!r} is not a run id (zr + 8 hex digits)")
    probs = problems if problems is not None else []
    like = f"*{run_id}*"

    def q(table: str, build: Callable[[Any], Any]) -> list[str] | None:
        got = _retry(f"find {table}", lambda: build(admin.table(table).select("id")).execute(), probs)
        return None if got is None else _ids(got.data)

    users = q("profiles", lambda t: t.like("email", f"*-{run_id}@{EMAIL_DOMAIN}"))
    if users is None:
        return None
    users = sorted(set(users) | set(known_users))
    keyed = users or ["00000000-0000-0000-0000-000000000000"]  # an id no row has: in_() needs one
    out: dict[str, list[str]] = {"users": users}
    queries: dict[str, Callable[[Any], Any]] = {
        "vendors": lambda t: t.or_(f"shop_name.like.{like},user_id.in.({','.join(keyed)})"),
        "products": lambda t: t.like("name", like),
        "orders": lambda t: t.or_(f"notes.like.{like},user_id.in.({','.join(keyed)})"),
        "conversations": lambda t: t.in_("customer_id", keyed),
        "vendor_applications": lambda t: t.in_("user_id", keyed),
    }
    for table, build in queries.items():
        ids = q(table, build)
        if ids is None:
            return None
        out[table] = ids
    return out


def clean(admin: Client, run_id: str, known_users: Iterable[str] = (),
          sleep: Callable[[float], None] = time.sleep) -> CleanupReport:
    """Delete the run's rows in dependency order, then look again: what is still there is ``left``."""
    report = CleanupReport()
    found = find(admin, run_id, known_users, report.problems)
    if found is None:
        return report  # could not even look: not verified, nothing claimed
    p = report.problems
    if found["orders"]:
        _retry("delete orders", lambda: admin.table("orders").delete().in_("id", found["orders"]).execute(), p, sleep)
    for table in ("conversations", "vendor_applications"):
        if found[table]:
            _retry(f"delete {table}", lambda t=table: admin.table(t).delete().in_("id", found[t]).execute(),  # type: ignore[misc]
                   p, sleep)
    for uid in found["users"]:
        _retry(f"delete user {uid}", lambda u=uid: admin.auth.admin.delete_user(u), p, sleep)  # type: ignore[misc]
    if found["vendors"] or found["products"]:  # shops or products not reached through a user (none expected)
        for table in ("products", "vendors"):
            again = find(admin, run_id, (), p) or {}
            if again.get(table):
                _retry(f"delete {table}", lambda t=table, ids=again[table]: admin.table(t).delete()  # type: ignore[misc]
                       .in_("id", ids).execute(), p, sleep)
    after = find(admin, run_id, (), p)
    if after is None:
        return report
    unprofiled = sorted(set(known_users) - set(after["users"]))  # a user whose profile never came to be
    exists = [_user_exists(admin, u, p) for u in unprofiled]
    report.verified = all(e is not None for e in exists)
    after["users"] = [*after["users"], *(u for u, e in zip(unprofiled, exists, strict=True) if e)]
    report.left = {t: len(ids) for t, ids in after.items() if ids}
    return report


def _user_exists(admin: Client, uid: str, problems: list[str]) -> bool | None:
    """Whether the auth user is still there; None if the target would not say."""
    try:
        admin.auth.admin.get_user_by_id(uid)
    except AuthError as e:
        if getattr(e, "status", None) == 404 or "not found" in str(e).lower():
            return False
        problems.append(f"look up user {uid}: {_message(e)}")
        return None
    except httpx.HTTPError as e:
        problems.append(f"look up user {uid}: {_message(e)}")
        return None
    return True
