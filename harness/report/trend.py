"""``zora-harness trend DIR``: each criterion's figure across many runs, and regressions flagged against a baseline.

Reads every run directory under DIR (one holding ``results.json`` and ``config.json``; its own subdirectories,
such as ``analysis/``, are not runs of their own) and groups the runs into **series**: one target (the embedded
stack, or a URL) on one kind of machine (OS, architecture and CPU count from ``environment.json``). Series are
never mixed: each is its own line in every chart and its own baseline.

Thresholds (``--fail-on``, grammar in ``TREND_EPILOG``) are judged for every run against the baseline before it
(by default the median of the ``--last`` earlier runs of its series; ``--baseline RUN`` fixes one run instead),
and drawn on the charts; the exit code follows the **newest** run of each series only (a regression fixed since
does not fail tonight's job). Writes ``trend.html`` (self-contained), ``trend/*.png`` and ``trend.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from harness.checks import STATISTICS
from harness.criteria import CriteriaError, parse_criteria
from harness.report.charts import Chart, png_bytes
from harness.report.frames import figures
from harness.report.html import figure_html, page, safe, table_html

__all__ = ["TREND_EPILOG", "Flag", "Threshold", "TrendError", "TrendResult", "parse_threshold", "read_runs", "trend"]

TREND_EPILOG = """--fail-on METRIC:CONDITION (repeatable)
  METRIC     CRITERION, its judged figure (what its verdict line quotes), or CRITERION.STAT with STAT one
             of p50 p95 p99 max mean (the statistics its results carry), e.g. realtime_latency.p99
  CONDITION  +N%  / -N%    the figure rose / fell by more than N % of the baseline
             +N   / -N     rose / fell by more than N in the figure's unit (+250ms: a unit may follow N)
             <N <=N >N >=N the figure itself is below / at most / above / at least N (no baseline needed)
  A unit after N (ms, or % after < <= > >=) must be the figure's: latency and reconnection are in ms,
  delivery and reliability in %.
examples:
  --fail-on 'realtime_latency.p99:+10%'   p99 commit->deliver more than 10 % above the baseline
  --fail-on 'delivery:<100%'              delivery below 100 %
  --fail-on 'reconnect_reset:+1000ms'     rejoining after a reset more than 1 s slower than the baseline

baseline: the median of the --last earlier runs of the same target and machine; --baseline RUN compares the
runs of its series that came after it with that run (other series keep the median).

