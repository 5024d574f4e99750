"""``zora-harness gate``: preflight, then the flows, then the verdict. Exit code = verdict.

Preflight first: the target is a Supabase (auth answers as GoTrue does, REST as PostgREST does), the
keys are accepted, and (when the database is reachable) the publication holds the tables the apps
subscribe to, RLS is on, the triggers exist. A target that is not a Supabase, or does not answer, is
"unreachable" (exit 3); refused keys are a configuration error (exit 2); a target that answers but
is not set up as the apps need gets a NO-GO naming what is missing, without running anything. Then
the run's lifecycle (``harness/lifecycle.py``) builds its own world, starts the probes, runs every
flow ``rounds`` times, waits the settle window, cleans up its own rows and judges the history.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from harness.apps import DECLARATION, Declaration
from harness.criteria import CriteriaSet, Verdict
from harness.faults import FaultSpec
from harness.flows import FLOWS, BrowserPlan
from harness.lifecycle import Flow, Lifecycle
from harness.network import DeviceNetwork, NetworkError
from harness.phoenix import SUPABASE_JS_POLICY, ReconnectPolicy
from harness.records import PreflightDone
from harness.targets import Target, redact

__all__ = ["GateResult", "Preflight", "TargetRefused", "TargetUnreachable", "preflight", "run_gate"]

TABLES = ("orders", "order_items", "products", "vendors", "cart_items", "notifications", "reviews", "profiles",
          "conversations", "messages")
TRIGGERS = {"on_new_order": "orders", "on_order_status_change": "orders",
            "on_vendor_application_review": "vendor_applications", "on_low_stock": "products",
            "on_auth_user_created": "users"}


class TargetUnreachable(RuntimeError):
    """The target does not answer, or is not a Supabase API; one line for the user, exit 3."""


class TargetRefused(ValueError):
    """The target answers but refuses our keys: a configuration error, exit 2."""


@dataclass(frozen=True)
class Preflight:
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


@dataclass
class GateResult:
    verdict: Verdict
    run_dir: Path


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


PG_NOTIFY_PROBLEM = "broadcast_event uses pg_notify, which Supabase Realtime does not deliver; use realtime.send"


def broadcast_event_problem(bodies: list[str]) -> str | None:
    """The documents' ``public.broadcast_event`` (001 §4.1.1), from the bodies of the functions of that name: a
    body that calls pg_notify and never realtime.send reaches no websocket client."""
    if not bodies:
        return "function public.broadcast_event is missing (001 §4.1.1): the database cannot broadcast events"
    for body in bodies:
        code = "\n".join(line.split("--", 1)[0] for line in body.lower().splitlines())  # comments do not run
        if "pg_notify" in code and "realtime.send" not in code:
            return PG_NOTIFY_PROBLEM
    return None


def preflight(target: Target) -> Preflight:
    """What is missing or broken, as sentences; raises for a target that cannot be used at all."""
    out = Preflight()
    where = target.safe_url
    anon = {"apikey": target.anon_key}
    service = {"apikey": target.service_role_key, "Authorization": f"Bearer {target.service_role_key}"}
    try:
        with httpx.Client(timeout=10) as http:
            r = http.get(f"{target.url}/auth/v1/settings", headers=anon)
            if r.status_code in (401, 403):
                raise TargetRefused(f"target {where} refuses the anon key (HTTP {r.status_code})")
            body = _json(r)
            if r.status_code != 200 or not isinstance(body, dict) or "external" not in body:
                raise TargetUnreachable(f"target {where} is not a Supabase API: GET /auth/v1/settings answered "
                                        f"HTTP {r.status_code}" + ("" if isinstance(body, dict) else ", not JSON"))
            r = http.get(f"{target.url}/auth/v1/admin/users", params={"per_page": 1}, headers=service)
            if r.status_code in (401, 403):
                raise TargetRefused(f"target {where} refuses the service-role key (HTTP {r.status_code})")
            body = _json(r)
            if r.status_code != 200 or not isinstance(body, dict) or "users" not in body:
                raise TargetUnreachable(f"target {where} is not a Supabase API: GET /auth/v1/admin/users answered "
                                        f"HTTP {r.status_code}")
            out.checked.append("auth answers; both keys accepted")
            r = http.get(f"{target.url}/rest/v1/products", params={"select": "id", "limit": 1},
                         headers={**anon, "Authorization": f"Bearer {target.anon_key}"})
            body = _json(r)
            if r.status_code in (401, 403):
                raise TargetRefused(f"target {where}: REST refuses the anon key (HTTP {r.status_code})")
            if r.status_code == 404 and isinstance(body, dict) and "code" in body:
                out.problems.append(f"the Zora schema is missing: REST has no table products ({body.get('code')})")
            elif r.status_code != 200 or not isinstance(body, list):
                raise TargetUnreachable(f"target {where} is not a Supabase API: GET /rest/v1/products answered "
                                        f"HTTP {r.status_code}")
            else:
                out.checked.append("REST serves the Zora schema")
    except httpx.HTTPError as e:
        raise TargetUnreachable(f"target {where} unreachable: {type(e).__name__}") from e
    if not target.db_url:
        out.unchecked.append("publication, RLS and triggers (no database URL: set SUPABASE_DB_URL or --db-url)")
        return out
    try:
        with psycopg.connect(target.db_url, connect_timeout=10) as c:
            published = {row[0] for row in c.execute(
                "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
                " and schemaname = 'public'")}
            missing = [t for t in TABLES if t not in published]
            if missing:
                out.problems.append(f"publication supabase_realtime lacks: {', '.join(missing)}")
            no_rls = [row[0] for row in c.execute(
                "select relname from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r'"
                " and relname = any(%s) and not relrowsecurity", (list(TABLES),))]
            if no_rls:
                out.problems.append(f"row level security is off on: {', '.join(sorted(no_rls))}")
            present = {row[0] for row in c.execute("select tgname from pg_trigger where not tgisinternal")}
            absent = [f"{t} (on {tbl})" for t, tbl in TRIGGERS.items() if t not in present]
            if absent:
                out.problems.append(f"triggers missing: {', '.join(absent)}")
            problem = broadcast_event_problem([row[0] for row in c.execute(
                "select p.prosrc from pg_proc p where p.proname = 'broadcast_event'"
                " and p.pronamespace = 'public'::regnamespace")])
            if problem:
                out.problems.append(problem)
            out.checked.append("publication, RLS, triggers and broadcast_event")
    except psycopg.OperationalError as e:
        first = redact(str(e).strip().splitlines()[0]) if str(e).strip() else type(e).__name__
        raise TargetUnreachable(f"database unreachable for preflight: {first}") from e
    return out


def _no_network_faults(target: Target) -> str | None:
    """Why network faults cannot run against this target, or None."""
    try:
        DeviceNetwork(target, None)  # type: ignore[arg-type]
    except NetworkError as e:
        return str(e).split(": run with", 1)[0]
    return None


def run_gate(target: Target, criteria: CriteriaSet, report_root: Path, rounds: int = 3, settle_s: float = 3.0,
             skip_preflight: bool = False, quiet: bool = False, config: dict[str, Any] | None = None,
             js: bool = True, flows: Sequence[Flow] | None = None, declaration: Declaration = DECLARATION,
             faults: bool = True, seed: int | None = None, blackhole_s: float | None = None,
             churn_probes: int = 100, policy: ReconnectPolicy = SUPABASE_JS_POLICY,
             extra_faults: Sequence[FaultSpec] = (), fault_s: float = 5.0, stack: Any = None,
             browser: BrowserPlan | None = None) -> GateResult:
    """The whole gate against one target. Raises ``TargetRefused`` / ``TargetUnreachable`` (after recording
    them) for a target that cannot be used, ``Interrupt`` for a signal, and any error of the harness itself;
    the run directory is complete in every case."""
    why_not = _no_network_faults(target) if faults else "--no-faults"
    phases = ("flows",) if why_not else ("flows", "resilience", "offline")
    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 31)
    lc = Lifecycle(target, criteria, report_root, js=js, declaration=declaration, quiet=quiet, phases=phases,
                   seed=seed, policy=policy, extra_faults=extra_faults if not why_not else (), fault_s=fault_s,
                   stack=stack, config={"rounds": rounds, "settle_s": settle_s, **(config or {})}, browser=browser)
    h = lc.run.history
    with lc:
        lc.show.say(f"run {lc.run.run_id} -> {lc.run.dir}"
                    + (f"; faults: reset, black hole, the phone offline, churn; seed {seed}" if not why_not
                       else f"; no faults ({why_not})"))
        if skip_preflight:
            h.append(PreflightDone(skipped=True))
            lc.show.say("preflight skipped")
        else:
            lc.stage("preflight")
            try:
                pf = preflight(target)
            except (TargetRefused, TargetUnreachable) as e:
                h.append(PreflightDone(problems=(str(e),), fatal=True))
                raise
            h.append(PreflightDone(problems=tuple(pf.problems), checked=tuple(pf.checked),
                                   unchecked=tuple(pf.unchecked)))
            if pf.problems:
                lc.show.say("preflight: NO-GO: " + "; ".join(pf.problems))
            else:
                lc.show.say("preflight ok: " + "; ".join(pf.checked)
                            + (f"; not checked: {'; '.join(pf.unchecked)}; the flows still show what they break"
                               " as missed events" if pf.unchecked else ""))
        if skip_preflight or not pf.problems:
            lc.drive(lambda: lc.main(FLOWS if flows is None else flows, rounds, settle_s, blackhole_s, churn_probes))
    assert lc.verdict is not None
    return GateResult(lc.verdict, lc.run.dir)
