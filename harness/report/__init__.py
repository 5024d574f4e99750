"""The report of a run, computed from its run directory alone (``harness.checks`` analysis + the verdict):

* ``files.py``: ``results.json`` (what ``trend`` reads), ``verdict.md``, ``junit.xml``;
* ``frames.py``: the run as pandas tables (per delivery, per observation, faults, recoveries, probes), built
  once; the charts, the HTML and the trend read them;
* ``charts.py``: matplotlib PNGs (``charts/``); ``html.py``: the self-contained ``index.html``;
* ``text.py``: the headline and how limits and figures read (terminal, Markdown, pytest);
* ``trend.py``: ``zora-harness trend`` across many run directories, with regression flags.

Pure: nothing here imports the runtime (no HTTP client, no database driver, no stack:
``tests/harness/test_layering.py``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness.checks import Analysis
from harness.criteria import CriteriaError, Verdict, parse_criteria
from harness.report.files import results, write_files
from harness.report.text import headline

__all__ = ["VERDICT_FILES", "headline", "results", "write_html", "write_report"]

VERDICT_FILES = ("results.json", "verdict.md", "junit.xml", "index.html", "charts/latency_cdf.png",
                 "charts/delivery_matrix.png", "charts/latency_over_time.png", "charts/probe_flavours.png")
RUN_FILES = ("index.html", "verdict.md", "results.json", "junit.xml", "summary.md", "config.json", "environment.json",
             "criteria.toml", "history.jsonl", "report.png")


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _titles(run_dir: Path) -> dict[str, str]:
    try:
        return {c.id: c.title for c in parse_criteria((run_dir / "criteria.toml").read_text(encoding="utf-8"))}
    except (OSError, UnicodeDecodeError, CriteriaError):
        return {}


MAX_SCREENSHOTS = 24  # the browser probes' indicator screenshots inlined into index.html (it stays one file)


def write_html(run_dir: Path, a: Analysis, v: Verdict, out: Path | None = None, *,
               charts_dir: Path | None = None, stored_verdict: str | None = None) -> dict[str, float]:
    """``index.html`` for the run in ``run_dir`` (its environment and config read from there), written to ``out``
    (default ``run_dir/index.html``); with ``charts_dir`` the charts are saved there as PNGs too. Returns how long
    each step took (frames, charts, html), for ``bench/report_scale.py``."""
    from harness.report import charts as charts_mod
    from harness.report import frames as frames_mod
    from harness.report import html as html_mod

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "index.html"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    deadlines = {ln.criterion.events: ln.criterion.max_ms for ln in v.lines
                 if ln.criterion.kind == "latency" and ln.criterion.events != "*" and ln.criterion.probes == "protocol"}
    f = frames_mod.build(a, deadlines)
    timings["frames"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    charts = charts_mod.render_all(f, v)
    if charts_dir is not None:
        charts_dir.mkdir(parents=True, exist_ok=True)
        for c in charts:
            (charts_dir / c.name).write_bytes(c.png)
    timings["charts"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    here = out.parent
    files = [n for n in RUN_FILES if (here / n).exists() and n != out.name] + (["charts/"] if charts_dir else [])
    page = html_mod.render(v, f, charts, environment=_json(run_dir / "environment.json"),
                           config=_json(run_dir / "config.json"), titles=_titles(run_dir),
                           stored_verdict=stored_verdict, files=files,
                           screenshots=[(p.stem, p.read_bytes()) for p in
                                        sorted((run_dir / "screenshots").glob("*.png"))[:MAX_SCREENSHOTS]])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    timings["html"] = time.perf_counter() - t0
    return timings


def write_report(out: Path, a: Analysis, v: Verdict, run_dir: Path | None = None) -> None:
    """Every verdict file of a run into ``out``: results.json, verdict.md, junit.xml, charts/*.png and index.html.
    ``run_dir`` is the run directory the report is of (its environment and config), when ``out`` is not it
    (``zora-harness analyze`` writes into a directory of its own)."""
    out = Path(out)
    write_files(out, a, v)
    write_html(run_dir if run_dir is not None else out, a, v, out / "index.html", charts_dir=out / "charts")