exit codes:
  0  no threshold broken by the newest run of any series (or no --fail-on given)
  1  regression: the newest run of a series breaks a --fail-on threshold (each one printed)
  2  bad usage: a malformed --fail-on, a metric no run has, DIR not a directory or holding no run,
     --baseline not one of its runs or the newest of its series, --out not writable"""

_SPEC = re.compile(r"^(?P<crit>[A-Za-z0-9_-]+)(?:\.(?P<stat>[A-Za-z0-9_]+))?:(?P<op>\+|-|<=|>=|<|>)"
                   r"(?P<num>\d+(?:\.\d+)?)(?P<unit>%|ms)?$")
UNITS = {"latency": "ms", "reconnection": "ms", "completeness": "%", "reliability": "%"}
Op = Literal["+%", "-%", "+", "-", "<", "<=", ">", ">="]


class TrendError(ValueError):
    """Bad usage of ``trend``: one line for the user, exit 2."""


@dataclass(frozen=True)
class Threshold:
    text: str
    criterion: str
    stat: str  # "": the judged figure
    op: Op
    number: float
    unit: str = ""

    @property
    def metric(self) -> str:
        return f"{self.criterion}.{self.stat}" if self.stat else self.criterion

    @property
    def relative(self) -> bool:
        return self.op in ("+%", "-%", "+", "-")

    def broken(self, value: float, baseline: float | None) -> bool | None:
        """Whether ``value`` breaks it (None: no figure, or no baseline for a relative threshold)."""
        if math.isnan(value):
            return None
        n = self.number
        if self.op == "<":
            return value < n
        if self.op == "<=":
            return value <= n
        if self.op == ">":
            return value > n
        if self.op == ">=":
            return value >= n
        if baseline is None or math.isnan(baseline):
            return None
        if self.op == "+%":
            return value > baseline + abs(baseline) * n / 100
        if self.op == "-%":
            return value < baseline - abs(baseline) * n / 100
        if self.op == "+":
            return value > baseline + n
        return value < baseline - n


def parse_threshold(text: str) -> Threshold:
    m = _SPEC.match(text.strip())
    if not m:
        raise TrendError(f"--fail-on {text!r}: expected METRIC:CONDITION, e.g. realtime_latency.p99:+10% or "
                         "delivery:<100% (see zora-harness trend --help)")
    stat = m["stat"] or ""
    if stat and stat not in STATISTICS:
        raise TrendError(f"--fail-on {text!r}: unknown statistic {stat!r} (one of {', '.join(STATISTICS)})")
    op, unit = m["op"], m["unit"] or ""
    if op in ("+", "-") and unit == "%":
        op, unit = op + "%", ""
    return Threshold(text, m["crit"], stat, op, float(m["num"]), unit)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunInfo:
    path: Path
    name: str
    time: datetime
    target: str
    machine: str
    results: dict[str, Any]
    limits: dict[str, tuple[str, float]] = field(default_factory=dict)  # criterion -> (op, limit) of its statistic
    statistic: dict[str, str] = field(default_factory=dict)  # criterion -> the statistic its figure is

    @property
    def series(self) -> str:
        return f"{self.target} on {self.machine}"

    @property
    def verdict(self) -> str:
        return str(self.results.get("verdict", "?"))


@dataclass(frozen=True)
class Flag:
    threshold: Threshold
    series: str
    run: RunInfo
    value: float
    baseline: float | None
    basis: str  # how the baseline was made
    broken: bool | None
    newest: bool

    def change(self) -> str:
        if self.baseline is None or math.isnan(self.value) or math.isnan(self.baseline):
            return ""
        d = self.value - self.baseline
        pct = f" ({100 * d / abs(self.baseline):+.1f} %)" if self.baseline and math.isfinite(d) else ""
        return f"{d:+.2f}{pct}"


@dataclass
class TrendResult:
    runs: list[RunInfo]
    flags: list[Flag]
    html: Path
    skipped: list[str]
    charts: list[Path]

    @property
    def regressions(self) -> list[Flag]:
        return [f for f in self.flags if f.newest and f.broken]

    @property
    def series(self) -> list[str]:
        return sorted({r.series for r in self.runs})

    def lines(self) -> list[str]:
        out = []
        for f in self.flags:
            if not f.newest:
                continue
            label = {True: "REGRESSION", False: "ok", None: "no figure" if math.isnan(f.value) else "no baseline"}[
                f.broken]
            base = "" if f.baseline is None else f" vs baseline {_n(f.baseline)} ({f.basis})"
            out.append(f"{label:<11} {f.threshold.text}  [{f.series}]  {_n(f.value)} in {f.run.name}{base}"
                       + (f": {f.change()}" if f.change() else ""))
        out.append(f"trend: {len(self.runs)} runs in {len(self.series)} series, {len(self.regressions)} regression(s)"
                   f" -> {self.html}" + (f"; {len(self.skipped)} directories skipped" if self.skipped else ""))
        return out


def _n(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "n/a"
    return "inf" if math.isinf(v) else f"{v:.2f}"


def _read_json(p: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _time(env: dict[str, Any], path: Path) -> datetime:
    for text in (str(env.get("started_utc", "")), path.name[:16]):
        try:
            return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            continue
    return datetime.fromtimestamp((path / "results.json").stat().st_mtime, tz=UTC)


def _target(t: Any) -> str:
    if not isinstance(t, dict):
        return "unknown target"
    kind = str(t.get("kind", "?"))
    return "embedded" if kind == "embedded" else f"{kind} {t.get('url', '')}".strip()


def _machine(env: dict[str, Any]) -> str:
    system = str(env.get("platform", "")).split("-")[0] or "unknown OS"
    return f"{system} {env.get('machine', '?')}, {env.get('cpus', '?')} cpus"


def _limits(path: Path) -> tuple[dict[str, tuple[str, float]], dict[str, str]]:
    try:
        crit = parse_criteria((path / "criteria.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, CriteriaError):
        return {}, {}
    limits: dict[str, tuple[str, float]] = {}
    stats: dict[str, str] = {}
    for c in crit:
        if c.kind in ("latency", "reconnection"):
            limits[c.id], stats[c.id] = ("<=", c.max_ms), c.statistic
        elif c.kind == "completeness":
            limits[c.id] = (">=", c.min_delivered_pct)
        elif c.kind == "reliability":
            limits[c.id] = (">=", c.min_pct)
        elif c.kind == "leaks":
            limits[c.id] = ("<=", float(c.max_unexpected))
    return limits, stats


def read_runs(root: Path) -> tuple[list[RunInfo], list[str]]:
    """Every run directory under ``root``, oldest first, and the directories that looked like runs but could not
    be read (one line each)."""
    runs: list[RunInfo] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "results.json" not in filenames or "config.json" not in filenames:
            continue
        dirnames[:] = []  # a run's own subdirectories (analysis/, load/) are not runs of their own
        path = Path(dirpath)
        results = _read_json(path / "results.json")
        if results is None or not isinstance(results.get("criteria"), list):
            skipped.append(f"{path}: results.json is not a run's results")
            continue
        config = _read_json(path / "config.json") or {}
        env = _read_json(path / "environment.json") or {}
        limits, stats = _limits(path)
        runs.append(RunInfo(path, path.name, _time(env, path), _target(config.get("target", results.get("target"))),
                            _machine(env), results, limits, stats))
    runs.sort(key=lambda r: (r.time, r.name))
    return runs, skipped


def _check(thresholds: Sequence[Threshold], data: pd.DataFrame) -> None:
    """Each threshold names a metric some run has, in the figure's unit."""
    known = sorted(set(data["criterion"].dropna()))
    for t in thresholds:
        mine = data[data["criterion"] == t.criterion]
        if mine.empty:
            raise TrendError(f"--fail-on {t.text!r}: no run has a criterion {t.criterion!r} (known: {', '.join(known)})")
        if t.stat and mine[mine["stat"] == t.stat].empty:
            stats = sorted(set(mine["stat"]) - {""})
            raise TrendError(f"--fail-on {t.text!r}: {t.criterion} has no statistic {t.stat!r} in any run"
                             + (f" (it has {', '.join(stats)})" if stats else " (it carries only its judged figure)"))
        unit = UNITS.get(str(mine["kind"].iloc[0]), "")
        if t.unit and t.unit != unit:
            raise TrendError(f"--fail-on {t.text!r}: {t.criterion}'s figure is in {unit or 'plain numbers'}, not {t.unit}")


