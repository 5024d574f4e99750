"""The run's charts (matplotlib, PNG), drawn from its frames (``frames.py``), never from the records.

Each chart function returns a ``Chart`` (its file name, title, caption and PNG bytes): ``write_report`` saves them
under ``charts/`` and the HTML report inlines the same bytes, so it needs nothing else to be viewed. Faults are
shaded wherever time is the axis. Charts stay readable and fast at any size: a million deliveries are drawn as
their percentiles and a fixed sample of points, never point by point.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

from harness.criteria import Line, Verdict
from harness.report.frames import Frames, matrix, nearest_rank, twin_gaps

__all__ = ["Chart", "delivery_matrix", "latency_cdf", "latency_over_time", "png_bytes", "probe_flavours", "reconnection",
           "render_all"]

DPI = 120
MAX_POINTS = 40_000  # scatter points drawn per chart (a fixed sample beyond that)
MAX_CDF_POINTS = 4_000
PASS, FAIL, UNKNOWN = "#1a7f37", "#cf222e", "#9a6700"
FAULT_COLORS = {"reset": "#cf222e", "blackhole": "#8250df", "down": "#bc4c00", "latency": "#0969da"}


@dataclass(frozen=True)
class Chart:
    name: str  # file name under charts/
    title: str
    caption: str
    png: bytes


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _merged(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def shade_faults(ax: Any, faults: pd.DataFrame, until: float) -> None:
    """Fault intervals as shaded bands, the overlapping intervals of one kind of fault merged (so many devices'
    faults at once read as one band, not as a darker one), an instant fault as a line; labelled once per kind."""
    if faults.empty:
        return
    for name, group in faults.groupby("name", sort=True):
        color = FAULT_COLORS.get(str(name), "#57606a")
        spans = _merged((float(s), float(e) if not math.isnan(e) else until)
                        for s, e in zip(group["start_s"], group["end_s"], strict=True))
        label: str | None = f"fault: {name}"
        for s, e in spans:
            if e - s < 0.05:
                ax.axvline(s, color=color, linewidth=1.0, alpha=0.7, label=label)
            else:
                ax.axvspan(s, e, color=color, alpha=0.13, label=label, linewidth=0)
            label = None


def log_ms(axis: Any, scale: bool = True) -> None:
    """A log axis labelled in plain numbers (1, 10, 100 ms), without the crowded minor labels."""
    if scale and axis is axis.axes.xaxis:
        axis.axes.set_xscale("log")
    elif scale:
        axis.axes.set_yscale("log")
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#57606a")
    ax.set_xticks([])
    ax.set_yticks([])


def _color(ln: Line) -> str:
    return {True: PASS, False: FAIL, None: UNKNOWN}[ln.result.valid]


def latency_cdf(f: Frames, v: Verdict) -> Chart:
    """One panel per latency criterion: the CDF of its samples, its limit, and the judged statistic marked."""
    lines = [ln for ln in v.lines if ln.criterion.kind == "latency"]
    n = max(1, len(lines))
    ncols = 2 if n > 1 else 1
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(10, 2.7 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    if not lines:
        _note(axes[0][0], "no latency criteria")
    for ax, ln in zip(axes.flat, lines, strict=False):
        c = ln.criterion
        vals = np.sort(f.latencies(c.events, c.metric, c.probes).to_numpy(dtype=float))
        ax.set_title(f"{c.id}: {c.statistic} {c.metric.replace('_to_', '->')} (n={vals.size:,})", fontsize=9,
                     color=_color(ln))
        if not vals.size:
            _note(ax, "no samples")
            continue
        idx = np.unique(np.linspace(0, vals.size - 1, min(vals.size, MAX_CDF_POINTS)).astype(int))
        ax.step(vals[idx], (idx + 1) / vals.size, where="post", color="#0969da", linewidth=1.2)
        ax.axvline(c.max_ms, color=FAIL, linestyle="--", linewidth=1, label=f"limit {c.max_ms:g} ms")
        value = ln.result.value
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            q = 1.0 if c.statistic == "max" else (float(c.statistic[1:]) / 100 if c.statistic.startswith("p") else 0.5)
            ax.plot([value], [q], "o", color=_color(ln), label=f"{c.statistic} {value:.1f} ms")
        lo, hi = float(vals[0]), max(float(vals[-1]), c.max_ms)
        if lo > 0 and hi / lo > 20:
            log_ms(ax.xaxis)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("ms", fontsize=8)
        ax.set_ylabel("fraction", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return Chart("latency_cdf.png", "Latency CDF per criterion",
                 "Each latency criterion's samples (first deliveries on a healthy network) as a cumulative distribution; "
                 "dashed: the limit; dot: the judged statistic.", png_bytes(fig))


def _percentile_of(q: float) -> Callable[[pd.Series], float]:
    def p(s: pd.Series) -> float:
        return nearest_rank(s, q)

    return p


def latency_over_time(f: Frames) -> Chart:
    """write->deliver against the time of the write: p50 / p99 per time bin, a sample of the deliveries, faults
    shaded; deliveries made while a fault had cut their probe off in another colour."""
    ev = f.events
    got = ev[ev["entitled"] & ev["write_to_deliver_ms"].notna()]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    until = float(np.nanmax([got["t_write_s"].max() if not got.empty else 1.0,
                             f.faults["end_s"].max() if not f.faults.empty else 0.0,
                             f.faults["start_s"].max() if not f.faults.empty else 0.0, 1.0]))
    shade_faults(ax, f.faults, until)
    if got.empty:
        _note(ax, "no deliveries")
    else:
        t = got["t_write_s"].to_numpy()
        ms = np.maximum(got["write_to_deliver_ms"].to_numpy(), 1e-3)
        deg = got["degraded"].to_numpy()
        pick = np.arange(t.size)
        if t.size > MAX_POINTS:
            pick = np.sort(np.random.default_rng(0).choice(t.size, MAX_POINTS, replace=False))
        sample = f" (a sample of {MAX_POINTS:,} of {t.size:,})" if t.size > MAX_POINTS else ""
        healthy = pick[~deg[pick]]
        bad = pick[deg[pick]]
        ax.scatter(t[healthy], ms[healthy], s=3, alpha=0.3, color="#0969da", label=f"deliveries{sample}",
                   rasterized=True)
        if bad.size:
            ax.scatter(t[bad], ms[bad], s=5, alpha=0.6, color="#bc4c00", label="during a fault (not judged by latency)",
                       rasterized=True)
        span = max(float(t.max() - t.min()), 1e-3)
        width = max(0.05, span / 60)
        bins = np.floor((t - t.min()) / width).astype(np.int64)
        frame = pd.DataFrame({"bin": bins, "ms": ms})
        grouped = frame.groupby("bin")["ms"]
        full = np.arange(int(bins.max()) + 1)
        x = t.min() + (full + 0.5) * width
        for q, style in ((50, "-"), (99, "--")):
            per = grouped.agg(_percentile_of(q)).reindex(full)  # empty bins break the line
            ax.plot(x, per.to_numpy(), style, color="black", linewidth=1.1,
                    marker="." if full.size < 4 else None, label=f"p{q} per {width:.2g} s")
        ax.set_yscale("log")
        log_ms(ax.yaxis, scale=False)
    ax.set_xlabel("time of the write (s since the run started)")
    ax.set_ylabel("write->deliver (ms)")
    ax.grid(alpha=0.3)
    handles, _labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return Chart("latency_over_time.png", "Percentiles over time",
                 "write->deliver of every delivery against the time of its write: p50 and p99 per time bin; shaded: "
                 "faults. Deliveries made while a fault had cut their probe off are judged by completeness and "
                 "reconnection, not by the latency criteria.", png_bytes(fig))


def delivery_matrix(f: Frames) -> Chart:
    """App x event group: delivered (live or recovered) of expected, coloured by the share; leaks in red."""
    m = matrix(f)
    if m.empty:
        fig, ax = plt.subplots(figsize=(6, 1.6))
        _note(ax, "no expected deliveries")
        return Chart("delivery_matrix.png", "Delivery matrix", "App x event group.", png_bytes(fig))
    rows = sorted(m["row"].unique())
    groups = sorted(m["group"].unique())
    grid = np.full((len(rows), len(groups)), np.nan)
    text = [[""] * len(groups) for _ in rows]
    cells = {(r, g): (e, d + rc, lk) for r, g, e, d, rc, lk in
             zip(m["row"], m["group"], m["expected"], m["delivered"], m["recovered"], m["leaks"], strict=True)}
    for i, r in enumerate(rows):
        for j, g in enumerate(groups):
            e, got, leaks = cells.get((r, g), (0, 0, 0))
            if leaks:
                grid[i][j], text[i][j] = -1.0, f"{leaks} leak"
            elif e:
                grid[i][j], text[i][j] = got / e, f"{got}/{e}"
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 + 1.4 * len(groups)), 1.0 + 0.42 * len(rows)))
    ax.imshow(grid, cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(groups)), groups, rotation=20, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(groups)):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7)
    ax.set_title("Delivery: app x event group (delivered live or by refetch / expected)", fontsize=9)
    fig.tight_layout()
    return Chart("delivery_matrix.png", "Delivery matrix",
                 "What each app received of what it was entitled to, per event group.", png_bytes(fig))


MAX_ROWS_PER_APP = 8  # an app with more probes (churn) is drawn as one row


def reconnection(f: Frames) -> Chart | None:
    """One row per probe (an app with many probes: one row): each fault that reached it (red), the time from the
    fault's end to rejoined (orange) and on to converged (green), when it noticed (x); None without faults."""
    r = f.recoveries
    if r.empty:
        return None
    sizes = r.groupby("app")["probe"].nunique()
    label = [f"{a} ({sizes[a]} probes)" if sizes[a] > MAX_ROWS_PER_APP else p for p, a in zip(r["probe"], r["app"],
                                                                                           strict=True)]
    r = r.assign(row=label)
    rows = sorted(r["row"].unique(), key=lambda x: (x.startswith(tuple(f"{a} (" for a in sizes.index)), x))
    pos = {name: i for i, name in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.3 * len(rows)))
    y = r["row"].map(pos).to_numpy(dtype=float)
    fs, fe = r["fault_start_s"].to_numpy(), r["fault_end_s"].to_numpy()
    rejoined = r["rejoined_s"].to_numpy()
    converged = r["converged_s"].to_numpy()
    ax.barh(y, fe - fs, left=fs, height=0.7, color=FAIL, alpha=0.35, label="fault (its network cut)")
    back = ~np.isnan(rejoined)
    ax.barh(y[back], (rejoined - fe)[back], left=fe[back], height=0.7, color="#bc4c00", alpha=0.8,
            label="fault's end -> rejoined")
    conv = back & ~np.isnan(converged)
    ax.barh(y[conv], (converged - rejoined)[conv], left=rejoined[conv], height=0.3, color=PASS, alpha=0.9,
            label="rejoined -> converged (refetch)")
    never = r["disconnected"].to_numpy(dtype=bool) & ~back
    if never.any():
        ax.scatter(fe[never], y[never], marker=">", color=FAIL, s=30, label="never rejoined", zorder=3)
    noticed = r["noticed_s"].to_numpy()
    seen = ~np.isnan(noticed)
    ax.scatter(noticed[seen], y[seen], marker="x", color="black", s=18, label="noticed", zorder=3)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time (s since the run started)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return Chart("reconnection.png", "Reconnection timeline",
                 "Each fault that reached a client (red), then from the fault's end to every channel rejoined and live "
                 "(orange) and on to its refetch (green); x: when the client noticed.", png_bytes(fig))


