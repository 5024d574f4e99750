"""The records a history holds: frozen dataclasses that writers construct and checkers read.

One class per kind of fact, each with a ``kind`` tag that names it in the JSON line:

* what drivers did: ``Op`` (``invoke`` -> ``ok`` | ``fail`` | ``info``), carrying on ``ok`` the
  ``Expectation`` of every event the write must cause and who is entitled to it; the offline queue's
  ``Queued`` writes, the ``Conflict`` found when it flushed, and what the database held afterwards
  (``QueueVerified``);
* what probes saw: ``Change`` (postgres_changes), ``Broadcast``, ``Presence``, and the state of their
  connections and channels (``ConnState``, ``System``, ``SubscriptionError``, ``ProbeLive``,
  ``ChannelClosed``, ``ProbeError``), a browser probe's indicator (``Indicator``, ``Screenshot``), every join
  attempt (``JoinAttempt``) and what an app read back after it rejoined (``Refetch``);
* what the nemesis did: ``Fault`` (``start`` and ``end`` of one fault, by ``fault_id``) and what it did
  to a client: ``Reconnection``;
* facts about the run: ``RunStarted``, ``RunPlan``, ``ClockFacts``, ``ProbeSet``, ``JsProbesStarted``,
  ``BrowserStarted``, ``BrowserTab``, ``PreflightDone``, ``Created``, ``Stage``, ``RunError``, ``Interrupted``,
  ``LoopError``, ``Cleanup``, ``Note``
  and, last, ``RunFinished`` (a history without it did not finish: the harness was killed).

Every record has ``t`` (ns on the run's monotonic clock; -1 means "stamp it when appended") and
``seq`` (its place in the file, given by ``History``). Reading validates every line against these
classes (pydantic, strict): an unknown kind, a missing or mistyped field, or an unknown key is
reported with its line number, never silently dropped or defaulted.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar, Union, dataclass_transform

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "FORMAT",
    "Broadcast",
    "BrowserStarted",
    "BrowserTab",
    "Change",
    "ChannelClosed",
    "Cleanup",
    "ClockFacts",
    "Conflict",
    "ConnState",
    "Created",
    "Expectation",
    "Fault",
    "Indicator",
    "Interrupted",
    "JoinAttempt",
    "JsProbesStarted",
    "LoopError",
    "Note",
    "Observation",
    "Op",
    "PreflightDone",
    "Presence",
    "ProbeError",
    "ProbeInfo",
    "ProbeLive",
    "ProbeSet",
    "QueueVerified",
    "Queued",
    "Reconnection",
    "Record",
    "RecordError",
    "Refetch",
    "RunError",
    "RunFinished",
    "RunPlan",
    "RunStarted",
    "Screenshot",
    "Stage",
    "SubInfo",
    "SubscriptionError",
    "System",
    "decode",
    "encode",
]

FORMAT = 2  # the history's format version, in RunStarted; format 1 was untyped dicts
_STRICT = ConfigDict(extra="forbid", strict=True)


class RecordError(ValueError):
    """A line that is not one of the records below (or not JSON): reported, never dropped in silence."""


_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(field,))
def _record(cls: type[_T]) -> type[_T]:
    """A frozen, keyword-only dataclass that pydantic validates strictly (no unknown keys) when read back. Slotted:
    a history of a million records is held in memory whole by ``analyze``, and a record without an instance
    ``__dict__`` takes about half the memory."""
    cls.__pydantic_config__ = _STRICT  # type: ignore[attr-defined]
    return dataclass(frozen=True, kw_only=True, slots=True)(cls)


@_record
class Base:
    t: int = -1  # ns on the run's monotonic clock; -1 = stamp when appended
    seq: int = -1  # the record's place in the history, given by History.append


# -- what drivers did ---------------------------------------------------------------------------

@_record
class Expectation:
    """One event a write must cause, and exactly which probes are entitled to it (``harness/apps.py``).

    ``source`` says which observation it is matched against: a ``Change`` (``subject`` = table,
    ``type`` = INSERT | UPDATE | DELETE), a ``Broadcast`` (``subject`` = event name) or a ``Presence``
    (``subject`` = join | leave). ``match`` holds column (or payload key) -> value, compared as text.
    ``group`` is the event group the criteria file judges (``order_visible``, ``status_update``, ...).
    """

    eid: str
    source: Literal["change", "broadcast", "presence"]
    subject: str
    type: str = ""
    match: dict[str, str] = field(default_factory=dict)
    deliver_to: tuple[str, ...] = ()
    group: str

    def matches(self, obs: Observation) -> bool:
        if self.source == "change":
            if not isinstance(obs, Change) or obs.table != self.subject or obs.type.upper() != self.type:
                return False
            row = obs.record or obs.old_record or {}
        elif self.source == "broadcast":
            if not isinstance(obs, Broadcast) or obs.event != self.subject:
                return False
            row = obs.payload
        else:
            if not isinstance(obs, Presence) or obs.event != self.subject:
                return False
            row = {**obs.meta, "key": obs.key}
        return all(str(row.get(k)) == v for k, v in self.match.items())


@_record
class Op(Base):
    kind: Literal["op"] = "op"
    process: str
    type: Literal["invoke", "ok", "fail", "info"]
    f: str
    op_id: int
    expect: tuple[Expectation, ...] = ()
    error: str | None = None
    code: str | None = None
    result: Any = None
    args: dict[str, Any] = field(default_factory=dict)


# -- what probes saw ------------------------------------------------------------------------------

@_record
class Change(Base):
    kind: Literal["change"] = "change"
    probe: str
    channel: str
    table: str
    type: str
    record: dict[str, Any] | None = None
    old_record: dict[str, Any] | None = None
    commit_ns: int | None = None  # the row's commit timestamp (server wall clock, ns since the epoch)
    # a browser probe's: when the DOM mutation showing the change was observed, and the next animation frame
    # after it (when it was painted; None when none came, as in a tab Chromium does not render)
    screen_t: int | None = None
    frame_t: int | None = None


@_record
class Broadcast(Base):
    kind: Literal["broadcast"] = "broadcast"
    probe: str
    channel: str
    event: str
    payload: dict[str, Any] = field(default_factory=dict)


@_record
class Presence(Base):
    kind: Literal["presence"] = "presence"
    probe: str
    channel: str
    event: Literal["join", "leave"]
    key: str
    meta: dict[str, Any] = field(default_factory=dict)


@_record
class System(Base):
    kind: Literal["system"] = "system"
    probe: str
    channel: str
    status: str | None = None
    message: str | None = None
    extension: str | None = None


@_record
class SubscriptionError(Base):
    kind: Literal["subscription_error"] = "subscription_error"
    probe: str
    channel: str
    message: str | None = None


@_record
class JoinAttempt(Base):
    """One join of one channel and how it ended: ``ok`` (for a postgres_changes channel the server's
    ``system`` ok follows separately), ``error`` (refused), ``timeout`` (no reply), ``lost`` (the socket went
    away first). Rejoins after a reconnect are attempts too: connection reliability counts them."""

    kind: Literal["join"] = "join"
    probe: str
    channel: str
    outcome: Literal["ok", "error", "timeout", "lost"]
    detail: str | None = None


@_record
class Refetch(Base):
    """What an app reads over REST after it rejoined (Supabase Realtime replays nothing): the rows of one
    subscribed table changed since it lost the connection, as the database holds them now."""

    kind: Literal["refetch"] = "refetch"
    probe: str
    table: str
    since_ns: int  # the server wall time the read asked from (ns since the epoch)
    rows: tuple[dict[str, Any], ...] = ()
    error: str | None = None


@_record
class ProbeLive(Base):
    kind: Literal["live"] = "live"
    probe: str
    channels: int
    errors: tuple[str, ...] = ()


@_record
class ConnState(Base):
    """A connection's (``channel`` None) or channel's state: connecting, open, closed, heartbeat_timeout,
    SUBSCRIBED, CHANNEL_ERROR, TIMED_OUT, CLOSED (supabase-js's channel states)."""

    kind: Literal["state"] = "state"
    probe: str
    state: str
    channel: str | None = None
    error: str | None = None


@_record
class ChannelClosed(Base):
    kind: Literal["closed"] = "closed"
    probe: str
    channel: str | None = None
    reason: str = ""


@_record
class ProbeError(Base):
    kind: Literal["probe_error"] = "probe_error"
    probe: str
    message: str


@_record
class Indicator(Base):
    """What a browser probe's connection-status indicator (000 §3.1 Task 4) showed from ``t`` on: Live,
    Reconnecting or Offline, stamped when the page's DOM changed (the page's clock mapped onto the run's)."""

    kind: Literal["indicator"] = "indicator"
    probe: str
    state: Literal["Live", "Reconnecting", "Offline"]
    visibility: str = "visible"  # the tab's document.visibilityState then


@_record
class Screenshot(Base):
    kind: Literal["screenshot"] = "screenshot"
    probe: str
    state: str  # the indicator state it shows
    path: str  # relative to the run directory


@_record
class Queued(Base):
    """A write an app could not send (it was offline) and queued locally, to send when the connection returns.
    ``key`` is its idempotency key: the row's own id for an insert, the row's natural key otherwise."""

    kind: Literal["queued"] = "queued"
    process: str
    key: str
    f: str
    table: str


@_record
class Conflict(Base):
    """A queued write whose row changed on the server since the app last saw it (another device wrote it):
    detected when the queue flushed, resolved as 001 §8 says (last write wins)."""

    kind: Literal["conflict"] = "conflict"
    process: str
    key: str
    table: str
    base: str | None  # the row's updated_at the app had when it queued the write
    server: str | None  # the row's updated_at on the server when the queue flushed
    resolution: str = "last-write-wins"


@_record
class QueueVerified(Base):
    """After the flush, what the database holds for one queued write (asked as the service role): how many rows
    carry its key (1: applied once; 0: lost; 2 or more: applied twice), and the row's final state."""

    kind: Literal["queue_verified"] = "queue_verified"
    key: str
    table: str
    count: int
    state: dict[str, Any] = field(default_factory=dict)


# -- what the nemesis did ------------------------------------------------------------------------

@_record
class Fault(Base):
    """One fault's ``start`` or ``end``; the two share ``fault_id``. ``name``: reset, blackhole, latency,
    bandwidth, restart_realtime, restart_postgres, pause_postgres, ..."""

    kind: Literal["fault"] = "fault"
    fault_id: str
    name: str
    phase: Literal["start", "end"]
    target: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@_record
class Reconnection(Base):
    """How one client came back after a fault: times on the run's clock, None if it never did."""

    kind: Literal["reconnection"] = "reconnection"
    probe: str
    fault_id: str
    regime: str  # reset | blackhole | ...
    noticed_t: int | None = None  # the client saw the connection was gone
    rejoined_t: int | None = None  # every channel joined and live again
    first_event_t: int | None = None  # the first live event after the fault
    converged_t: int | None = None  # the app's state matched the database again (after its refetch)


# -- facts about the run ---------------------------------------------------------------------------

@_record
class SubInfo:
    table: str
    filter: str | None = None
    event: str = "*"
    changed_at: str = "updated_at"  # the column a refetch after a reconnect reads "changed since" by


@_record
class ProbeInfo:
    name: str
    app: str
    user: str
    flavour: Literal["ours", "supabase-js", "browser"]
    original: str | None = None  # for a twin: the probe whose subscriptions it repeats
    subs: tuple[SubInfo, ...] = ()
    presence: str | None = None
    topics: tuple[str, ...] = ()
    private_topics: tuple[str, ...] = ()  # the broadcast topics it joins as private channels (RLS on realtime.messages)
    via: str | None = None  # the fault proxy its socket goes through (None: direct)
    heartbeat_s: float = 25.0  # its client policy (supabase-js's: heartbeat 25 s, backoff 1, 2, 5, 10 s)
    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)

    def pg_channels(self) -> tuple[tuple[str, SubInfo], ...]:
        """Its postgres_changes channels, one per subscription: (name, subscription). The one place channel
        names are made: both flavours join these (Node is told them)."""
        return tuple((f"{self.name}:{s.table}:{i}", s) for i, s in enumerate(self.subs))

    def topics_joined(self) -> tuple[str, ...]:
        """Every topic it joins on the wire (``realtime:<name>``): postgres_changes channels, presence, broadcasts."""
        names = [n for n, _ in self.pg_channels()] + ([self.presence] if self.presence else []) + list(self.topics)
        return tuple(f"realtime:{n}" for n in names)