def _value(table: pd.DataFrame, run: str, criterion: str, stat: str) -> float:
    try:
        v: Any = table.at[(run, criterion, stat), "value"]
    except KeyError:
        return math.nan
    return float(v) if v is not None else math.nan


def _evaluate(thresholds: Sequence[Threshold], runs: list[RunInfo], data: pd.DataFrame, last: int,
              baseline: RunInfo | None) -> list[Flag]:
    table = data.drop_duplicates(["run", "criterion", "stat"]).set_index(["run", "criterion", "stat"])
    by_series: dict[str, list[RunInfo]] = {}
    for r in runs:
        by_series.setdefault(r.series, []).append(r)
    flags: list[Flag] = []
    for series, mine in sorted(by_series.items()):
        for i, run in enumerate(mine):
            for t in thresholds:
                value = _value(table, run.name, t.criterion, t.stat)
                base: float | None = None
                basis = ""
                if t.relative:
                    if baseline is not None and baseline.series == series:
                        if run.time > baseline.time or (run.time == baseline.time and run.name > baseline.name):
                            base = _value(table, baseline.name, t.criterion, t.stat)
                            basis = f"run {baseline.name}"
                    else:
                        earlier = [_value(table, r.name, t.criterion, t.stat) for r in mine[max(0, i - last):i]]
                        finite = [v for v in earlier if not math.isnan(v)]
                        if finite:
                            base = float(np.median(finite))
                            basis = f"median of {len(finite)} earlier run{'s' if len(finite) > 1 else ''}"
                    if base is not None and math.isnan(base):
                        base = None
                flags.append(Flag(t, series, run, value, base, basis, t.broken(value, base), i == len(mine) - 1))
    return flags


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", metric)


