"""A page opened in real Chromium (Debian's ``/usr/bin/chromium``, installed by ``.ci/setup``) through Playwright,
with every request, console message and page error it caused recorded. Never skipped: a machine without
Chromium fails the test and names the fix."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import ConsoleMessage, Page, Request, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# headless, and nothing that phones home: on this machine's closed network those connections are refused
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@dataclass
class Opened:
    page: Page
    requests: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)  # (type, text)
    errors: list[str] = field(default_factory=list)  # uncaught page errors

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)


@contextmanager
def chromium(path: Path, width: int = 1280, height: int = 900) -> Iterator[Opened]:
    """``path`` opened from file:// in a fresh headless Chromium profile, loaded."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `bash .ci/setup` (apt-get install chromium)"
    with tempfile.TemporaryDirectory(prefix="zora-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True, args=ARGS,
                                                   viewport={"width": width, "height": height})
        try:
            page = ctx.new_page()
            opened = Opened(page)

            def on_request(r: Request) -> None:
                opened.requests.append(r.url)

            def on_console(m: ConsoleMessage) -> None:
                opened.console.append((m.type, m.text))

            def on_error(e: Exception) -> None:
                opened.errors.append(str(e))

            page.on("request", on_request)
            page.on("console", on_console)
            page.on("pageerror", on_error)
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            yield opened
        finally:
            ctx.close()