@_record
class RunStarted(Base):
    kind: Literal["run_started"] = "run_started"
    run_id: str
    format: int
    target: dict[str, Any]
    wall_origin: int  # wall clock (ns since the epoch) at t = 0


@_record
class ClockFacts(Base):
    """Where wall times fall on the run's timeline; a later record (the server offset, once estimated)
    refines an earlier one."""

    kind: Literal["clock"] = "clock"
    wall_origin: int
    offset_ns: int = 0  # the server's wall clock minus ours
    error_ns: int = 0  # the offset is known to within +/- this
    estimated: bool = False


@_record
class ProbeSet(Base):
    kind: Literal["probes"] = "probes"
    probes: tuple[ProbeInfo, ...]


@_record
class JsProbesStarted(Base):
    kind: Literal["js_probes"] = "js_probes"
    node: str
    probes: tuple[str, ...]
    clock_check_ns: tuple[int, int, int]  # ours before, Node's, ours after: Node's must fall between


@_record
class BrowserStarted(Base):
    kind: Literal["browser_probes"] = "browser_probes"
    browser: str  # Chromium's version
    probes: tuple[str, ...]
    clock_check_ns: tuple[int, int, int]  # ours before, the driver's, ours after: the driver's must fall between
    nice: int = 0  # the driver's (and Chromium's) niceness
    priority_capped: bool = False  # no Chromium process could lower it (CAP_SYS_NICE dropped)


