"""The run as tables (pandas), built once from its analysis: what the report, the charts and the trend read.

* ``events``: one row per delivery, i.e. per (expected event, probe) pair: every probe entitled to the event
  (``entitled``), and every probe that received it without being entitled (a leak, ``outcome`` "unexpected").
  Its class (``outcome``: delivered, recovered, lost, unseen, unexpected; ``duplicated`` and ``late`` beside),
  when it was written and first seen, its write->deliver and commit->deliver latency, and whether a fault had
  cut its probe off at the time (``degraded``: such a delivery is judged by completeness and reconnection,
  not by the latency criteria);
* ``observations``: one row per event a probe received (postgres_changes, broadcast, presence), matched to an
  expected event or not;
* ``faults`` (one row per fault, from its start to its end), ``recoveries`` (one per fault and probe it reached:
  when it noticed, its socket, rejoined, first event, converged) and ``probes``;
* ``figures`` (for the trend): one row per run, criterion and statistic, from the runs' ``results.json``.

Times are seconds since the run started (the run's monotonic clock); latencies are milliseconds. The latency
columns follow ``Analysis.samples`` exactly (the same first delivery, the same clock facts), so a percentile
of the frame is the verdict's figure. The classes follow ``checks.completeness``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.checks import Analysis
from harness.checks.analysis import PROBE_SETS
from harness.checks.completeness import recovered
from harness.checks.reconnection import MILESTONES, spans
from harness.records import Change

__all__ = ["OUTCOMES", "Frames", "build", "figures", "nearest_rank"]

OUTCOMES = ("delivered", "recovered", "lost", "unseen", "unexpected")
_NS = 1e9


def nearest_rank(values: Any, q: float) -> float:
    """The harness's percentile (``checks.stats``: nearest rank, a real sample) over an array or Series."""
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if not arr.size:
        return math.nan
    return float(np.percentile(arr, q, method="inverted_cdf"))


@dataclass(frozen=True)
class Frames:
    events: pd.DataFrame
    observations: pd.DataFrame
    faults: pd.DataFrame
    recoveries: pd.DataFrame
    probes: pd.DataFrame

    def latencies(self, group: str | None, metric: str, probes: str = "protocol") -> pd.Series:
        """Latencies (ms) the latency criteria judge: first deliveries on a healthy network, of one event group
        (None or "*": all), at the probes of ``probes`` (``PROBE_SETS``), as ``Analysis.samples``."""
        ev = self.events
        col = f"{metric}_ms"
        mask = ev["entitled"] & ~ev["degraded"] & ev[col].notna() & ev["flavour"].isin(PROBE_SETS[probes])
        if group not in (None, "*"):
            mask &= ev["group"] == group
        return ev.loc[mask, col]


def _cat(values: list[Any]) -> pd.Categorical:
    return pd.Categorical(values)