def _chart(metric: str, criterion: str, stat: str, unit: str, data: pd.DataFrame, runs: list[RunInfo],
           flags: list[Flag]) -> Chart:
    mine = data[(data["criterion"] == criterion) & (data["stat"] == stat)]
    fig, ax = plt.subplots(figsize=(10, 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (series, g) in enumerate(mine.groupby("series", sort=True)):
        g = g.sort_values("time")
        color = colors[k % len(colors)]
        vals = g["value"].to_numpy(dtype=float)
        shown = np.where(np.isinf(vals), np.nan, vals)
        ax.plot(mdates.date2num(list(g["time"])), shown, "o-", color=color, markersize=4, linewidth=1.2, label=str(series))
        for f in flags:
            if f.series == series and f.threshold.metric == metric and f.broken:
                y = f.value if math.isfinite(f.value) else np.nanmax(shown) if np.isfinite(shown).any() else 0.0
                ax.plot([mdates.date2num(f.run.time)], [y], "X", color="#cf222e", markersize=11, zorder=4)
                ax.annotate(f"{f.threshold.text}", (mdates.date2num(f.run.time), y), textcoords="offset points",
                            xytext=(-8, -14), ha="right", fontsize=7, color="#cf222e")
            if f.series == series and f.threshold.metric == metric and f.newest and f.baseline is not None:
                ax.axhline(f.baseline, color=color, linestyle=":", linewidth=1,
                           label=f"baseline of the newest run ({f.basis})")
    newest = runs[-1] if runs else None
    if newest is not None and criterion in newest.limits and (not stat or stat == newest.statistic.get(criterion)):
        op, limit = newest.limits[criterion]
        ax.axhline(limit, color="#57606a", linestyle="--", linewidth=1, label=f"limit {op} {limit:g} {unit}".strip())
    positive = mine["value"].to_numpy(dtype=float)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    if positive.size and positive.max() / positive.min() > 30:
        ax.set_yscale("log")  # one bad night must not flatten every other into the axis
    ax.set_title(f"{metric}" + (f" ({unit})" if unit else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator()))
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return Chart(f"{_slug(metric)}.png", metric, f"{metric} per run, one line per target and machine; X: a run that "
                 "breaks a --fail-on threshold; dotted: the newest run's baseline; dashed: the criterion's limit.",
                 png_bytes(fig))


def _html(result: TrendResult, charts: list[Chart], thresholds: Sequence[Threshold], out: Path) -> str:
    reg = result.regressions
    status = (f"{len(reg)} regression{'s' if len(reg) != 1 else ''}" if reg else
              ("no regression" if thresholds else "no threshold given"))
    header = (f'<header class="verdict {"nogo" if reg else "go"}" id="verdict"><div class="inner">'
              f'<h1 id="trend-status">Trend: {safe(status)}</h1><p>{len(result.runs)} runs in '
              f"{len(result.series)} series (target and machine, never mixed); "
              f"{safe(', '.join(t.text for t in thresholds) or 'no --fail-on')}</p></div></header>")
    rows = []
    for f in result.flags:
        if not f.newest:
            continue
        cls = {True: "fail", False: "pass", None: "unknown"}[f.broken]
        word = {True: "REGRESSION", False: "ok", None: "no figure" if math.isnan(f.value) else "no baseline"}[f.broken]
        rows.append([f'<span class="{cls}">{word}</span>', safe(f.threshold.text), safe(f.series), safe(f.run.name),
                     _n(f.value), _n(f.baseline), safe(f.basis), safe(f.change())])
    flags = table_html("flags-table", ["result", "threshold", "series", "newest run", "value", "baseline", "baseline is",
                                   "change"], rows, num=(4, 5)) if rows else "<p class=note>No --fail-on given.</p>"
    earlier = [f for f in result.flags if not f.newest and f.broken]
    hist = "".join(f"<li>{safe(f.run.name)}: {safe(f.threshold.text)} ({_n(f.value)} vs {_n(f.baseline)})</li>"
                   for f in earlier[:100])
    history = (f"<details><summary>earlier runs that broke a threshold ({len(earlier)})</summary><ul>{hist}</ul>"
               "</details>" if earlier else "")
    series_rows = []
    for s in result.series:
        mine = [r for r in result.runs if r.series == s]
        series_rows.append([safe(s), str(len(mine)), safe(mine[0].time.strftime("%Y-%m-%d %H:%M")),
                            safe(mine[-1].time.strftime("%Y-%m-%d %H:%M"))])
    run_rows = []
    for r in result.runs:
        link = r.path / "index.html"
        rel = os.path.relpath(link, out) if link.exists() else ""
        name = f'<a href="{safe(rel)}">{safe(r.name)}</a>' if rel else safe(r.name)
        run_rows.append([safe(r.time.strftime("%Y-%m-%d %H:%M:%S")), name, safe(r.series),
                         f'<span class="{"pass" if r.verdict == "GO" else "fail"}">{safe(r.verdict)}</span>'])
    skipped = ("<details><summary>directories skipped</summary><ul>"
               + "".join(f"<li>{safe(s)}</li>" for s in result.skipped) + "</ul></details>") if result.skipped else ""
    body = ('<section id="flags"><h2>Thresholds, newest run of each series</h2>' + flags + history + "</section>"
            '<section id="series"><h2>Series</h2>' + table_html("series-table", ["target and machine", "runs", "first",
                                                                           "newest"], series_rows, num=(1,))
            + "</section><section id=\"charts\"><h2>Figures over time</h2>" + "".join(figure_html(c) for c in charts)
            + '</section><section id="runs"><h2>Runs</h2>'
            + table_html("runs-table", ["started (UTC)", "run", "series", "verdict"], run_rows) + skipped + "</section>")
    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in (("flags", "Thresholds"), ("series", "Series"),
                                                           ("charts", "Charts"), ("runs", "Runs")))
    return page(f"Zora trend: {status}", header, nav, body)


def trend(root: Path, fail_on: Sequence[str] = (), baseline: Path | None = None, last: int = 30,
          out: Path | None = None) -> TrendResult:
    """Read, judge, chart and write (see the module's docstring); raises ``TrendError`` for bad usage."""
    thresholds = [parse_threshold(t) for t in fail_on]  # bad flags first: before reading anything
    if not 1 <= last <= 1000:
        raise TrendError(f"--last {last}: must be from 1 to 1000 runs")
    root = Path(root)
    if not root.is_dir():
        raise TrendError(f"{root}: not a directory")
    runs, skipped = read_runs(root)
    if not runs:
        raise TrendError(f"{root}: no run directories there (none holds results.json and config.json)")
    base: RunInfo | None = None
    if baseline is not None:
        want = baseline.resolve()
        base = next((r for r in runs if r.path.resolve() == want or r.name == str(baseline)), None)
        if base is None:
            raise TrendError(f"--baseline {baseline}: not one of the runs under {root}")
        if all(r is base or r.series != base.series or r.time < base.time for r in runs):
            raise TrendError(f"--baseline {baseline}: no later run of its series ({base.series}) to compare with it")
    data = figures({"run": r.name, "time": r.time, "series": r.series, "results": r.results} for r in runs)
    _check(thresholds, data)
    flags = _evaluate(thresholds, runs, data, last, base)
    out = Path(out) if out is not None else root
    try:
        (out / "trend").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrendError(f"--out {out}: {e.strerror or e}") from e
    kinds = data.dropna(subset=["criterion"]).drop_duplicates("criterion").set_index("criterion")["kind"].to_dict()
    metrics = [(str(c), "") for c in kinds if kinds[c] != "run"]
    metrics += [(t.criterion, t.stat) for t in thresholds if t.stat and (t.criterion, t.stat) not in metrics]
    charts = [_chart(f"{c}.{s}" if s else c, c, s, UNITS.get(str(kinds.get(c, "")), ""), data, runs, flags)
              for c, s in metrics]
    paths = []
    for c in charts:
        p = out / "trend" / c.name
        p.write_bytes(c.png)
        paths.append(p)
    result = TrendResult(runs, flags, out / "trend.html", skipped, paths)
    (out / "trend.html").write_text(_html(result, charts, thresholds, out), encoding="utf-8")
    (out / "trend.json").write_text(json.dumps({
        "runs": [{"run": r.name, "path": str(r.path), "time": r.time.isoformat(), "series": r.series,
                  "verdict": r.verdict} for r in runs],
        "flags": [{"threshold": f.threshold.text, "series": f.series, "run": f.run.name, "value": f.value,
                   "baseline": f.baseline, "basis": f.basis, "broken": f.broken, "newest": f.newest}
                  for f in flags],
        "regressions": [f.threshold.text + " [" + f.series + "] " + f.run.name for f in result.regressions],
        "skipped": skipped}, indent=2, default=str), encoding="utf-8")
    return result