@_record
class BrowserTab(Base):
    """A browser probe's tab: where its page clock falls on the run's (``phase`` start: as mapped; end: measured
    again, ``drift_ns`` since), whether Chromium shows it (``visibility``) and whether it has the focus."""

    kind: Literal["browser_tab"] = "browser_tab"
    probe: str
    phase: Literal["start", "end"] = "start"
    clock_error_ns: int = 0
    drift_ns: int = 0
    visibility: str = "visible"
    focused: bool = False
    front: bool = True  # the harness meant it to be in the front (False: opened behind another tab)


@_record
class RunPlan(Base):
    """What the run means to test: its phases (``flows``; ``resilience``: faults and reconnection; ``offline``:
    the offline queue; ``churn``: reliability under random faults), and the seed random faults come from (so
    the run can be replayed). Criteria of a phase the plan leaves out are not judged, and the verdict says so."""

    kind: Literal["plan"] = "plan"
    phases: tuple[str, ...]
    seed: int | None = None
    faults: tuple[str, ...] = ()  # the fault specifications the plan injects


@_record
class PreflightDone(Base):
    kind: Literal["preflight"] = "preflight"
    problems: tuple[str, ...] = ()
    checked: tuple[str, ...] = ()
    unchecked: tuple[str, ...] = ()
    skipped: bool = False
    fatal: bool = False  # the target could not be used at all (unreachable, refused, not a Supabase)


