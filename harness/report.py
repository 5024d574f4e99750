"""The run directory's verdict files, computed from the history alone: results.json, verdict.md,
junit.xml, and charts (latency CDF per criterion, delivery matrix of app x event)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from harness.checks.completeness import classify
from harness.checks.latency import by_flavour, samples
from harness.criteria import Verdict

__all__ = ["write_report"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.1f}"
    return "n/a" if v is None else str(v)


def write_report(run_dir: Path, records: list[dict[str, Any]], verdict: Verdict) -> None:
    run_dir = Path(run_dir)
    lines = [{"criterion": c.id, "title": c.title, "kind": c.kind, "valid": r.valid, "value": r.value,
              "summary": r.summary, "details": r.details} for c, r in verdict.lines]
    flavours = by_flavour(records)
    (run_dir / "results.json").write_text(json.dumps({"verdict": verdict.label, "criteria": lines,
                                                      "probe_flavours": flavours}, indent=2, default=str))
    md = [f"# Verdict: {verdict.label}", "", "| criterion | result | measured | evidence |", "|---|---|---|---|"]
    for c, r in verdict.lines:
        mark = {True: "pass", False: "FAIL", None: "unknown"}[r.valid]
        md.append(f"| {c.title} | {mark} | {_fmt(r.value)} | {r.summary.replace('|', '/')} |")
    failing = verdict.failing()
    if failing:
        md += ["", "## Why not GO", ""]
        for c, r in failing:
            ev = r.details.get("evidence") if isinstance(r.details, dict) else None
            md.append(f"- **{c.id}** ({c.title}): {r.summary}")
            for e in (ev or [])[:5]:
                md.append(f"  - {e}")
    if flavours:
        md += ["", "## Probe flavours (write->deliver, ms)", "", "| flavour | delivered | p50 | p95 | p99 | max |",
               "|---|---|---|---|---|---|"]
        for name in ("ours", "supabase-js"):
            f = flavours.get(name)
            if f:
                md.append(f"| {name} | {f['delivered']}/{f['expected']} | " + " | ".join(
                    _fmt(f.get(s, math.nan)) for s in ("p50", "p95", "p99", "max")) + " |")
        g = flavours.get("twin_minus_original_ms")
        if g:
            md += ["", f"supabase-js stamped the same event {_fmt(g['p50'])} ms later than our probe at the median"
                       f" (p99 {_fmt(g['p99'])} ms, {g['n']} pairs): the client's own share of what the apps see."]
    (run_dir / "verdict.md").write_text("\n".join(md) + "\n")
    cases = []
    for c, r in verdict.lines:
        body = "" if r.valid is True else (f'<failure message="{escape(r.summary, {chr(34): "&quot;"})}"/>'
                                          if r.valid is False else f'<skipped message="unknown: {escape(r.summary)}"/>')
        cases.append(f'  <testcase classname="zora.gate" name="{escape(c.id)}">{body}</testcase>')
    fails = sum(1 for _, r in verdict.lines if r.valid is False)
    unknown = sum(1 for _, r in verdict.lines if r.valid is None)
    (run_dir / "junit.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="zora-gate" tests="{len(cases)}" '
        f'failures="{fails}" skipped="{unknown}">\n' + "\n".join(cases) + "\n</testsuite>\n")
    _charts(run_dir / "charts", records, verdict)


def _charts(out: Path, records: list[dict[str, Any]], verdict: Verdict) -> None:
    out.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for c, _ in verdict.lines:
        if c.kind != "latency":
            continue
        vals, _err = samples(records, None if c.events == "*" else c.events, c.metric)
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

    deliveries, unexpected, _ = classify(records)
    probes = sorted({p for _, p in deliveries} | {p for _, p, _ in unexpected})
    groups = sorted({d.exp.criterion for d in deliveries.values()})
    if not probes or not groups:
        return
    grid = [[0.0] * len(groups) for _ in probes]
    text = [[""] * len(groups) for _ in probes]
    for i, p in enumerate(probes):
        for j, g in enumerate(groups):
            ds = [d for (_, pp), d in deliveries.items() if pp == p and d.exp.criterion == g]
            leaks = sum(1 for e, pp, _ in unexpected if pp == p and e.criterion == g)
            got = sum(1 for d in ds if d.seen)
            if leaks:
                grid[i][j], text[i][j] = -1.0, f"{leaks} leak"
            elif ds:
                grid[i][j], text[i][j] = got / len(ds), f"{got}/{len(ds)}"
            else:
                grid[i][j], text[i][j] = math.nan, ""
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
