"""How a verdict reads as text: its headline, each criterion's limit and measured figure with their units, and
the short tables people see outside the HTML report (the CI job summary in Markdown, pytest's terminal summary).

One wording everywhere: the terminal, ``verdict.md``, ``summary.md``, ``index.html`` and pytest say the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from harness.checks import LABELS
from harness.criteria import NOT_JUDGED, Criterion, Line, Verdict

__all__ = ["UNITS", "fmt", "headline", "limit_text", "markdown_summary", "measured_text", "terminal_table", "unit"]

# the unit of each kind's measured figure (the Result's value)
UNITS = {"latency": "ms", "reconnection": "ms", "completeness": "%", "reliability": "%", "leaks": "leaks",
         "ordering": "sequences out of order", "offline_sync": "queued writes wrong", "indicator": "s longest lag",
         "run": ""}


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "never" if v > 0 else "-inf"
        return f"{v:.1f}" if abs(v) < 1e6 else f"{v:.3g}"
    return "n/a" if v is None else str(v)


def unit(c: Criterion) -> str:
    return UNITS.get(c.kind, "")


def headline(v: Verdict) -> str:
    """The verdict's first line: the verdict and the target it ran against."""
    t = v.target
    where = f"{t.get('kind', '?')} {t.get('url', '')}".strip() if t else "unknown target"
    if t and t.get("realtime_resume"):  # what a realtime restart delivered in this run (embedded stack)
        where += f", realtime resume: {t['realtime_resume']}"
    skipped = f"; not tested: {', '.join(v.skipped)}" if v.skipped else ""
    return f"{v.label}  (target: {where}{skipped})"


def limit_text(c: Criterion) -> str:
    """What the criterion demands, in a few words (empty for the verdict's own run lines)."""
    if c.kind == "latency":
        return f"{c.statistic} {c.metric.replace('_to_', '->')} <= {c.max_ms:g} ms"
    if c.kind == "reconnection":
        return f"{c.statistic} {c.milestone} <= {c.max_ms:g} ms after a {c.regime if c.regime != '*' else 'any'} fault"
    if c.kind == "completeness":
        return f">= {c.min_delivered_pct:g} % delivered; none lost, unseen or duplicated"
    if c.kind == "leaks":
        return f"<= {c.max_unexpected} unexpected"
    if c.kind == "reliability":
        return f">= {c.min_pct:g} % of joins held"
    if c.kind == "ordering":
        return "every row's changes in commit order"
    if c.kind == "offline_sync":
        return "each queued write applied once"
    if c.kind == "indicator":
        extra = " (+ the client's detection time)" if c.regime == "blackhole" else ""
        return f"leaves Live{extra} and is Live again, each <= {c.max_ms:g} ms, after a {c.regime} fault"
    return ""


def measured_text(ln: Line) -> str:
    """The measured figure with its unit ("" when the line has none)."""
    v = ln.result.value
    if v is None or ln.result.summary == NOT_JUDGED:
        return ""
    u = unit(ln.criterion)
    if ln.criterion.kind in ("latency", "reconnection") and isinstance(v, int | float) and not isinstance(v, bool):
        prefix = f"{ln.criterion.statistic} " if ln.criterion.statistic else ""
        return f"{prefix}{fmt(float(v))}" + ("" if math.isinf(float(v)) else " ms")
    if u == "%" and isinstance(v, int | float):
        return f"{v:.2f} %"
    return f"{fmt(v)} {u}".strip()


def _md(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def markdown_summary(v: Verdict, *, where: str = "", notes: Sequence[str] = (), titles: dict[str, str] | None = None,
                     heading: str = "Zora realtime gate") -> str:
    """A Markdown summary fit for a CI job summary (GitHub's ``$GITHUB_STEP_SUMMARY``): the headline, one row per
    criterion, what was not tested, why not GO, and the notes (e.g. the load profile's)."""
    icon = {True: "pass", False: "**FAIL**", None: "unknown"}
    out = [f"## {heading}: {v.label}", "", f"`{_md(headline(v))}`", ""]
    if where:
        out += [f"Report: `{where}`", ""]
    out += ["| criterion | result | measured | limit |", "|---|---|---|---|"]
    for ln in v.lines:
        if ln.result.summary == NOT_JUDGED:
            continue
        out.append(f"| {ln.criterion.id} | {icon[ln.result.valid]} | {_md(measured_text(ln))} | "
                   f"{_md(limit_text(ln.criterion))} |")
    not_judged = [ln.criterion.id for ln in v.lines if ln.result.summary == NOT_JUDGED]
    if not_judged:
        out += ["", f"Not judged (the flows did not run): {', '.join(not_judged)}"]
    if v.skipped:
        names = [f"{s} ({(titles or {}).get(s, '')})".replace(" ()", "") for s in v.skipped]
        out += ["", f"Not tested in this run: {', '.join(names)}"]
    failing = [ln for ln in v.failing() if ln.result.summary != NOT_JUDGED]
    if failing:
        out += ["", "### Why not GO", ""]
        out += [f"- **{ln.criterion.id}**: {_md(ln.result.summary)}" for ln in failing]
    f = v.flavours
    rows = [(name, f[name]) for name in ("ours", "supabase-js", "browser") if f.get(name) and "p99" in f[name]]
    if rows:
        out += ["", "| probes | delivered live | p50 | p99 |", "|---|---|---|---|"]
        out += [f"| {name} | {fl['delivered']}/{fl['expected']} | {fmt(fl['p50'])} ms | {fmt(fl['p99'])} ms |"
                for name, fl in rows]
    if notes:
        out += ["", *[f"- {_md(n)}" for n in notes]]
    return "\n".join(out) + "\n"


def terminal_table(v: Verdict, ids: Iterable[str] | None = None) -> list[str]:
    """Rows of a fixed-width table (criterion, measured, limit, verdict) of the lines ``ids`` names (every line
    when None), the run's own lines first; for pytest's terminal summary."""
    chosen = set(ids) if ids is not None else None
    lines = [ln for ln in v.lines if ln.result.summary != NOT_JUDGED
             and (chosen is None or ln.criterion.id in chosen or ln.criterion.kind == "run")]
    rows = [(ln.criterion.id, measured_text(ln) or "-", limit_text(ln.criterion) or "-", LABELS[ln.result.valid])
            for ln in lines]
    head = ("criterion", "measured", "limit", "verdict")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    out = [f"{head[0]:<{widths[0]}}  {head[1]:>{widths[1]}}  {head[2]:<{widths[2]}}  {head[3]}"]
    out += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    return out
