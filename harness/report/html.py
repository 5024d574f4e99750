"""``index.html``: the run's report for people, one self-contained file (inline CSS and PNG charts, no script or
style from anywhere else, so it opens from a CI artifact, offline, on a laptop, a phone or paper).

What it holds, in the order a release manager reads it: the verdict and why (the headline names the target;
criteria the run did not test are listed), the criteria table (limit, measured, evidence), latency (a CDF per
criterion with its limit; percentiles over time with the faults shaded), delivery (app x event group; the
classes; per probe), reconnection (the timeline; per regime; per client), the probe flavours side by side, the
faults, and the environment and config. Every figure comes from the frames (``frames.py``) or the verdict.

Secrets never reach the page: the run directory's ``config.json`` is redacted when written, and this module
redacts again whatever it renders (keys by name, anything shaped like a JWT, passwords in URLs).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.checks import LABELS
from harness.criteria import NOT_JUDGED, Line, Verdict
from harness.report.charts import Chart
from harness.report.frames import Frames, classes, flavour_table, matrix, nearest_rank, per_probe, twin_gaps
from harness.report.text import fmt, headline, limit_text, measured_text
from harness.targets import redact

__all__ = ["CSS", "figure_html", "page", "render", "safe", "scrub", "table_html"]

MAX_ROWS = 300  # rows of a detail table (the rest is counted, not listed)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")
_SECRET_NAME = re.compile(r"(?i)(key|secret|password|passwd|token|jwt|credential)")
REDACTED = "<redacted>"

CSS = """
:root{--fg:#1f2328;--muted:#57606a;--line:#d0d7de;--soft:#f6f8fa;--go:#1a7f37;--nogo:#cf222e;--unk:#9a6700}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
  background:#fff;overflow-wrap:break-word}
header.verdict{padding:18px 16px;color:#fff}
header.go{background:var(--go)}header.nogo{background:var(--nogo)}
header .inner,main{max-width:1100px;margin:0 auto}
header h1{margin:0 0 4px;font-size:2rem;line-height:1.2}
header p{margin:2px 0}
nav{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);overflow-x:auto;
  white-space:nowrap}
nav a{display:inline-block;padding:8px 10px;color:var(--fg);text-decoration:none;font-size:.9rem}
nav a:hover{background:var(--soft)}
main{padding:0 16px 48px}
section{margin-top:28px}
h2{font-size:1.25rem;border-bottom:1px solid var(--line);padding-bottom:4px;margin-bottom:8px}
h3{font-size:1rem;margin:16px 0 6px}
.table-wrap{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%;margin:8px 0}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap;overflow-wrap:normal}
td.cell{text-align:center;white-space:nowrap}
td.result{white-space:nowrap}
caption{caption-side:bottom;text-align:left;font-size:.82rem;padding-top:4px}
table.kv{table-layout:fixed}table.kv td:first-child{width:34%}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:0 24px}
@media (max-width:900px){.pair{grid-template-columns:1fr}}
.full{background:#dafbe1}.part{background:#fff8c5}.none{background:#ffebe9}.leak{background:#cf222e;color:#fff}
.pass{color:var(--go);font-weight:600}.fail{color:var(--nogo);font-weight:700}.unknown{color:var(--unk);font-weight:600}
.muted,figcaption,.note{color:var(--muted)}
.note{font-size:.9rem}
figure{margin:12px 0}
figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{font-size:.85rem;margin-top:4px}
details{margin:4px 0}
summary{cursor:pointer;color:#0969da}
ul.evidence{margin:4px 0;padding-left:18px;font-size:.82rem}
code{font-size:.85em;background:var(--soft);padding:0 3px;border-radius:3px}
.why li{margin:4px 0}
@media (max-width:640px){
  body{font-size:14px}
  header h1{font-size:1.5rem}
  th,td{padding:3px 5px}
  main{padding:0 10px 32px}
}
@media print{
  nav,.noprint{display:none}
  body{font-size:10pt}
  header.verdict,.full,.part,.none,.leak{-webkit-print-color-adjust:exact;print-color-adjust:exact}
  main,header .inner{max-width:none}
  .table-wrap{overflow:visible}
  .pair{grid-template-columns:1fr}
  figure,tr,.why li{break-inside:avoid}
  h2,h3{break-after:avoid}
  a{color:inherit;text-decoration:none}
  summary{color:inherit}
  details::details-content{content-visibility:visible;display:block}
}
"""

# opens every <details> for print (evidence on paper); the page's only script, inline
PRINT_SCRIPT = ("window.addEventListener('beforeprint',function(){document.querySelectorAll('details')"
                ".forEach(function(d){d.open=true})});")


def safe(text: Any) -> str:
    """Text as it may appear on the page: no password in a URL, nothing shaped like a JWT; HTML-escaped."""
    return html.escape(_JWT.sub(REDACTED, redact(str(text))))


def scrub(obj: Any, key: str = "") -> Any:
    """A JSON-like structure with every value under a secret-sounding key redacted (a second line of defence
    behind the run directory's own redaction)."""
    if isinstance(obj, Mapping):
        return {k: scrub(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [scrub(v, key) for v in obj]
    if isinstance(obj, str) and obj and key and _SECRET_NAME.search(key) and obj != REDACTED:
        return REDACTED
    return obj


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, Mapping):
        out: list[tuple[str, str]] = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(obj, list | tuple):
        return [(prefix, ", ".join(str(x) for x in obj))]
    return [(prefix, "" if obj is None else str(obj))]


def _records(df: Any) -> list[dict[str, Any]]:
    """A frame's rows as dicts (column -> value)."""
    return [{str(k): v for k, v in row.items()} for row in df.to_dict("records")]


def _cls(valid: bool | None) -> str:
    return {True: "pass", False: "fail", None: "unknown"}[valid]


def _num(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "never"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else safe(v)


def table_html(tid: str, head: Sequence[str] | None, rows: Iterable[Sequence[str]], num: Sequence[int] = (),
           caption: str = "", css: str = "", classes: Mapping[int, str] | None = None) -> str:
    """A table in a horizontally scrolling wrapper (cells already escaped); ``num``: right-aligned columns;
    ``classes``: a class for the cells of a column; no header row when ``head`` is None."""
    def attr(i: int) -> str:
        c = "num" if i in num else (classes or {}).get(i, "")
        return f" class={c}" if c else ""

    hs = "".join(f"<th{attr(i)}>{h}</th>" for i, h in enumerate(head)) if head is not None else ""
    body = ["<tr>" + "".join(f"<td{attr(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows]
    cap = f"<caption class=muted>{caption}</caption>" if caption else ""
    thead = f"<thead><tr>{hs}</tr></thead>" if head is not None else ""
    cls = f' class="{css}"' if css else ""
    return (f'<div class="table-wrap"><table id="{tid}"{cls}>{cap}{thead}<tbody>{"".join(body)}'
            "</tbody></table></div>")


def figure_html(c: Chart) -> str:
    data = base64.b64encode(c.png).decode()
    stem = c.name.removesuffix(".png")
    return (f'<figure id="chart-{stem}"><img src="data:image/png;base64,{data}" alt="{safe(c.title)}">'
            f"<figcaption>{safe(c.caption)}</figcaption></figure>")


def _evidence(ln: Line) -> str:
    ev = ln.result.details.get("evidence") if isinstance(ln.result.details, dict) else None
    items = [e for group in ev.values() for e in group] if isinstance(ev, dict) else list(ev or [])
    if not items:
        return ""

    def one(e: Any) -> str:
        if isinstance(e, Mapping):
            return ", ".join(f"{k}={fmt(v)}" for k, v in e.items())
        return str(e)

    shown = "".join(f"<li>{safe(one(e))}</li>" for e in items[:10])
    more = f"<li class=muted>... {len(items) - 10} more</li>" if len(items) > 10 else ""
    return f'<details><summary>evidence ({len(items)})</summary><ul class="evidence">{shown}{more}</ul></details>'


def _stamp(env: Mapping[str, Any]) -> str:
    s = str(env.get("started_utc", ""))
    m = re.fullmatch(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z", s)
    return f"{m[1]}-{m[2]}-{m[3]} {m[4]}:{m[5]}:{m[6]} UTC" if m else s


def _header(v: Verdict, env: Mapping[str, Any], config: Mapping[str, Any], titles: Mapping[str, str],
            stored: str | None) -> str:
    t = v.target
    where = f"{t.get('kind', '?')} {t.get('url', '')}".strip() if t else "unknown target"
    judged = [ln for ln in v.lines if ln.result.summary != NOT_JUDGED]
    passed = sum(1 for ln in judged if ln.result.valid is True)
    bits = [f"target: <strong>{safe(where)}</strong>"]
    if config.get("run_id"):
        bits.append(f"run {safe(config['run_id'])}")
    if env.get("started_utc"):
        bits.append(safe(_stamp(env)))
    if env.get("commit"):
        bits.append(f"commit {safe(str(env['commit'])[:12])}")
    out = [f'<header class="verdict {"go" if v.go else "nogo"}" id="verdict"><div class="inner">',
           f'<h1 id="verdict-label">{v.label}</h1>',
           f"<p>{' &middot; '.join(bits)}</p>",
           f"<p>{passed} of {len(judged)} lines pass" + (f"; {len(v.lines) - len(judged)} not judged (the flows did "
                                                          "not run)" if len(judged) < len(v.lines) else "") + "</p>"]
    if v.skipped:
        names = ", ".join(f"{safe(s)}" + (f" ({safe(titles[s])})" if titles.get(s) else "") for s in v.skipped)
        out.append(f'<p id="not-tested">Not tested in this run: {names}</p>')
    if stored is not None and stored != v.label:
        out.append(f"<p><strong>Note:</strong> this run's own verdict was {safe(stored)}; judged again from its history "
                   f"with this harness it is {v.label}.</p>")
    out.append("</div></header>")
    return "\n".join(out)


def _why(v: Verdict) -> str:
    failing = [ln for ln in v.failing() if ln.result.summary != NOT_JUDGED]
    not_judged = [ln for ln in v.lines if ln.result.summary == NOT_JUDGED]
    if not failing and not not_judged:
        return ('<section id="why"><h2>Why GO</h2><p>Every line of the verdict holds: the run completed, cleaned up '
                "after itself, and every criterion judged met its limit.</p></section>")
    items = "".join(f'<li><span class="{_cls(ln.result.valid)}">{LABELS[ln.result.valid]}</span> '
                    f"<strong>{safe(ln.criterion.id)}</strong> ({safe(ln.criterion.title)}): {safe(ln.result.summary)}"
                    f"{_evidence(ln)}</li>" for ln in failing)
    nj = (f"<p class=note>{len(not_judged)} criteria not judged: the flows did not run (see the run's own lines).</p>"
          if not_judged else "")
    return f'<section id="why"><h2>Why not GO</h2><ul class="why">{items}</ul>{nj}</section>'


def _criteria(v: Verdict, titles: Mapping[str, str]) -> str:
    rows = []
    for ln in v.lines:
        r = ln.result
        rows.append([f'<span class="{_cls(r.valid)}">{LABELS[r.valid]}</span>',
                     f"<strong>{safe(ln.criterion.id)}</strong><br><span class=muted>{safe(ln.criterion.title)}</span>",
                     safe(limit_text(ln.criterion)) or "&mdash;", safe(measured_text(ln)) or "&mdash;",
                     safe(r.summary) + _evidence(ln)])
    for s in v.skipped:
        rows.append(['<span class="muted">not tested</span>',
                     f"<strong>{safe(s)}</strong><br><span class=muted>{safe(titles.get(s, ''))}</span>", "&mdash;",
                     "&mdash;", "<span class=muted>its phase was left out of this run's plan</span>"])
    return ('<section id="criteria"><h2>Criteria</h2>'
            + table_html("criteria-table", ["result", "criterion", "limit", "measured", "evidence"], rows,
                     classes={0: "result"}) + "</section>")


def _latency(f: Frames, v: Verdict, charts: Mapping[str, Chart]) -> str:
    rows = []
    for ln in v.lines:
        c = ln.criterion
        if c.kind != "latency":
            continue
        vals = f.latencies(c.events, c.metric, c.probes)
        rows.append([safe(c.id), safe(c.events), safe(c.metric.replace("_to_", "->")), _num(int(vals.size)),
                     *(_num(nearest_rank(vals, q)) for q in (50, 95, 99, 100)),
                     safe(f"{c.statistic} <= {c.max_ms:g} ms"),
                     f'<span class="{_cls(ln.result.valid)}">{LABELS[ln.result.valid]}</span>'])
    table = table_html("latency-table", ["criterion", "events", "metric", "n", "p50 ms", "p95 ms", "p99 ms", "max ms",
                                     "limit", "result"], rows, num=(3, 4, 5, 6, 7))
    out = ['<section id="latency"><h2>Latency</h2>', table]
    for name in ("latency_cdf.png", "latency_over_time.png"):
        if name in charts:
            out.append(figure_html(charts[name]))
    out.append("</section>")
    return "\n".join(out)


def _share_class(got: int, expected: int, leaks: int) -> str:
    if leaks:
        return "leak"
    if not expected:
        return ""
    return "full" if got == expected else ("none" if got == 0 else "part")


def _delivery(f: Frames, charts: Mapping[str, Chart]) -> str:
    m = matrix(f)
    out = ['<section id="delivery"><h2>Delivery: what each app received</h2>']
    if m.empty:
        out.append("<p class=note>No expected deliveries in this run.</p></section>")
        return "\n".join(out)
    groups = sorted(m["group"].unique())
    cells = {(r, g): (e, d, rc, mi, lk) for r, g, e, d, rc, mi, lk in
             zip(m["row"], m["group"], m["expected"], m["delivered"], m["recovered"], m["missed"], m["leaks"],
                 strict=True)}
    head = "<th>app</th>" + "".join(f"<th>{safe(g)}</th>" for g in groups)
    body = []
    for r in sorted(m["row"].unique()):
        tds = []
        for g in groups:
            e, d, rc, mi, lk = cells.get((r, g), (0, 0, 0, 0, 0))
            if not e and not lk:
                tds.append('<td class="cell muted">&mdash;</td>')
                continue
            text = f"{d + rc:,}/{e:,}" + (f"<br><small>{rc:,} by refetch</small>" if rc else "")
            if mi:
                text += f"<br><small>{mi:,} missed</small>"
            if lk:
                text = (text + "<br>" if e else "") + f"<strong>{lk:,} leak{'s' if lk > 1 else ''}</strong>"
            tds.append(f'<td class="cell {_share_class(d + rc, e, lk)}">{text}</td>')
        body.append(f"<tr><th>{safe(r)}</th>{''.join(tds)}</tr>")
    out.append('<p class=note>Delivered live or by the refetch after a reconnect, of what each app was entitled to '
               "(its subscriptions and the schema's RLS rules); a leak is an event that reached an app not entitled "
               "to it.</p>")
    out.append(f'<div class="table-wrap"><table id="delivery-matrix"><thead><tr>{head}</tr></thead>'
               f"<tbody>{''.join(body)}</tbody></table></div>")
    k = classes(f)
    out.append("<h3>Delivery classes</h3>")
    out.append(table_html("delivery-classes", list(k), [[_num(n) for n in k.values()]], num=tuple(range(len(k)))))
    pp = per_probe(f)
    rows = [[safe(r["probe"]), safe(r["app"]), safe(r["flavour"]), *(_num(int(r[c])) for c in
            ("expected", "delivered", "recovered", "missed", "leaks", "received", "foreign"))]
            for r in _records(pp.head(MAX_ROWS))]
    more = f" (first {MAX_ROWS} of {len(pp):,})" if len(pp) > MAX_ROWS else ""
    out.append(f"<details><summary>per probe ({len(pp):,}){more}</summary>"
               + table_html("delivery-probes", ["probe", "app", "flavour", "expected", "delivered live", "recovered",
                                            "missed", "leaks", "received", "matched nothing"], rows,
                        num=(3, 4, 5, 6, 7, 8, 9)) + "</details>")
    out.append("</section>")
    return "\n".join(out)


def _reconnection(f: Frames, v: Verdict, charts: Mapping[str, Chart]) -> str:
    out = ['<section id="reconnection"><h2>Reconnection</h2>']
    r = f.recoveries
    if r.empty:
        why = ("the run's plan left the fault phase out" if v.skipped else "no fault reached a client in this run")
        out.append(f'<p class=note id="no-reconnection">No reconnection to show: {safe(why)}.</p></section>')
        return "\n".join(out)
    if "reconnection.png" in charts:
        out.append(figure_html(charts["reconnection.png"]))
    rows = []
    for regime, g in r.groupby("regime", sort=True):
        cut = g[g["disconnected"]]
        rows.append([safe(regime), _num(len(g)), _num(len(cut)), _num(int((~g["disconnected"]).sum())),
                     _num(int(cut["rejoined_ms"].isna().sum())),
                     *(_num(nearest_rank(cut[col], q)) for col in ("detection_ms", "rejoined_ms", "converged_ms")
                       for q in (50, 100))])
    out.append(table_html("reconnection-table", ["regime", "exposures", "reconnected", "survived", "never rejoined",
                                             "noticed p50 ms", "noticed max ms", "rejoined p50 ms", "rejoined max ms",
                                             "converged p50 ms", "converged max ms"], rows,
                      num=tuple(range(1, 11)),
                      caption="Milestones from the fault's end; noticed: from its start (the heartbeat's share in a "
                              "black hole)."))
    detail = [[safe(x["probe"]), safe(x["fault_id"]), safe(x["regime"]), "yes" if x["disconnected"] else "no",
               *(_num(float(x[c])) for c in ("detection_ms", "socket_ms", "rejoined_ms", "first_event_ms",
                                             "converged_ms"))]
              for x in _records(r.head(MAX_ROWS))]
    more = f" (first {MAX_ROWS} of {len(r):,})" if len(r) > MAX_ROWS else ""
    out.append(f"<details><summary>per client and fault ({len(r):,}){more}</summary>"
               + table_html("recoveries-table", ["probe", "fault", "regime", "disconnected", "noticed ms", "socket ms",
                                             "rejoined ms", "first event ms", "converged ms"], detail,
                        num=(4, 5, 6, 7, 8)) + "</details>")
    out.append("</section>")
    return "\n".join(out)


def _flavours(f: Frames, charts: Mapping[str, Chart]) -> str:
    t = flavour_table(f)
    out = ['<section id="flavours"><h2>Probe flavours side by side</h2>']
    if t.empty:
        out.append("<p class=note>No probe was entitled to an event.</p></section>")
        return "\n".join(out)
    names = list(t["flavour"])
    rows = [["expected deliveries", *(_num(int(x)) for x in t["expected"])],
            ["delivered live", *(_num(int(x)) for x in t["delivered"])]]
    for s in ("p50", "p95", "p99", "max"):
        rows.append([f"write->deliver {s} ms (healthy network)", *(_num(float(x)) for x in t[s])])
    gaps = twin_gaps(f)
    if len(gaps) and len(names) > 1:
        rows.append(["supabase-js stamps later than ours, p50 / p99 ms", "&mdash;",
                     f"{_num(nearest_rank(gaps, 50))} / {_num(nearest_rank(gaps, 99))}"])
    out.append(table_html("flavour-table", ["", *(safe(n) for n in names)], rows, num=tuple(range(1, len(names) + 1))))
    if "probe_flavours.png" in charts:
        out.append(figure_html(charts["probe_flavours.png"]))
    out.append("</section>")
    return "\n".join(out)


def _browser(v: Verdict, screenshots: Sequence[tuple[str, bytes]]) -> str:
    """What the browser probes saw: write -> screen per tab kind, the page clocks' mapping, the indicator's
    accuracy per fault regime, and the screenshots of each indicator state."""
    b = v.flavours.get("browser")
    out = ['<section id="browser"><h2>Browser probes (supabase-js in Chromium)</h2>']
    if not b:
        out.append('<p class=note id="no-browser">No browser probe ran in this run.</p></section>')
        return "\n".join(out)
    rows = []
    for side, label in (("front", "tabs in front"), ("behind", "tabs behind another (unfocused)")):
        part = b.get(side) or {}
        for metric in ("write_to_screen", "deliver_to_screen", "deliver_to_frame"):
            fig = part.get(metric)
            if fig:
                rows.append([safe(f"{label}: {metric.replace('_to_', '->')}"), _num(int(part.get("n", 0))),
                             *(_num(float(fig[s]), 2) for s in ("p50", "p95", "p99", "max"))])
    out.append(table_html("browser-table", ["", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows,
                          num=(1, 2, 3, 4, 5)))
    err, drift = b.get("clock_error_ms"), b.get("clock_drift_ms")
    out.append(f"<p>Page clocks (performance.now) placed on the harness's monotonic clock to within +/- "
               f"{_num(float(err), 3) if err is not None else '?'} ms (the fastest round trip's half, plus the page "
               f"clock's resolution); drift by the end {_num(float(drift), 3) if drift is not None else '?'} ms. "
               f"Tabs Chromium reported hidden: {int(b.get('hidden_tabs', 0))} (headless Chromium renders every tab: a "
               f"tab behind another is unfocused, not throttled).</p>")
    ind = [ln for ln in v.lines if ln.criterion.kind == "indicator"]
    if ind:
        irows = [[safe(ln.criterion.id), safe(ln.criterion.regime), safe(ln.result.summary)] for ln in ind]
        out.append(table_html("indicator-table", ["criterion", "regime", "indicator against the fault proxy"], irows))
    if screenshots:
        out.append("<h3>The probe page in each indicator state (screenshots/ in the run directory)</h3><div class=shots>"
                   + "".join(f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
                             f'alt="{safe(name)}" width="300"><figcaption>{safe(name)}</figcaption></figure>'
                             for name, png in screenshots) + "</div>")
    out.append("</section>")
    return "\n".join(out)


def _faults(f: Frames) -> str:
    ft = f.faults
    out = ['<section id="faults"><h2>Faults</h2>']
    if ft.empty:
        out.append('<p class=note id="no-faults">No fault was injected in this run.</p></section>')
        return "\n".join(out)
    rows = [[safe(x["fault_id"]), safe(x["name"]), safe(x["regime"]), safe(x["target"]), _num(float(x["start_s"]), 2),
             _num(float(x["end_s"]), 2),
             _num(float(x["end_s"]) - float(x["start_s"]), 2) if not math.isnan(float(x["end_s"])) else "never ended",
             safe(x["params"])] for x in _records(ft.head(MAX_ROWS))]
    more = f" (first {MAX_ROWS} of {len(ft):,})" if len(ft) > MAX_ROWS else ""
    out.append(f"<details><summary>{len(ft):,} faults{more}</summary>"
               + table_html("faults-table", ["fault", "name", "regime", "where", "start s", "end s", "lasted s", "params"],
                        rows, num=(4, 5, 6)) + "</details>")
    out.append("</section>")
    return "\n".join(out)


def _kv(tid: str, title: str, data: Mapping[str, Any], note: str) -> str:
    rows = [[f"<code>{safe(k)}</code>", safe(val)] for k, val in _flatten(scrub(data))]
    if not rows:
        return f'<div><h3>{title}</h3><p class=note>{safe(note) or "none recorded"}</p></div>'
    return f"<div><h3>{title}</h3>" + table_html(tid, None, rows, css="kv") + "</div>"


def render(v: Verdict, f: Frames, charts: Sequence[Chart], *, environment: Mapping[str, Any],
           config: Mapping[str, Any], titles: Mapping[str, str] | None = None, stored_verdict: str | None = None,
           files: Sequence[str] = (), screenshots: Sequence[tuple[str, bytes]] = ()) -> str:
    """The whole page."""
    titles = titles or {}
    by_name = {c.name: c for c in charts}
    sections = [_why(v), _criteria(v, titles), _latency(f, v, by_name), _delivery(f, by_name),
                _reconnection(f, v, by_name), _flavours(f, by_name), _browser(v, screenshots),
                _faults(f),
                '<section id="environment"><h2>Environment and config</h2><div class="pair">'
                + _kv("environment-table", "Environment (versions, commit, machine)", environment,
                      "no environment.json in the run directory")
                + _kv("config-table", "Config (secrets redacted)", config, "no config.json in the run directory")
                + "</div></section>"]
    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in (
        ("verdict", "Verdict"), ("criteria", "Criteria"), ("latency", "Latency"), ("delivery", "Delivery"),
        ("reconnection", "Reconnection"), ("flavours", "Probes"), ("browser", "Browser"), ("faults", "Faults"),
        ("environment", "Environment")))
    listed = "".join(f'<li><a href="{html.escape(n)}">{html.escape(n)}</a></li>' for n in files)
    foot = (f'<section id="files" class="noprint"><h2>Files of this run</h2><ul>{listed}</ul></section>'
            if files else "")
    return page(f"{v.label}: {headline(v)}", _header(v, environment, config, titles, stored_verdict), nav,
                "\n".join(sections) + foot)


def page(title: str, header: str, nav: str, body: str) -> str:
    """A self-contained page: the CSS inline, the only script inline, no external resource of any kind."""
    return ("<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            '<link rel="icon" href="data:,">'
            f"<title>{safe(title)}</title><style>{CSS}</style></head><body>\n{header}\n"
            f'<nav aria-label="sections">{nav}</nav>\n<main>\n{body}\n</main>\n'
            f"<script>{PRINT_SCRIPT}</script></body></html>\n")
