"""The browser probes' driver: a process of its own (started by ``harness/browser.py``, under ``nice``), so
Chromium and Playwright never share the protocol probes' event loop or their CPU priority.

It serves the probe page (``harness/js/page``, supabase-js's UMD build from ``node_modules``) on 127.0.0.1, opens
one Chromium tab per browser probe, places each tab's clock on the harness's (a round-trip exchange of
``performance.now()`` against ``time.perf_counter_ns``, CLOCK_MONOTONIC: the fastest of several round trips; its
half-width is the mapping's error), starts the page with its probe's configuration (through ``evaluate``: the
user's token is never in a URL), and relays what each page reports, one JSON line each on stdout, in the Node
probes' format (``harness/js/probes.mjs``) with page times mapped onto the harness's clock (ns, as text).

In: one configuration line on stdin, then ``quit`` (or stdin closing). Out: ``hello`` (before the configuration,
for the clock check), ``tab`` per tab (its clock mapping, visibility, focus), the pages' lines, ``screenshot``
(one per probe and indicator state, into the run directory), ``clock_end`` (each tab's mapping measured again:
its drift), ``error``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAGE_DIR = ROOT / "harness" / "js" / "page"
UMD = ROOT / "node_modules" / "@supabase" / "supabase-js" / "dist" / "umd" / "supabase.js"
# headless, and nothing that phones home (this machine's network is closed); background tabs throttled as usual
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
CLOCK_SAMPLES = 15
MAX_S = 4 * 3600  # the driver's longest life, whatever its parent does
POLL_MS = 100  # how often the driver looks for a quit and screenshots to take (page stamps do not wait for it)


def out(o: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(o, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class _Page(SimpleHTTPRequestHandler):
    """The probe page and supabase-js's UMD build; nothing else."""

    def translate_path(self, path: str) -> str:
        name = path.split("?", 1)[0]
        if name == "/supabase.js":
            return str(UMD)
        if name in ("/", "/index.html"):
            return str(PAGE_DIR / "index.html")
        if name == "/probe.js":
            return str(PAGE_DIR / "probe.js")
        return str(PAGE_DIR / "missing")

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def page_clock(page: Any, samples: int = CLOCK_SAMPLES) -> tuple[int, int]:
    """(offset, error) in ns: harness time = page ``performance.now()`` (ms) * 1e6 + offset, to within +/- error
    (half the fastest round trip, plus the page clock's resolution: Chromium coarsens ``performance.now()``
    to 100 us on a page that is not cross-origin isolated, 5 us on one that is)."""
    best: tuple[int, int, float] | None = None
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        v = float(page.evaluate("performance.now()"))
        t1 = time.perf_counter_ns()
        if best is None or t1 - t0 < best[1] - best[0]:
            best = (t0, t1, v)
    assert best is not None
    t0, t1, v = best
    resolution = 5_000 if page.evaluate("self.crossOriginIsolated") else 100_000
    return (t0 + t1) // 2 - round(v * 1e6), (t1 - t0) // 2 + resolution


def _page_error(probe: str, e: Any) -> None:
    out({"t": str(time.perf_counter_ns()), "ev": "error", "probe": probe, "message": f"page error: {e}"[:300]})


def _console(probe: str, m: Any) -> None:
    if m.type == "error":  # into the driver's log (the run directory's browser-probes.log)
        print(f"{probe}: console: {m.text}"[:500], file=sys.stderr, flush=True)


def _stdin(q: queue.Queue[str | None]) -> None:
    for line in sys.stdin:
        q.put(line)
    q.put(None)


def main() -> int:
    try:
        return _main()
    except Exception as e:  # one line for the harness: Chromium would not start, a page broke
        out({"t": str(time.perf_counter_ns()), "ev": "error", "message": f"browser driver: {type(e).__name__}: {e}"
             .splitlines()[0][:300]})
        return 1


