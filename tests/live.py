"""A real server on a real socket, and a real browser, for end-to-end and UI tests.

``LiveServer(app)`` runs uvicorn in a background thread on a free loopback port (the
app's lifespan runs, so the writer thread is live). ``launch_chromium()`` starts
Debian's Chromium through Playwright; never ``playwright install`` (offline machine).

Usage in a test module::

    from live import LiveServer, chromium_page

    def test_page(tmp_path):
        store = DuckDBStore(tmp_path / "x.duckdb"); store.migrate()
        with LiveServer(create_app(Settings(), store)) as server, chromium_page() as page:
            page.goto(server.url + "/sessions")
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"live server did not start on {self.url}")

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError(
            "Debian's chromium is not installed; ./scripts/test installs it (apt-get install chromium)"
        )
    return path


@contextmanager
def chromium_page() -> Iterator[Any]:
    """A fresh Playwright page in headless Debian Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            yield page
        finally:
            browser.close()
