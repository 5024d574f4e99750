"""What a load process counts, with no record per delivery, and how the master adds the workers' counts up.

* a ``Stream`` per publisher user: what it writes (table, type, event group and the facts that decide who
  may see it, as ``harness/apps.py`` judges them), and when each write (by sequence number) was sent,
  with the numbers that failed or whose outcome is unknown;
* a ``Watch`` per subscriber user: its app, screens and viewer (who it is, as RLS sees it), when it went
  live and when it stopped, and per publisher the ``SeqSet`` of numbers it saw; join and reconnect counts;
* a ``LatencyBook`` of HdrHistograms (write->deliver and commit->deliver per event group, reconnect
  durations).

A worker sends ``Tally.take()`` with every Locust report (``report_to_master``): the histograms and the
send times recorded since its last report, and the current state of its streams and watches (small:
ranges, not numbers). The master's ``Merged.add`` keeps the latest state per stream and watch and adds
the histograms, so a worker that dies keeps everything up to its last report.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.load.hdr import LatencyBook
from harness.load.seqset import SeqSet

__all__ = ["Merged", "Stream", "Tally", "Watch"]


@dataclass
class Stream:
    pub: str  # the publisher user's id, unique in the run
    kind: str  # the write: place_order, set_status, update_product
    table: str
    type: str  # INSERT | UPDATE
    group: str  # the event group the criteria judge it by
    facts: dict[str, Any]  # who may see the row (apps.VISIBLE) and which filters accept it
    sent: array[int] = field(default_factory=lambda: array("q"))  # wall ns each write was sent, by seq - 1
    bad: SeqSet = field(default_factory=SeqSet)  # seqs that failed or whose outcome is unknown
    failed: int = 0
    unknown: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the verdict's writes line
    _reported: int = 0

    def head(self) -> dict[str, Any]:
        return {"pub": self.pub, "kind": self.kind, "table": self.table, "type": self.type, "group": self.group,
                "facts": self.facts}


@dataclass
class Watch:
    sid: str
    app: str
    user: str
    screens: tuple[str, ...]
    viewer: dict[str, Any]  # uid, role, vendor_id
    live_ns: int = 0  # wall ns when every postgres_changes channel was live (0: never)
    end_ns: int = 0  # wall ns when it stopped listening (0: still listening)
    seen: dict[str, SeqSet] = field(default_factory=dict)  # publisher -> seqs seen
    late: dict[str, int] = field(default_factory=dict)  # event group -> deliveries past the group's deadline
    foreign: int = 0  # events with no mark of this run's publishers (a trigger's notification, say)
    joins: int = 0  # join attempts
    joined: int = 0  # join replies ok (postgres_changes channels: and then the server's system ok)
    held: int = 0  # channels still joined when it stopped
    channels: int = 0  # channels it joins
    reconnects: int = 0
    error: str = ""
    stamps_kernel: int = 0  # socket reads stamped by the kernel's receive timestamp (harness.phoenix.rxstamp)
    stamps_read: int = 0  # socket reads stamped when the read returned (TLS, or no kernel stamps)

    def state(self) -> dict[str, Any]:
        return {"sid": self.sid, "app": self.app, "user": self.user, "screens": list(self.screens),
                "viewer": self.viewer, "live_ns": self.live_ns, "end_ns": self.end_ns,
                "seen": {p: s.to_wire() for p, s in self.seen.items()}, "late": dict(self.late),
                "foreign": self.foreign, "joins": self.joins, "joined": self.joined, "held": self.held,
                "channels": self.channels, "reconnects": self.reconnects, "error": self.error,
                "stamps_kernel": self.stamps_kernel, "stamps_read": self.stamps_read}

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> Watch:
        return cls(sid=d["sid"], app=d["app"], user=d["user"], screens=tuple(d["screens"]), viewer=dict(d["viewer"]),
                   live_ns=d["live_ns"], end_ns=d["end_ns"],
                   seen={p: SeqSet.from_wire(list(v)) for p, v in d["seen"].items()}, late=dict(d["late"]),
                   foreign=d["foreign"], joins=d["joins"], joined=d["joined"], held=d["held"], channels=d["channels"],
                   reconnects=d["reconnects"], error=d["error"], stamps_kernel=d.get("stamps_kernel", 0),
                   stamps_read=d.get("stamps_read", 0))


def process_figures() -> dict[str, float]:
    """This process's CPU seconds, resident memory (MB) and wall clock (s): the load generator's own cost."""
    rss_kb = 0.0
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            rss_kb = next((float(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")), 0.0)
    except OSError:
        pass
    return {"cpu_s": time.process_time(), "rss_mb": rss_kb / 1024, "wall_s": time.time()}


class Tally:
    """One process's counts (a worker's, or the only process's). Greenlets of one process share it."""

    def __init__(self) -> None:
        self.book = LatencyBook()
        self.streams: dict[str, Stream] = {}
        self.watches: dict[str, Watch] = {}
        self.lock = threading.Lock()  # a gevent lock under monkey patching; take() must not interleave a record

    def stream(self, s: Stream) -> Stream:
        self.streams[s.pub] = s
        return s

    def watch(self, w: Watch) -> Watch:
        self.watches[w.sid] = w
        return w

    def take(self) -> dict[str, Any]:
        """Everything since the last take (histograms, send times), and the streams' and watches' state."""
        with self.lock:
            streams = []
            for s in self.streams.values():
                new = s.sent[s._reported:].tolist()
                streams.append({**s.head(), "from": s._reported, "sent": new, "bad": s.bad.to_wire(),
                                "failed": s.failed, "unknown": s.unknown, "errors": s.errors[:5]})
                s._reported += len(new)
            return {"hist": self.book.take(), "streams": streams, "watches": [w.state() for w in self.watches.values()],
                    "proc": process_figures()}