@_record
class Created(Base):
    """An object the run created on the target, recorded before the next step, so cleanup knows it
    even when the build fails halfway (auth user, shop, product, ...)."""

    kind: Literal["created"] = "created"
    table: str
    id: str
    label: str = ""


@_record
class Stage(Base):
    kind: Literal["stage"] = "stage"
    name: str


@_record
class RunError(Base):
    kind: Literal["run_error"] = "run_error"
    error: str
    stage: str = ""
    internal: bool = False  # a bug of the harness, not a failure of the target


@_record
class Interrupted(Base):
    kind: Literal["interrupted"] = "interrupted"
    signal: str  # SIGINT, SIGTERM, SIGHUP
    stage: str = ""


@_record
class LoopError(Base):
    kind: Literal["loop_error"] = "loop_error"
    message: str
    exception: str | None = None


@_record
class Cleanup(Base):
    """What the run deleted of its own rows, and what it found left afterwards by its tag."""

    kind: Literal["cleanup"] = "cleanup"
    problems: tuple[str, ...] = ()
    left: dict[str, int] = field(default_factory=dict)  # table -> rows of this run still there
    verified: bool = False  # ``left`` comes from querying the target by the run's tag
    late: bool = False


@_record
class Note(Base):
    kind: Literal["note"] = "note"
    text: str
    data: dict[str, Any] = field(default_factory=dict)


@_record
class RunFinished(Base):
    kind: Literal["run_finished"] = "run_finished"
    outcome: Literal["completed", "interrupted", "failed"]
    settle_s: float = 0.0


Observation = Change | Broadcast | Presence
Record = Union[  # noqa: UP007 (pydantic's discriminated union)
    Op, Queued, Conflict, QueueVerified, Change, Broadcast, Presence, System, SubscriptionError, JoinAttempt, Refetch,
    ProbeLive, ConnState, ChannelClosed, ProbeError, Indicator, Screenshot, BrowserStarted, BrowserTab,
    Fault, Reconnection, RunStarted, RunPlan, ClockFacts, ProbeSet, JsProbesStarted, PreflightDone, Created, Stage,
    RunError,
    Interrupted, LoopError, Cleanup, Note, RunFinished,
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Annotated[Record, Field(discriminator="kind")])
KINDS = frozenset(c.__dataclass_fields__["kind"].default for c in Record.__args__)  # type: ignore[attr-defined]


def _plain(v: Any) -> Any:
    """json.dumps' fallback: nested records (Expectation, ProbeInfo) as objects, anything else as text."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f: getattr(v, f) for f in v.__dataclass_fields__}
    return str(v)


def encode(rec: Any, seq: int, t: int) -> str:
    """One record as one JSON line (no newline), with its place and time."""
    body = {f: getattr(rec, f) for f in rec.__dataclass_fields__}
    body["seq"], body["t"] = seq, t
    return json.dumps(body, separators=(",", ":"), default=_plain)


def decode(line: str | bytes) -> Record:
    """A JSON line back into its record; ``RecordError`` (one line, naming the first problem) otherwise."""
    try:
        rec: Record = _ADAPTER.validate_json(line)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        if err["type"] == "json_invalid":
            raise RecordError("not JSON") from None
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            kind = json.loads(line).get("kind") if err["type"] == "union_tag_invalid" else None
            raise RecordError(f"unknown record kind {kind!r}" if kind else "no record kind") from None
        if not err["loc"]:
            raise RecordError("not a JSON object") from None
        where = ".".join(str(p) for p in err["loc"][1:]) or "record"
        msg = "unknown key" if err["type"] == "unexpected_keyword_argument" else err["msg"]
        raise RecordError(f"{err['loc'][0]} record: {where}: {msg}") from None
    return rec
