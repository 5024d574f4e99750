"""The verdict files of a run, drawn from the verdict and the analysis alone (no re-checking here):
``results.json`` (what ``trend`` reads back), ``verdict.md`` and ``junit.xml``.

Everything is computed from the run directory: ``zora-harness analyze`` rebuilds the same files from a
stored history, into a directory of its own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from harness.checks import LABELS, Analysis
from harness.checks.reconnection import MILESTONES, spans
from harness.criteria import NOT_JUDGED, Verdict
from harness.report.text import headline

__all__ = ["results", "write_files"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.1f}"
    return "n/a" if v is None else str(v)


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


def write_files(out: Path, a: Analysis, v: Verdict) -> None:
    """results.json, verdict.md and junit.xml into ``out``."""
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
        for name in ("ours", "supabase-js", "browser"):
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
