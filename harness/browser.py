"""The browser flavour of the probes: supabase-js in real Chromium, in a page that shows what a person sees.

``BrowserProbes`` runs the probe page (``harness/js/page``) in Debian's Chromium through Playwright, in a process
of its own (``harness/browser_driver.py``, started under ``nice``): Chromium's rendering and Playwright's
messages never run on the protocol probes' event loop, and their CPU yields to it. Each tab is one probe (its
own supabase-js client, its own socket, as each tab of an app has), subscribed from the apps' declaration as the
supabase-js twins are, and its lines are the twins' (``JsProbes``), plus what only a page has:

* every change with the time its DOM mutation was observed (``Change.screen_t``) and the next animation frame
  after it (``frame_t``): write -> deliver -> screen on one clock;
* the connection-status indicator (``Indicator``: Live / Reconnecting / Offline), with a screenshot of the page
  in each state it showed (``screenshots/`` in the run directory, ``Screenshot`` records);
* each tab's clock mapping (``BrowserTab``: page ``performance.now()`` onto the run's monotonic clock, with its
  error and its drift by the end), its visibility and focus.

A tab opened "behind" another (``front=False``) is unfocused and behind the front tab; headless Chromium still
reports it ``visible`` and renders it (tried: another tab brought to the front, focus emulation off, its window
minimised, a tab created in the background over CDP, headful under Xvfb without Playwright's anti-backgrounding
flags): a really hidden, timer-throttled tab cannot be had here, and its figures are reported apart, as what they
are.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from harness.browser_driver import UMD
from harness.probes import JsProbes, Probe, ProbeFailure
from harness.records import BrowserStarted, BrowserTab, Indicator, ProbeError, Screenshot
from harness.run import Run

__all__ = ["CHROMIUM", "NICE", "BrowserProbes", "browser_unavailable", "tab_names"]

CHROMIUM = Path("/usr/bin/chromium")
NICE = 10  # the driver's and Chromium's niceness: the protocol probes keep the CPU when both want it
SETPRIV = "/usr/bin/setpriv"  # util-linux: drops CAP_SYS_NICE, so no Chromium process can lower its niceness
STATES = ("Live", "Reconnecting", "Offline")


def browser_unavailable(chromium: Path = CHROMIUM) -> str | None:
    """Why browser probes cannot run here, or None."""
    if not chromium.exists():
        return f"browser probes need Chromium at {chromium}: run `bash .ci/setup` (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "browser probes need the python package playwright: run `bash .ci/setup`"
    if not UMD.exists():
        return f"browser probes need supabase-js's UMD build ({UMD}): run `npm ci` (bash .ci/setup does)"
    return None


def tab_names(spec: str, tabs: int) -> list[str]:
    """The browser probes of one app instance: ``<spec>@browser``, then ``<spec>@browser#2``, ..."""
    return [f"{spec}@browser" + (f"#{i + 1}" if i else "") for i in range(tabs)]


class BrowserProbes(JsProbes):
    """Browser probes, one Chromium tab each, in one driver process."""

    LOG = "browser-probes.log"
    WHAT = "browser probes"
    PROCESS = "browser driver process"

    def __init__(self, run: Run, probes: list[Probe], *, behind: frozenset[str] = frozenset(),
                 indicator: str = "state", chromium: Path = CHROMIUM, nice: int = NICE) -> None:
        super().__init__(run, probes)
        self.behind = behind  # probes whose tab is opened behind another one
        self.indicator = indicator  # "state": driven by the client; "always-live": the negative control's
        self.chromium = chromium
        self.nice = nice

    def unavailable(self) -> str | None:  # type: ignore[override]
        return browser_unavailable(self.chromium)

    def command(self) -> list[str]:
        """The driver, under ``nice``; and without CAP_SYS_NICE where ``setpriv`` can drop it: Chromium raises the
        priority of its own display-critical processes (nice -8) when it may, as it may when run by root."""
        cmd = [sys.executable, "-m", "harness.browser_driver"]
        if not self.nice:
            return cmd
        cmd = ["nice", "-n", str(self.nice), *cmd]
        if self.capped:
            cmd = [SETPRIV, "--inh-caps", "-sys_nice", "--bounding-set", "-sys_nice", *cmd]
        return cmd

    @property
    def capped(self) -> bool:
        """Whether Chromium is kept from raising its priority back above the driver's niceness."""
        return Path(SETPRIV).exists()

    def started(self, hello: dict[str, Any], t0: int, t1: int) -> None:
        t_driver = int(hello.get("t", -1))
        if hello.get("ev") != "hello":
            raise ProbeFailure(f"browser driver did not start: {hello.get('message') or hello}")
        if not t0 <= t_driver <= t1:
            raise RuntimeError(f"the browser driver's clock ({t_driver}) is not ours ({t0}..{t1})")
        self._clock = (t0, t_driver, t1)

    def config(self) -> dict[str, Any]:
        base = super().config()
        return {"url": base["url"], "anonKey": base["anonKey"], "serverOffsetNs": base["serverOffsetNs"],
                "indicator": self.indicator, "chromium": str(self.chromium), "run_dir": str(self.run.dir.resolve()),
                "tabs": [{"probe": p, "front": p["name"] not in self.behind,
                          "window": str(self.probes[p["name"]].info.original or p["name"])} for p in base["probes"]]}

    def _line(self, o: dict[str, Any], t: int) -> None:
        h = self.run.history
        ev = o.get("ev")
        probe = str(o.get("probe", ""))
        if ev == "tab":
            if not self._announced:
                self._announced = True
                h.append(BrowserStarted(browser=str(o.get("browser")), probes=tuple(sorted(self.probes)),
                                        clock_check_ns=self._clock, nice=self.nice,
                                        priority_capped=self.capped and bool(self.nice)))
            h.append(BrowserTab(probe=probe, t=t, clock_error_ns=int(o.get("clock_error_ns") or 0),
                                visibility=str(o.get("visibility")), focused=bool(o.get("focused")),
                                front=bool(o.get("front", True))))
        elif ev == "clock_end":
            h.append(BrowserTab(probe=probe, t=t, phase="end", clock_error_ns=int(o.get("clock_error_ns") or 0),
                                drift_ns=int(o.get("drift_ns") or 0)))
        elif ev == "indicator":
            state = str(o.get("state"))
            if state in STATES and probe in self.probes:
                h.append(Indicator(probe=probe, t=t, state=state,  # type: ignore[arg-type]
                                   visibility=str(o.get("visibility"))))
            else:
                h.append(ProbeError(probe=probe or self.WHAT, t=t, message=f"indicator shows {state!r}"))
        elif ev == "screenshot":
            path = Path(str(o.get("path")))
            rel = os.path.relpath(path, self.run.dir.resolve())
            h.append(Screenshot(probe=probe, t=t, state=str(o.get("state")), path=rel))
        else:
            super()._line(o, t)

    _announced = False
    _clock = (0, 0, 0)
