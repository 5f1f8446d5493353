"""A real browser for the tests: the system's headless Chromium (Debian ``chromium``) driven by Playwright.

Never ``playwright install`` (it downloads a browser): Playwright launches ``/usr/bin/chromium`` by path. Every
page records what it printed to the console, the script errors it raised and every request it made, so that tests
can assert "no console errors" and "no request to another host".
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support import IN_CI

CHROMIUM = os.environ.get("FAILSOFT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = os.environ.get("FAILSOFT_SCREENSHOTS", "") not in ("", "0")  # also write docs/*.png
DOCS = Path(__file__).resolve().parents[2] / "docs"


def require_chromium() -> str:
    """The Chromium binary; a skip on a developer machine without it, a failure in CI (tests must not skip)."""
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if path:
        return path
    why = f"no Chromium at {CHROMIUM}: install the Debian package (apt-get install chromium; see .ci/test-tools.txt)"
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


@dataclass
class Recorder:
    """What one page did: console messages (type, text), uncaught script errors, and the URL of every request."""

    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        """Start recording ``page``."""
        page.on("console", lambda m: self.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))

    def problems(self, tolerated: tuple[str, ...] = ()) -> list[str]:
        """Console errors and warnings, and script errors; console lines containing a ``tolerated`` text are
        left out (the browser's own report of a refused connection while the daemon is down)."""
        bad = [f"console {kind}: {text}" for kind, text in self.console
               if kind in ("error", "warning") and not any(t in text for t in tolerated)]
        return bad + [f"page error: {e}" for e in self.errors]

    def foreign(self, origin: str) -> list[str]:
        """Requests to anywhere but ``origin`` (scheme://host:port)."""
        want = urlsplit(origin)
        return [u for u in self.requests
                if (urlsplit(u).scheme, urlsplit(u).netloc) != (want.scheme, want.netloc)]


def launch(pw: Any) -> Any:
    """Launch the system Chromium headless through a started Playwright."""
    return pw.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS, headless=True)


def screenshot(page: Any, name: str) -> None:
    """Write ``docs/<name>`` from this page when FAILSOFT_SCREENSHOTS is set (``make screenshots``)."""
    if SCREENSHOTS:
        page.screenshot(path=str(DOCS / name), full_page=True)