def _main() -> int:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    out({"t": str(time.perf_counter_ns()), "ev": "hello", "python": sys.version.split()[0]})
    try:
        cfg = json.loads(sys.stdin.readline())
    except ValueError as e:
        out({"t": str(time.perf_counter_ns()), "ev": "error", "message": f"bad configuration: {e}"})
        return 2
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_stdin, args=(lines,), daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Page, directory=str(PAGE_DIR)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    shots = Path(cfg["run_dir"]) / "screenshots"
    offsets: dict[Any, tuple[str, int]] = {}  # page -> (probe, clock offset)
    want: list[tuple[Any, str, str]] = []  # screenshots to take: (page, probe, state)
    taken: set[tuple[str, str]] = set()
    deadline = time.monotonic() + min(float(cfg.get("max_s", MAX_S)), MAX_S)

    def shoot(page: Any, probe: str, state: str) -> bool:
        """A screenshot of the page showing ``state``: kept only if the indicator showed it before and after."""
        read = "document.getElementById('status').dataset.state"
        if page.evaluate(read) != state:
            return False
        path = shots / f"{probe.replace('/', '_').replace('#', '_')}-{state}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
        if page.evaluate(read) != state:
            path.unlink(missing_ok=True)
            return False
        out({"t": str(time.perf_counter_ns()), "ev": "screenshot", "probe": probe, "state": state, "path": str(path)})
        return True

    def relay(source: dict[str, Any], o: Any) -> None:
        page = source["page"]
        probe, off = offsets.get(page, ("", 0))
        if not isinstance(o, dict) or not probe:
            return
        for k in ("t", "screen", "frame"):
            v = o.get(k)
            o[k] = str(round(float(v) * 1e6) + off) if isinstance(v, int | float) else None
        o["probe"] = probe
        out(o)
        if o.get("ev") == "indicator" and (probe, str(o.get("state"))) not in taken:
            taken.add((probe, str(o.get("state"))))
            want.append((page, probe, str(o.get("state"))))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=cfg["chromium"], headless=True, args=ARGS)
        # one browser context (its own window) per app instance, as each person has their own browser; its tabs
        # are tabs of that window, and only the one in front of each window is rendered at the display's rate
        contexts: dict[str, Any] = {}
        pages: list[tuple[Any, dict[str, Any]]] = []
        for tab in cfg["tabs"]:
            probe = tab["probe"]["name"]
            group = str(tab.get("window", probe))
            if group not in contexts:
                contexts[group] = browser.new_context(viewport={"width": 900, "height": 700})
                contexts[group].expose_binding("zoraOut", relay)
            context = contexts[group]
            page = context.new_page()
            page.on("pageerror", functools.partial(_page_error, probe))
            page.on("console", functools.partial(_console, probe))
            page.goto(base, wait_until="load")
            pages.append((page, tab))
        # the tabs meant to be in the front come forward last: the others are behind them, and lose the focus
        # Playwright emulates on every page (headless Chromium still reports them "visible": it renders every tab)
        for page, tab in pages:
            if not tab.get("front", True):
                page.context.new_cdp_session(page).send("Emulation.setFocusEmulationEnabled", {"enabled": False})
        for page, tab in pages:
            if tab.get("front", True):
                page.bring_to_front()
        for page, tab in pages:
            off, err = page_clock(page)
            offsets[page] = (tab["probe"]["name"], off)
            facts = page.evaluate("({v: document.visibilityState, f: document.hasFocus(), ua: navigator.userAgent})")
            out({"t": str(time.perf_counter_ns()), "ev": "tab", "probe": tab["probe"]["name"], "clock_offset_ns": off,
                 "clock_error_ns": err, "visibility": facts["v"], "focused": facts["f"],
                 "browser": browser.version, "front": bool(tab.get("front", True))})
            if cfg.get("screenshots", True) and shoot(page, tab["probe"]["name"], "Offline"):  # before it connects
                taken.add((tab["probe"]["name"], "Offline"))
            page.evaluate("cfg => { window.zoraStart(cfg) }", {**{k: cfg[k] for k in ("url", "anonKey",
                                                                                     "serverOffsetNs", "indicator")},
                                                               "probe": tab["probe"]})
        while time.monotonic() < deadline:
            try:
                line = lines.get_nowait()
            except queue.Empty:
                line = ""
            if line is None or line.strip() == "quit":
                break
            while want:
                page, probe, state = want.pop(0)
                with contextlib.suppress(PlaywrightError):
                    if not shoot(page, probe, state):
                        taken.discard((probe, state))  # it changed meanwhile: taken when it shows again
            pages[0][0].wait_for_timeout(POLL_MS)  # lets Playwright deliver the pages' lines
        for page, tab in pages:
            with contextlib.suppress(PlaywrightError):
                off, err = page_clock(page, 5)
                out({"t": str(time.perf_counter_ns()), "ev": "clock_end", "probe": tab["probe"]["name"],
                     "drift_ns": off - offsets[page][1], "clock_error_ns": err})
                page.evaluate("window.zoraQuit()")
        browser.close()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
