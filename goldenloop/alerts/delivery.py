"""Sending notifications off the evaluator's path, one bounded lane per notifier.

Each notifier (route) gets its own worker thread and a queue of at most
``max_pending`` notifications, so a notifier that hangs or keeps failing delays only
itself: the evaluator and the other notifiers go on. Every delivery (and every refusal
because a lane is full) is recorded in ``alert_notifications`` and logged; the alerts
page lists failures. A successful delivery calls back so the group's notification log
is updated (a failed one is retried at the group's next flush).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from goldenloop.alerts.config import RouteConfig
from goldenloop.alerts.model import aware, iso
from goldenloop.alerts.notifiers import NOTIFIERS, DeliveryError, RetryingHttp, RetryPolicy
from goldenloop.alerts.payload import Notification
from goldenloop.metrics.windows import naive
from goldenloop.store.base import Store

log = logging.getLogger("goldenloop.alerts.notify")
OnSuccess = Callable[[Notification], None]


@dataclass
class DeliveryRecord:
    id: str
    route: str
    notifier: str
    group_key: str
    status: str
    alert_count: int
    ok: bool
    attempts: int
    http_status: int | None
    error: str | None
    created_at: datetime
    finished_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "route": self.route, "notifier": self.notifier,
            "group_key": self.group_key, "status": self.status, "alerts": self.alert_count,
            "ok": self.ok, "attempts": self.attempts, "http_status": self.http_status,
            "error": self.error, "created_at": iso(self.created_at),
            "finished_at": iso(self.finished_at),
        }  # fmt: skip


def record_delivery(store: Store, record: DeliveryRecord) -> None:
    store.execute(
        "INSERT INTO alert_notifications (id, route, notifier, group_key, status, alert_count, ok, "
        "attempts, http_status, error, created_at, finished_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            record.id,
            record.route,
            record.notifier,
            record.group_key,
            record.status,
            record.alert_count,
            record.ok,
            record.attempts,
            record.http_status,
            (record.error or "")[:2000] or None,
            naive(record.created_at),
            naive(record.finished_at),
        ],  # fmt: skip
    )


def recent_deliveries(store: Store, *, limit: int = 50, failed_only: bool = False,
                      since: datetime | None = None) -> list[DeliveryRecord]:  # fmt: skip
    clauses: list[str] = ["TRUE"]
    params: list[Any] = []
    if failed_only:
        clauses.append("NOT ok")
    if since is not None:
        clauses.append("created_at >= ?")
        params.append(naive(since))
    rows = store.fetch(
        "SELECT id, route, notifier, group_key, status, alert_count, ok, attempts, http_status, "
        f"error, created_at, finished_at FROM alert_notifications WHERE {' AND '.join(clauses)} "
        "ORDER BY created_at DESC, id LIMIT ?",
        [*params, limit],
    )
    records = []
    for r in rows:
        created, finished = aware(r[10]), aware(r[11])
        assert created is not None and finished is not None
        records.append(DeliveryRecord(r[0], r[1], r[2], r[3], r[4], int(r[5]), bool(r[6]), int(r[7]),
                                      r[8], r[9], created, finished))  # fmt: skip
    return records


def prune_deliveries(store: Store, now: datetime, keep: timedelta = timedelta(days=30)) -> None:
    store.execute("DELETE FROM alert_notifications WHERE created_at < ?", [naive(now - keep)])


class Deliveries:
    """Bounded per-notifier lanes. ``sleep`` is what retries wait with (tests pass a
    no-op); ``transport`` lets tests route HTTP in-process if they want to."""

    def __init__(
        self, store: Store, *, policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None, max_pending: int = 100,
        transport: Any = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.policy = policy or RetryPolicy()
        self._closing = threading.Event()
        # Backoff waits end early when the lanes close, so shutdown is never held up.
        self.sleep: Callable[[float], Any] = sleep or self._closing.wait
        self.max_pending = max_pending
        self.transport = transport
        self._lanes: dict[str, ThreadPoolExecutor] = {}
        self._pending: dict[str, int] = {}
        self._in_flight: set[tuple[str, str]] = set()
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

    def in_flight(self, route: str, group_key: str) -> bool:
        with self._lock:
            return (route, group_key) in self._in_flight

    def submit(self, route: RouteConfig, notification: Notification, on_success: OnSuccess) -> bool:
        """Queue a delivery; False (and a recorded failure) when the lane is full."""
        lane: ThreadPoolExecutor | None = None
        with self._lock:
            pending = self._pending.get(route.name, 0)
            if pending < self.max_pending:
                self._pending[route.name] = pending + 1
                self._in_flight.add((route.name, notification.group_key))
                lane = self._lanes.get(route.name)
                if lane is None:
                    lane = self._lanes[route.name] = ThreadPoolExecutor(
                        1, thread_name_prefix=f"goldenloop-notify-{route.name}"
                    )
        if lane is None:
            now = datetime.now(UTC)
            self._record(route, notification, False, 0, None,
                         f"not sent: {self.max_pending} notifications already queued for this notifier", now)  # fmt: skip
            return False
        future = lane.submit(self._deliver, route, notification, on_success)
        with self._lock:
            self._futures = [f for f in self._futures if not f.done()] + [future]
        return True

    def _deliver(
        self, route: RouteConfig, notification: Notification, on_success: OnSuccess
    ) -> None:
        started = datetime.now(UTC)
        http = RetryingHttp(self.policy, self.sleep, self.transport, self._closing.is_set)
        ok, error, status = False, None, None
        try:
            notifier = NOTIFIERS.get(route.type)
            if notifier is None:
                raise DeliveryError(f"no notifier type {route.type!r} is registered")
            notifier.send(notification, route.options, http)
            ok, status = True, http.last_status
        except DeliveryError as exc:
            error, status = str(exc), exc.status if exc.status is not None else http.last_status
        except Exception as exc:  # a user's notifier may raise anything
            error, status = f"{type(exc).__name__}: {exc}", http.last_status
        try:
            self._record(route, notification, ok, max(http.attempts, 1 if ok else http.attempts),
                         status, error, started)  # fmt: skip
            if ok:
                on_success(notification)
        except Exception:
            log.exception("recording the delivery to %s failed", route.name)
        finally:
            with self._lock:
                self._pending[route.name] = max(0, self._pending.get(route.name, 1) - 1)
                self._in_flight.discard((route.name, notification.group_key))
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1

    def _record(self, route: RouteConfig, notification: Notification, ok: bool, attempts: int,
                status: int | None, error: str | None, started: datetime) -> None:  # fmt: skip
        if not ok:
            log.warning("notification to %s (%s) failed after %d attempt(s): %s",
                        route.name, route.type, attempts, error)  # fmt: skip
        record_delivery(self.store, DeliveryRecord(
            uuid.uuid4().hex, route.name, route.type, notification.group_key, notification.status,
            len(notification.alerts), ok, attempts, status, error, started, datetime.now(UTC),
        ))  # fmt: skip

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued delivery finished (True) or ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                futures = [f for f in self._futures if not f.done()]
            if not futures:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                futures[0].exception(timeout=remaining)
            except TimeoutError:
                return False

    def close(self) -> None:
        """Stop the lanes: queued deliveries are dropped, one in progress gives up at
        its next attempt (recorded as cancelled) before this returns."""
        self._closing.set()
        with self._lock:
            lanes = list(self._lanes.values())
            self._lanes.clear()
        for lane in lanes:
            lane.shutdown(wait=True, cancel_futures=True)