RSS_POINTS = 4000


class Merged:
    """The master's sum of every process's ``take()`` (a local run adds its own)."""

    def __init__(self) -> None:
        self.book = LatencyBook()
        self.streams: dict[str, Stream] = {}
        self.watches: dict[str, Watch] = {}
        self.reports: dict[str, int] = {}  # process -> reports received
        self.last_report_ns: dict[str, int] = {}
        self.source_of: dict[str, str] = {}  # subscriber -> the process that runs it
        self.procs: dict[str, dict[str, dict[str, float]]] = {}  # process -> its first and last figures
        self.rss: dict[str, list[tuple[float, float]]] = {}  # process -> (wall s, RSS MB) per report, bounded

    def add(self, source: str, data: Mapping[str, Any], at_ns: int) -> None:
        self.reports[source] = self.reports.get(source, 0) + 1
        self.last_report_ns[source] = at_ns
        self.book.merge(data.get("hist", {}))
        if "proc" in data:
            p = self.procs.setdefault(source, {"first": dict(data["proc"])})
            p["last"] = dict(data["proc"])
            self.sample(source, data["proc"])
        for d in data.get("streams", ()):
            s = self.streams.get(d["pub"])
            if s is None:
                s = self.streams[d["pub"]] = Stream(d["pub"], d["kind"], d["table"], d["type"], d["group"],
                                                    dict(d["facts"]))
            if d["from"] != len(s.sent):  # a gap would misplace every later send time: keep what is certain
                continue
            s.sent.extend(d["sent"])
            s.bad = SeqSet.from_wire(list(d["bad"]))
            s.failed, s.unknown, s.errors = d["failed"], d["unknown"], list(d["errors"])
        for d in data.get("watches", ()):
            self.watches[d["sid"]] = Watch.from_state(d)
            self.source_of[d["sid"]] = source

    def sample(self, source: str, proc: Mapping[str, float]) -> None:
        """A process's memory at one moment (with each worker's report; every 3 s in a local run's own sampler)."""
        series = self.rss.setdefault(source, [])
        if len(series) < RSS_POINTS:  # every 3 s: 4000 points are more than three hours
            series.append((float(proc["wall_s"]), float(proc["rss_mb"])))

    def writes(self) -> Iterator[Stream]:
        return iter(self.streams.values())
