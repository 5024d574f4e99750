"""The verdict files of a run, drawn from the verdict and the analysis alone (no re-checking here):
results.json, verdict.md, junit.xml, and charts (latency CDF per criterion, delivery matrix of app x
event group).

Everything is computed from the run directory: ``zora-harness analyze`` rebuilds the same files from a
stored history, into a directory of its own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from harness.checks import LABELS, Analysis, percentile
from harness.checks.reconnection import MILESTONES, FaultSpan, spans
from harness.criteria import NOT_JUDGED, Verdict

__all__ = ["VERDICT_FILES", "headline", "results", "write_report"]

VERDICT_FILES = ("results.json", "verdict.md", "junit.xml", "charts/latency_cdf.png", "charts/delivery_matrix.png",
                 "charts/latency_over_time.png")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.1f}"
    return "n/a" if v is None else str(v)


def headline(v: Verdict) -> str:
    """The verdict's first line: the verdict and the target it ran against."""
    t = v.target
    where = f"{t.get('kind', '?')} {t.get('url', '')}".strip() if t else "unknown target"
    skipped = f"; not tested: {', '.join(v.skipped)}" if v.skipped else ""
    return f"{v.label}  (target: {where}{skipped})"


def results(v: Verdict, a: Analysis) -> dict[str, Any]:
    return {"verdict": v.label, "target": v.target, "criteria_sha256": v.criteria_sha256, "skipped": list(v.skipped),
            "seed": v.seed,
            "run_id": a.run.started.run_id if a.run.started else None,
            "criteria": [{"criterion": ln.criterion.id, "title": ln.criterion.title, "kind": ln.criterion.kind,
                          "valid": ln.result.valid, "value": ln.result.value, "summary": ln.result.summary,
                          "details": ln.result.details} for ln in v.lines],
            "probe_flavours": v.flavours,
            "faults": [{"fault_id": f.fault_id, "name": f.name, "regime": f.regime, "target": f.target,
                        "start_ms": f.start / 1e6, "end_ms": None if f.end is None else f.end / 1e6, "params": f.params}
                       for f in spans(a.records)],
            "reconnections": [{"probe": r.probe, "fault": r.fault_id, "regime": r.regime, "disconnected": r.disconnected,
                               "detection_ms": r.detection_ms, **{f"{m}_ms": r.ms(m) for m in MILESTONES}}
                              for r in a.recoveries()],
            "history": {"unreadable": [{"line": n, "reason": r} for n, r in a.run.unreadable],
                        "torn_tail": a.run.torn_tail, "finished": a.run.finished is not None}}


def write_report(out: Path, a: Analysis, v: Verdict) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results(v, a), indent=2, default=str))
    md = [f"# Verdict: {headline(v)}", "", "| criterion | result | measured | evidence |", "|---|---|---|---|"]
    for ln in v.lines:
        md.append(f"| {ln.criterion.title} | {LABELS[ln.result.valid]} | {_fmt(ln.result.value)} | "
                  f"{ln.result.summary.replace('|', '/')} |")
    failing = [ln for ln in v.failing() if ln.result.summary != NOT_JUDGED]
    if failing:
        md += ["", "## Why not GO", ""]
        for ln in failing:
            md.append(f"- **{ln.criterion.id}** ({ln.criterion.title}): {ln.result.summary}")
            ev = ln.result.details.get("evidence")
            items = [e for group in ev.values() for e in group] if isinstance(ev, dict) else list(ev or [])
            for e in items[:5]:
                md.append(f"  - {e}")
    f = v.flavours
    if f:
        md += ["", "## Probe flavours (write->deliver, ms)", "", "| flavour | delivered | p50 | p95 | p99 | max |",
               "|---|---|---|---|---|---|"]
        for name in ("ours", "supabase-js"):
            fl = f.get(name)
            if fl:
                md.append(f"| {name} | {fl['delivered']}/{fl['expected']} | " + " | ".join(
                    _fmt(fl.get(s, math.nan)) for s in ("p50", "p95", "p99", "max")) + " |")
        g = f.get("twin_minus_original_ms")
        if g:
            md += ["", f"supabase-js stamped the same event {_fmt(g['p50'])} ms later than our probe at the median"
                       f" (p99 {_fmt(g['p99'])} ms, {g['n']} pairs): the client's own share of what the apps see."]
    (out / "verdict.md").write_text("\n".join(md) + "\n")
    cases = []
    for ln in v.lines:
        r = ln.result
        body = "" if r.valid is True else (f'<failure message="{escape(r.summary, {chr(34): "&quot;"})}"/>'
                                          if r.valid is False else
                                          f'<skipped message="unknown: {escape(r.summary, {chr(34): "&quot;"})}"/>')
        cases.append(f'  <testcase classname="zora.gate" name="{escape(ln.criterion.id)}">{body}</testcase>')
    fails = sum(1 for ln in v.lines if ln.result.valid is False)
    unknown = sum(1 for ln in v.lines if ln.result.valid is None)
    (out / "junit.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="zora-gate" tests="{len(cases)}" '
        f'failures="{fails}" skipped="{unknown}">\n' + "\n".join(cases) + "\n</testsuite>\n")
    _charts(out / "charts", a, v)


def _shade(ax: Any, faults: list[FaultSpan], until: float) -> None:
    """Fault intervals as shaded bands (an instant fault as a line), labelled once per fault name."""
    seen: set[str] = set()
    for f in faults:
        start = f.start / 1e9
        end = (f.end if f.end is not None else until * 1e9) / 1e9
        label = None if f.name in seen else f.name
        seen.add(f.name)
        if end - start < 0.05:
            ax.axvline(start, color="tab:red", linewidth=1.2, alpha=0.7, label=label)
        else:
            ax.axvspan(start, end, color="tab:red", alpha=0.12, label=label)