def build(a: Analysis, deadlines_ms: Mapping[str, float] | None = None) -> Frames:
    """Every frame of one run, from its analysis (one pass over the deliveries and the observations)."""
    deadlines = dict(deadlines_ms or {})
    info = a.probes
    app_of = {n: p.app for n, p in info.items()}
    latest: dict[tuple[str, str], int] = {}  # (writer, probe) -> the latest write that arrived: "lost" vs "unseen"
    for (_, probe), d in a.deliveries.items():
        if d.seen:
            key = (d.process, probe)
            latest[key] = max(latest.get(key, -1), d.t_write)
    wall, offset = a.wall_origin, a.offset_ns
    n = len(a.deliveries) + len(a.unexpected)
    # strings as lists of the records' own str objects; numbers straight into arrays (no float object per cell:
    # at a million deliveries the frame is built within the memory the analysis already holds)
    eid: list[str] = []
    probe_of: list[str] = []
    group: list[str] = []
    source: list[str] = []
    process: list[str] = []
    t_write, t_seen = np.full(n, np.nan), np.full(n, np.nan)
    w2d_ms, c2d_ms, w2s_ms = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    copies = np.zeros(n, dtype=np.int32)
    entitled, degraded, late = np.ones(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    outcome = np.zeros(n, dtype=np.int8)  # codes of OUTCOMES
    code = {o: i for i, o in enumerate(OUTCOMES)}
    for i, ((e, probe), d) in enumerate(a.deliveries.items()):
        eid.append(e)
        probe_of.append(probe)
        group.append(d.exp.group)
        source.append(d.exp.source)
        process.append(d.process)
        t_write[i] = d.t_write / _NS
        bad = degraded[i] = a.degraded(d)
        if d.seen:
            first = d.seen[0]
            t_seen[i] = first.t / _NS
            w2d = w2d_ms[i] = (first.t - d.t_write) / 1e6
            copies[i] = len(d.seen)
            if isinstance(first, Change) and first.commit_ns is not None and wall is not None:
                c2d_ms[i] = (wall + first.t - (first.commit_ns - offset)) / 1e6
            if isinstance(first, Change) and first.screen_t is not None:
                w2s_ms[i] = (first.screen_t - d.t_write) / 1e6
            deadline = deadlines.get(d.exp.group)
            late[i] = deadline is not None and w2d > deadline and not bad
        elif recovered(a, d):
            outcome[i] = code["recovered"]
        elif latest.get((d.process, probe), -1) > d.t_write:
            outcome[i] = code["lost"]
        else:
            outcome[i] = code["unseen"]
    for i, leak in enumerate(a.unexpected, start=len(a.deliveries)):
        eid.append(leak.exp.eid)
        probe_of.append(leak.probe)
        group.append(leak.exp.group)
        source.append(leak.exp.source)
        process.append("")
        entitled[i] = False
        t_seen[i] = leak.obs.t / _NS
        copies[i] = 1
        outcome[i] = code["unexpected"]
    probes = _cat(probe_of)
    events = pd.DataFrame({
        "eid": _cat(eid), "group": _cat(group), "source": _cat(source), "process": _cat(process),
        "probe": probes,
        "app": _mapped(probes, lambda p: app_of.get(p, p.split("/")[0])),
        "flavour": _mapped(probes, a.flavour),
        "entitled": entitled, "t_write_s": t_write, "t_seen_s": t_seen, "write_to_deliver_ms": w2d_ms,
        "commit_to_deliver_ms": c2d_ms, "write_to_screen_ms": w2s_ms, "copies": copies, "degraded": degraded,
        "outcome": pd.Categorical.from_codes(outcome.astype(np.int64), categories=pd.Index(list(OUTCOMES))),
        "late": late,
    })
    return Frames(events, _observations(a), _faults(a), _recoveries(a), _probes(a))


def _mapped(cat: pd.Categorical, f: Callable[[str], str]) -> Any:
    """``f`` of every value of a categorical, computed once per category."""
    targets = [f(str(c)) for c in cat.categories]
    uniq = sorted(set(targets))
    pos = {u: i for i, u in enumerate(uniq)}
    lut = np.array([pos[t] for t in targets], dtype=np.int64)
    codes = np.asarray(cat.codes, dtype=np.int64)
    mapped = np.where(codes >= 0, lut[np.clip(codes, 0, None)] if lut.size else codes, -1).astype(np.int64)
    return pd.Categorical.from_codes(mapped, categories=pd.Index(uniq))


def _observations(a: Analysis) -> pd.DataFrame:
    matched = {id(o) for d in a.deliveries.values() for o in d.seen} | {id(leak.obs) for leak in a.unexpected}
    t, probe, kind, subject, type_, hit = [], [], [], [], [], []
    for o in a.observations:
        t.append(o.t / _NS)
        probe.append(o.probe)
        kind.append(o.kind)
        if isinstance(o, Change):
            subject.append(o.table)
            type_.append(o.type.upper())
        else:
            subject.append(o.event)
            type_.append("")
        hit.append(id(o) in matched)
    cat = _cat(probe)
    return pd.DataFrame({"t_s": np.array(t, dtype=float), "probe": cat, "flavour": _mapped(cat, a.flavour),
                         "kind": _cat(kind),
                         "subject": _cat(subject), "type": _cat(type_), "matched": np.array(hit, dtype=bool)})


def _faults(a: Analysis) -> pd.DataFrame:
    rows = [{"fault_id": f.fault_id, "name": f.name, "regime": f.regime, "target": f.target,
             "start_s": f.start / _NS, "end_s": math.nan if f.end is None else f.end / _NS,
             "params": ", ".join(f"{k}={v}" for k, v in f.params.items())} for f in spans(a.records)]
    return pd.DataFrame(rows, columns=["fault_id", "name", "regime", "target", "start_s", "end_s", "params"])


def _recoveries(a: Analysis) -> pd.DataFrame:
    def s(t: int | None) -> float:
        return math.nan if t is None else t / _NS

    rows = []
    for r in a.recoveries():
        info = a.probes.get(r.probe)
        row: dict[str, Any] = {
            "probe": r.probe, "app": info.app if info else "", "flavour": a.flavour(r.probe), "fault_id": r.fault_id,
            "regime": r.regime, "fault_start_s": s(r.fault_start), "fault_end_s": s(r.fault_end),
            "disconnected": r.disconnected, "interrupted": r.interrupted, "noticed_s": s(r.noticed_t),
            "detection_ms": math.nan if r.detection_ms is None else r.detection_ms}
        for m in MILESTONES:
            row[f"{m}_s"] = s(getattr(r, f"{m}_t"))
            v = r.ms(m)
            row[f"{m}_ms"] = math.nan if v is None else v
        rows.append(row)
    columns = ["probe", "app", "flavour", "fault_id", "regime", "fault_start_s", "fault_end_s", "disconnected",
               "interrupted", "noticed_s", "detection_ms", *(f"{m}_{u}" for m in MILESTONES for u in ("s", "ms"))]
    return pd.DataFrame(rows, columns=columns)


def _probes(a: Analysis) -> pd.DataFrame:
    rows = [{"probe": p.name, "app": p.app, "user": p.user, "flavour": p.flavour, "original": p.original or "",
             "via": p.via or ""} for p in a.probes.values()]
    return pd.DataFrame(rows, columns=["probe", "app", "user", "flavour", "original", "via"])


def figures(runs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (run, criterion, statistic) from runs' ``results.json`` (as ``trend`` reads them: each a dict with
    ``run``, ``time``, ``series`` and ``results``). ``stat`` "" is the criterion's judged figure (``value``); the
    others are the statistics its details carry (``figures``: p50, p95, p99, max, mean)."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        res = run["results"]
        for c in res.get("criteria", ()):
            base = {"run": run["run"], "time": run["time"], "series": run["series"], "verdict": res.get("verdict"),
                    "criterion": c.get("criterion"), "kind": c.get("kind"), "valid": c.get("valid")}
            rows.append({**base, "stat": "", "value": _number(c.get("value"))})
            figs = (c.get("details") or {}).get("figures") or {}
            for name, v in figs.items():
                rows.append({**base, "stat": str(name), "value": _number(v)})
    return pd.DataFrame(rows, columns=["run", "time", "series", "verdict", "criterion", "kind", "valid", "stat",
                                       "value"])


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    return float(v)


# -- tables derived from the frames (the report's HTML tables and the charts share them) -------------------------

def row_label(app: str, flavour: str, both: bool) -> str:
    """A row of the delivery matrix: the app, and its flavour when the run had both."""
    return f"{app} ({flavour})" if both and flavour != "ours" else app


def matrix(f: Frames) -> pd.DataFrame:
    """Delivery matrix, app (and probe flavour) x event group: expected, delivered live, recovered by refetch,
    missed (lost + unseen), duplicated and leaks, one row per (row, group)."""
    ev = f.events
    cols = ["row", "group", "expected", "delivered", "recovered", "missed", "duplicated", "leaks"]
    if ev.empty:
        return pd.DataFrame(columns=cols)
    both = ev["flavour"].nunique() > 1
    df = pd.DataFrame({
        "app": ev["app"], "flavour": ev["flavour"], "group": ev["group"],
        "expected": ev["entitled"].astype(int),
        "delivered": (ev["outcome"] == "delivered").astype(int),
        "recovered": (ev["outcome"] == "recovered").astype(int),
        "missed": ev["outcome"].isin(("lost", "unseen")).astype(int),
        "duplicated": (ev["entitled"] & (ev["copies"] > 1)).astype(int),
        "leaks": (~ev["entitled"]).astype(int)})
    out = df.groupby(["app", "flavour", "group"], sort=True, observed=True).sum().reset_index()
    out["row"] = [row_label(str(a), str(fl), both) for a, fl in zip(out["app"], out["flavour"], strict=True)]
    out["group"] = out["group"].astype(str)
    out = out.groupby(["row", "group"], sort=True).sum(numeric_only=True).reset_index()
    return out[cols]


def classes(f: Frames) -> dict[str, int]:
    """How many deliveries fell in each class (``checks.completeness``'s counts)."""
    ev = f.events
    counts = {c: int(n) for c, n in ev["outcome"].value_counts().items()}
    out = {c: counts.get(c, 0) for c in OUTCOMES}
    out["late"] = int(ev["late"].sum())
    out["duplicated"] = int((ev["entitled"] & (ev["copies"] > 1)).sum())
    return out


def per_probe(f: Frames) -> pd.DataFrame:
    """One row per probe: what it was entitled to, what it got live, recovered, missed; what it received in all
    (and how much of that matched no expected event: someone else's rows)."""
    ev, obs = f.events, f.observations
    cols = ["probe", "app", "flavour", "expected", "delivered", "recovered", "missed", "leaks", "received", "foreign"]
    names = sorted(set(map(str, ev["probe"].unique())) | set(map(str, obs["probe"].unique())) | set(f.probes["probe"]))
    if not names:
        return pd.DataFrame(columns=cols)
    by = ev.groupby("probe", observed=True)
    got = obs.groupby("probe", observed=True)
    info = f.probes.set_index("probe") if not f.probes.empty else pd.DataFrame(columns=["app", "flavour"])

    def count(series: pd.Series, name: str) -> int:
        return int(series.get(name, 0))

    expected = by["entitled"].sum()
    delivered = (ev["outcome"] == "delivered").groupby(ev["probe"], observed=True).sum()
    rec = (ev["outcome"] == "recovered").groupby(ev["probe"], observed=True).sum()
    missed = ev["outcome"].isin(("lost", "unseen")).groupby(ev["probe"], observed=True).sum()
    leaks = (~ev["entitled"]).groupby(ev["probe"], observed=True).sum()
    received = got.size()
    foreign = (~obs["matched"]).groupby(obs["probe"], observed=True).sum()
    rows = []
    for n in names:
        rows.append({"probe": n, "app": str(info["app"].get(n, "")) if n in info.index else "",
                     "flavour": str(info["flavour"].get(n, "")) if n in info.index else "",
                     "expected": count(expected, n), "delivered": count(delivered, n), "recovered": count(rec, n),
                     "missed": count(missed, n), "leaks": count(leaks, n), "received": count(received, n),
                     "foreign": count(foreign, n)})
    return pd.DataFrame(rows, columns=cols)


def twin_gaps(f: Frames) -> pd.Series:
    """For every event a supabase-js twin and its original both received on a healthy network: how much later the
    twin stamped it (ms), as ``Analysis.flavours``."""
    p = f.probes
    if p.empty or not (p["original"] != "").any():
        return pd.Series([], dtype=float)
    ok = f.events[f.events["entitled"] & f.events["t_seen_s"].notna() & ~f.events["degraded"]]
    originals = dict(zip(p["probe"], p["original"], strict=True))
    twins = ok[ok["probe"].map(lambda n: bool(originals.get(str(n)))).astype(bool)]
    if twins.empty:
        return pd.Series([], dtype=float)
    left = pd.DataFrame({"eid": twins["eid"].astype(str), "original": twins["probe"].map(originals).astype(str),
                         "t_twin": twins["t_seen_s"]})
    right = pd.DataFrame({"eid": ok["eid"].astype(str), "original": ok["probe"].astype(str), "t_orig": ok["t_seen_s"]})
    joined = left.merge(right, on=["eid", "original"], how="inner")
    return (joined["t_twin"] - joined["t_orig"]) * 1e3


def flavour_table(f: Frames) -> pd.DataFrame:
    """The probe flavours side by side: expected, delivered live, write->deliver p50 / p95 / p99 / max on a healthy
    network (nearest rank); and the twin's lag behind its original."""
    ev = f.events[f.events["entitled"]]
    rows = []
    for name in ("ours", "supabase-js", "browser"):
        mine = ev[ev["flavour"] == name]
        if mine.empty:
            continue
        lat = mine.loc[~mine["degraded"], "write_to_deliver_ms"].dropna()
        rows.append({"flavour": name, "expected": len(mine), "delivered": int((mine["outcome"] == "delivered").sum()),
                     **{s: nearest_rank(lat, q) for s, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))}})
    return pd.DataFrame(rows, columns=["flavour", "expected", "delivered", "p50", "p95", "p99", "max"])