def probe_flavours(f: Frames) -> Chart:
    """Our probes and the supabase-js twins side by side: write->deliver CDFs (healthy network), and how much
    later a twin stamped the same event than its original."""
    ev = f.events
    ok = ev[ev["entitled"] & ~ev["degraded"] & ev["write_to_deliver_ms"].notna()]
    gaps = twin_gaps(f).to_numpy(dtype=float)
    fig, axes = plt.subplots(1, 2 if gaps.size else 1, figsize=(10, 3.2), squeeze=False)
    ax = axes[0][0]
    drawn = False
    for name, color in (("ours", "#0969da"), ("supabase-js", "#bc4c00")):
        vals = np.sort(ok.loc[ok["flavour"] == name, "write_to_deliver_ms"].to_numpy(dtype=float))
        if not vals.size:
            continue
        idx = np.unique(np.linspace(0, vals.size - 1, min(vals.size, MAX_CDF_POINTS)).astype(int))
        ax.step(vals[idx], (idx + 1) / vals.size, where="post", color=color,
                label=f"{name}: p50 {nearest_rank(vals, 50):.1f} / p99 {nearest_rank(vals, 99):.1f} ms (n={vals.size:,})")
        drawn = True
    if drawn:
        ax.set_xlabel("write->deliver (ms), healthy network", fontsize=8)
        ax.set_ylabel("fraction", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    else:
        _note(ax, "no deliveries")
    ax.set_title("Both flavours, one clock", fontsize=9)
    if gaps.size:
        ax2 = axes[0][1]
        lo, hi = np.percentile(gaps, [0.5, 99.5])
        ax2.hist(np.clip(gaps, lo, hi), bins=50, color="#8250df", alpha=0.8)
        ax2.axvline(nearest_rank(gaps, 50), color="black", linestyle="--", linewidth=1,
                    label=f"median {nearest_rank(gaps, 50):.1f} ms")
        ax2.set_title(f"supabase-js stamps later than ours by (n={gaps.size:,} events)", fontsize=9)
        ax2.set_xlabel("twin - original (ms)", fontsize=8)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return Chart("probe_flavours.png", "Probe flavours",
                 "Our asyncio probes and their supabase-js twins (what the apps run) on one clock: the twin's lag is "
                 "the client's own share of what the apps see.", png_bytes(fig))


def render_all(f: Frames, v: Verdict) -> list[Chart]:
    """Every chart of a run, in the report's order (the reconnection timeline only when faults reached a client)."""
    charts = [latency_cdf(f, v), latency_over_time(f), delivery_matrix(f), reconnection(f), probe_flavours(f)]
    return [c for c in charts if c is not None]
