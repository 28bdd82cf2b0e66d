"""Running the alerts: a background scheduler inside ``goldenloop serve`` and one-shot
checks for cron (``goldenloop alerts check``).

``AlertEngine.tick(now)`` is one evaluation: load the configuration, take the evaluator
lease (so several servers sharing a PostgreSQL evaluate once), evaluate the rules,
dispatch notifications (off the evaluator's path, see ``delivery``) and record the tick
in ``alert_ticks``. ``AlertScheduler`` calls it every ``evaluation_interval`` (1m) and,
between evaluations, flushes alert groups every ``dispatch_every`` so ``group_wait``
is honoured. Nothing a tick does can stop the thread or the server: errors are logged,
recorded with the tick, and shown on the alerts page.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from goldenloop.alerts.delivery import Deliveries, prune_deliveries
from goldenloop.alerts.evaluator import EvaluationReport, Evaluator
from goldenloop.alerts.grouping import Dispatcher, DispatchReport
from goldenloop.alerts.runtime import (
    AlertsRuntime,
    TickRecord,
    acquire_lease,
    load_runtime,
    new_tick_id,
    prune_ticks,
    record_tick,
    release_lease,
)
from goldenloop.alerts.states import prune
from goldenloop.config import Settings
from goldenloop.store.base import Store

log = logging.getLogger("goldenloop.alerts")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class TickReport:
    at: datetime
    source: str
    evaluation: EvaluationReport | None = None
    dispatch: DispatchReport | None = None
    errors: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "source": self.source,
            "skipped": self.skipped,
            "duration_ms": round(self.duration_ms, 1),
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
            "dispatch": self.dispatch.to_dict() if self.dispatch else None,
            "errors": self.errors,
        }


class AlertEngine:
    """One store, one configuration source, one set of delivery lanes."""

    def __init__(
        self, store: Store, *, base_url: str, alerts_file: str | None = None,
        slo_file: str | None = None, deliveries: Deliveries | None = None, source: str = "server",
        holder: str | None = None, runtime: Callable[[], AlertsRuntime] | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.base_url = base_url
        self.source = source
        self.deliveries = deliveries or Deliveries(store)
        self.evaluator = Evaluator(store)
        self.dispatcher = Dispatcher(store, self.deliveries, base_url=base_url)
        self.holder = holder or f"{source}:{socket.gethostname()}:{os.getpid()}"
        self._runtime = runtime or (
            lambda: load_runtime(store, alerts_file=alerts_file, slo_file=slo_file)
        )
        self.last_runtime: AlertsRuntime | None = None
        self._pruned_at: datetime | None = None
        self._leased = False

    def runtime(self) -> AlertsRuntime:
        self.last_runtime = self._runtime()
        return self.last_runtime

    def tick(self, now: datetime, *, dry_run: bool = False, force: bool = False) -> TickReport:
        started = time.perf_counter()
        report = TickReport(now, self.source)
        try:
            runtime = self.runtime()
        except Exception as exc:  # a broken config must be visible, not fatal
            report.errors["config"] = f"{type(exc).__name__}: {exc}"
            return self._finish(report, started, record=True)
        report.errors.update({f"rule {k}": v for k, v in runtime.rules.invalid.items()})
        if runtime.idle and not report.errors:
            report.skipped = "no rules or notifiers configured"
            return self._finish(report, started, record=False)
        interval = runtime.config.evaluation_interval
        if not dry_run:
            # The lease runs on the wall clock even when evaluating another time (--at).
            holder = acquire_lease(self.store, self.holder, utc_now(), 3 * interval)
            self._leased = True
            if holder != self.holder and not force:
                report.skipped = f"another process ({holder}) is evaluating the alerts"
                return self._finish(report, started, record=False)
        try:
            report.evaluation = self.evaluator.evaluate(
                runtime.rules.rules,
                now,
                signals=runtime.signals,
                slos=runtime.slos,
                dry_run=dry_run,
            )
            report.errors.update({f"rule {k}": v for k, v in report.evaluation.errors.items()})
            if not dry_run and runtime.config.routes:
                report.dispatch = self.dispatcher.dispatch(runtime.config.routes, now)
            if not dry_run:
                self._housekeeping(now)
        except Exception as exc:
            report.errors["evaluator"] = f"{type(exc).__name__}: {exc}"
            log.exception("alert evaluation failed")
        return self._finish(report, started, record=not dry_run)

    def dispatch_only(self, now: datetime) -> DispatchReport | None:
        """Flush due alert groups without evaluating (between evaluations)."""
        runtime = self.last_runtime
        if runtime is None or not runtime.config.routes:
            return None
        holder = acquire_lease(
            self.store, self.holder, utc_now(), 3 * runtime.config.evaluation_interval
        )
        if holder != self.holder:
            return None
        return self.dispatcher.dispatch(runtime.config.routes, now)

    def release(self) -> None:
        if self._leased:
            release_lease(self.store, self.holder, utc_now())
            self._leased = False

    def _housekeeping(self, now: datetime) -> None:
        if self._pruned_at is not None and now - self._pruned_at < timedelta(hours=1):
            return
        self._pruned_at = now
        prune(self.store, now)
        prune_ticks(self.store, now)
        prune_deliveries(self.store, now)

    def _finish(self, report: TickReport, started: float, *, record: bool) -> TickReport:
        report.duration_ms = (time.perf_counter() - started) * 1000
        if report.errors:
            log.warning("alert tick at %s: %s", report.at.isoformat(), report.errors)
        if record:
            evaluation = report.evaluation
            try:
                record_tick(self.store, TickRecord(
                    new_tick_id(), self.source, report.at, datetime.now(UTC), report.duration_ms,
                    len(evaluation.outcomes) if evaluation else 0,
                    evaluation.pending if evaluation else 0, evaluation.firing if evaluation else 0,
                    len(report.dispatch.queued) if report.dispatch else 0, report.errors,
                ))  # fmt: skip
            except Exception:
                log.exception("could not record the alert tick")
        return report


class AlertScheduler:
    """The background evaluator of ``goldenloop serve``."""

    def __init__(
        self, engine: AlertEngine, *, clock: Clock = utc_now, initial_delay_s: float = 5.0,
        dispatch_every_s: float = 10.0,
    ) -> None:  # fmt: skip
        self.engine = engine
        self.clock = clock
        self.initial_delay_s = initial_delay_s
        self.dispatch_every_s = dispatch_every_s
        self.last_tick: TickReport | None = None
        self.last_error: str | None = None
        self.ticks = 0
        self.started_at: datetime | None = None
        self._stop = threading.Event()
        self._tick_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="goldenloop-alerts", daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _interval_s(self) -> float:
        runtime = self.engine.last_runtime
        interval = runtime.config.evaluation_interval if runtime else timedelta(minutes=1)
        return interval.total_seconds()

    def run_once(self) -> TickReport:
        """One evaluation now (the API's on-demand check calls this too)."""
        with self._tick_lock:
            report = self.engine.tick(self.clock())
        self.last_tick, self.ticks = report, self.ticks + 1
        self.last_error = "; ".join(f"{k}: {v}" for k, v in report.errors.items()) or None
        return report

    def _main(self) -> None:
        if self._stop.wait(self.initial_delay_s):
            return
        next_eval = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_eval:
                    next_eval = time.monotonic() + self._interval_s()
                    self.run_once()
                else:
                    with self._tick_lock:
                        self.engine.dispatch_only(self.clock())
            except Exception as exc:  # the server must outlive any alerting failure
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("alert scheduler tick failed")
            wait = min(self.dispatch_every_s, max(0.0, next_eval - time.monotonic()))
            self._stop.wait(max(wait, 0.05))

    def start(self) -> AlertScheduler:
        self.started_at = self.clock()
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        try:
            self.engine.deliveries.wait(timeout)
            self.engine.deliveries.close()
            self.engine.release()
        except Exception:
            log.exception("stopping the alert scheduler")

    def status(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ticks": self.ticks,
            "interval_seconds": self._interval_s(),
            "last_tick": self.last_tick.to_dict() if self.last_tick else None,
            "last_error": self.last_error,
            "notifications_sent": self.engine.deliveries.sent,
            "notifications_failed": self.engine.deliveries.failed,
        }


def start_alert_scheduler(settings: Settings, store: Store) -> AlertScheduler | None:
    """For the server's lifespan: never raises (a failure to start is logged and the
    server runs without alert evaluation)."""
    try:
        engine = AlertEngine(
            store, base_url=settings.base_url, slo_file=settings.slo_file or None,
            # The alerts file setting is read when the settings table has one.
            alerts_file=getattr(settings, "alerts_file", "") or None,
        )  # fmt: skip
        return AlertScheduler(engine).start()
    except Exception:
        log.exception(
            "could not start the alert scheduler; alerts will only run via `goldenloop alerts check`"
        )
        return None


def stop_alert_scheduler(scheduler: AlertScheduler | None) -> None:
    if scheduler is None:
        return
    try:
        scheduler.stop()
    except Exception:
        log.exception("stopping the alert scheduler failed")
