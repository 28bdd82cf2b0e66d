"""Shared pieces of the alerts tests: simulated traffic generated once per session and
bulk-loaded into each test store, a capturing notifier, and a local HTTP receiver.

``sim_batches(config)`` normalizes the simulator's spans once (cached by config);
``load_sim(store, config)`` inserts them and returns the manifest (ground truth).
``Receiver`` is a real ``http.server`` on a loopback port, in a thread, that records
every request and answers with scripted status codes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from goldenloop.alerts.notifiers import register_notifier
from goldenloop.alerts.notifiers.http import RetryingHttp
from goldenloop.alerts.payload import Notification
from goldenloop.ingest.normalize import normalize_spans
from goldenloop.model import SpanBatch
from goldenloop.pricing import PriceTable
from goldenloop.sim import SimConfig, SimManifest, simulate
from goldenloop.store.base import Store

SIM_START = datetime(2024, 6, 3, tzinfo=UTC)
NOW_US = int(datetime(2024, 7, 1, tzinfo=UTC).timestamp() * 1_000_000)


def incident_config(days: float = 2, sessions_per_day: int = 300) -> SimConfig:
    """The default incident schedule (provider outage on day 2, 10:00–11:00 UTC)."""
    return SimConfig(
        seed=7, start=SIM_START, days=days, sessions_per_day=sessions_per_day, text="short"
    )


def clean_config(days: float = 7, sessions_per_day: int = 300) -> SimConfig:
    return SimConfig(seed=11, start=SIM_START, days=days, sessions_per_day=sessions_per_day,
                     text="short", scenarios=())  # fmt: skip


@cache
def sim_batches(config: SimConfig) -> tuple[tuple[SpanBatch, ...], SimManifest]:
    manifest = SimManifest.for_config(config)
    batches = []
    for chunk in simulate(config):
        batches.append(normalize_spans(chunk.spans, default_project="default", prices=PriceTable(),
                                       now_us=NOW_US))  # fmt: skip
        manifest.add(chunk.truth, spans=len(chunk.spans), feedback=len(chunk.feedback),
                     outcomes=len(chunk.outcomes))  # fmt: skip
    return tuple(batches), manifest


def load_sim(store: Store, config: SimConfig) -> SimManifest:
    batches, manifest = sim_batches(config)
    for batch in batches:
        store.insert_spans(batch, dedupe=False)
    return manifest


# -- a notifier that records what it is asked to send ------------------------------------------
@dataclass
class Captured:
    sent: list[Notification] = field(default_factory=list)
    fail: bool = False

    def check(self, options: Mapping[str, Any]) -> None:
        if set(options) - {"tag"}:
            raise ValueError(f"unknown option(s) {', '.join(sorted(set(options) - {'tag'}))}")

    def send(
        self, notification: Notification, options: Mapping[str, Any], http: RetryingHttp
    ) -> None:
        if self.fail:
            raise RuntimeError("capture told to fail")
        self.sent.append(notification)


def capture_notifier(name: str = "capture") -> Captured:
    captured = Captured()
    register_notifier(name, captured)
    return captured


# -- a real HTTP receiver --------------------------------------------------------------------
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class Receiver:
    """``http.server`` in a thread. ``script[path]`` is a list of status codes answered in
    turn (then 200/202); ``delay`` seconds are slept before answering ``slow_paths``."""

    def __init__(self, script: dict[str, list[int]] | None = None, *, ok_status: int = 200,
                 slow_paths: tuple[str, ...] = (), delay: float = 0.0) -> None:  # fmt: skip
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path in slow_paths and delay:
                    threading.Event().wait(delay)
                with receiver.lock:
                    receiver.requests.append(
                        Received(self.path, dict(self.headers), json.loads(raw or b"null"))
                    )
                    queue = receiver.script.get(self.path) or []
                    status = queue.pop(0) if queue else ok_status
                body = json.dumps({"status": "success" if status < 300 else "error"}).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return [r.body for r in self.requests if r.path == path]