def _over_time(out: Path, a: Analysis) -> None:
    """write->deliver of every delivery against the time of its write, with p50 / p99 per second, faults shaded."""
    pts = sorted((d.t_write / 1e9, (d.seen[0].t - d.t_write) / 1e6) for d in a.deliveries.values() if d.seen)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    faults = spans(a.records)
    until = max([t for t, _ in pts] + [(f.end or f.start) / 1e9 for f in faults] + [1.0])
    _shade(ax, faults, until)
    if pts:
        ax.scatter([t for t, _ in pts], [ms for _, ms in pts], s=4, alpha=0.35, color="tab:blue", label="deliveries")
        width = max(0.05, (pts[-1][0] - pts[0][0]) / 40)  # about 40 bins over the run, whatever its length
        bins: dict[int, list[float]] = {}
        for t, ms in pts:
            bins.setdefault(int(t / width), []).append(ms)
        xs = sorted(bins)
        for q, style in ((50, "-"), (99, "--")):
            ax.plot([(x + 0.5) * width for x in xs], [percentile(bins[x], q) for x in xs], style, color="black",
                    linewidth=1, marker="." if len(xs) < 3 else None, label=f"p{q} per {width:.2g} s")
        ax.set_yscale("log")
    ax.set_xlabel("time of the write (s since the run started)")
    ax.set_ylabel("write->deliver (ms)")
    ax.set_title("Latency over time (shaded: faults)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "latency_over_time.png", dpi=110)
    plt.close(fig)


def _reconnection(out: Path, a: Analysis) -> None:
    """One row per probe: the faults that reached it, and when it noticed, reconnected, rejoined, got its first
    event and converged."""
    recs = a.recoveries()
    if not recs:
        return
    probes = sorted({r.probe for r in recs})
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.32 * len(probes)))
    faults = spans(a.records)
    _shade(ax, faults, max((f.end or f.start) for f in faults) / 1e9 + 1)
    marks = (("noticed_t", "x", "tab:orange"), ("socket_t", "o", "tab:blue"), ("rejoined_t", "|", "tab:green"),
             ("first_event_t", "^", "tab:purple"), ("converged_t", "s", "black"))
    for i, p in enumerate(probes):
        for r in (r for r in recs if r.probe == p):
            for attr, marker, color in marks:
                t = getattr(r, attr)
                if t is not None:
                    ax.scatter([t / 1e9], [i], marker=marker, color=color, s=28,
                               label=attr.removesuffix("_t") if i == 0 else None)
    ax.set_yticks(range(len(probes)), probes, fontsize=7)
    ax.set_xlabel("time (s since the run started)")
    ax.set_title("Reconnection timeline per probe (shaded: faults)")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=False))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper left", ncol=3)
    fig.tight_layout()
    fig.savefig(out / "reconnection.png", dpi=110)
    plt.close(fig)


def _charts(out: Path, a: Analysis, v: Verdict) -> None:
    out.mkdir(exist_ok=True)
    _over_time(out, a)
    _reconnection(out, a)
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for ln in v.lines:
        c = ln.criterion
        if c.kind != "latency":
            continue
        vals = a.samples(None if c.events == "*" else c.events, c.metric)
        if not vals:
            continue
        s = sorted(vals)
        ax.plot(s, [(i + 1) / len(s) for i in range(len(s))], label=f"{c.id} ({c.metric}, n={len(s)})")
        ax.axvline(c.max_ms, linestyle=":", linewidth=0.8)
        drawn = True
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of deliveries")
    ax.set_title("Latency CDF per criterion (dotted: limits)")
    if drawn:
        ax.set_xscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=110)
    plt.close(fig)

    probes = sorted({p for _, p in a.deliveries} | {leak.probe for leak in a.unexpected})
    groups = sorted({d.exp.group for d in a.deliveries.values()})
    if not probes or not groups:
        return
    cells: dict[tuple[str, str], list[int]] = {}  # (probe, group) -> [got, expected, leaks]
    for (_, p), d in a.deliveries.items():
        cell = cells.setdefault((p, d.exp.group), [0, 0, 0])
        cell[0] += bool(d.seen)
        cell[1] += 1
    for leak in a.unexpected:
        cells.setdefault((leak.probe, leak.exp.group), [0, 0, 0])[2] += 1
    grid = [[math.nan] * len(groups) for _ in probes]
    text = [[""] * len(groups) for _ in probes]
    for i, p in enumerate(probes):
        for j, g in enumerate(groups):
            got, n, leaks = cells.get((p, g), [0, 0, 0])
            if leaks:
                grid[i][j], text[i][j] = -1.0, f"{leaks} leak"
            elif n:
                grid[i][j], text[i][j] = got / n, f"{got}/{n}"
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 + 1.3 * len(groups)), 0.9 + 0.45 * len(probes)))
    ax.imshow(grid, cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(groups)), groups, rotation=20, fontsize=8)
    ax.set_yticks(range(len(probes)), probes, fontsize=8)
    for i in range(len(probes)):
        for j in range(len(groups)):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7)
    ax.set_title("Delivery matrix: app (probe) x event group")
    fig.tight_layout()
    fig.savefig(out / "delivery_matrix.png", dpi=110)
    plt.close(fig)
