"""Run the flag rules continuously inside ``goldenloop serve``.

``start_flagging_loop(store, interval_s)`` starts a daemon thread that, every
``interval_s`` seconds, runs the saved rule configuration incrementally and, once a
day at the configured UTC hour (and right away when the queue was never refreshed),
refreshes the triage queue. Every error is logged; nothing escapes the thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from goldenloop.flags._sql import utcnow
from goldenloop.flags.cohort_rules import refresh_baselines
from goldenloop.flags.config import ConfigError, FlagConfig, default_config, saved_config
from goldenloop.flags.engine import FlagRun, run_incremental
from goldenloop.flags.feedback import QueueRefresh, last_refresh_at, refresh_queue
from goldenloop.store.base import Store

log = logging.getLogger("goldenloop.flags")


def next_refresh_after(last: datetime | None, hour: int) -> datetime | None:
    """When the nightly refresh is next due (None: due now, it never ran)."""
    if last is None:
        return None
    slot = last.replace(hour=hour, minute=0, second=0, microsecond=0)
    return slot if slot > last else slot + timedelta(days=1)


class FlaggingLoop:
    def __init__(
        self,
        store: Store,
        interval_s: float,
        *,
        initial_delay_s: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.store = store
        self.interval_s = interval_s
        self.initial_delay_s = initial_delay_s
        self.clock = clock
        self.last_run: FlagRun | None = None
        self.last_refresh: QueueRefresh | None = None
        self.last_error: str | None = None
        self.runs = 0
        self._config: FlagConfig | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="goldenloop-flags", daemon=True)

    def _load_config(self) -> FlagConfig:
        try:
            self._config = saved_config(self.store)
        except ConfigError as exc:
            log.error("saved flag rule config is invalid, keeping the previous one: %s", exc)
        return self._config or default_config()

    def run_once(self) -> None:
        """One tick: incremental flagging, then the queue refresh when it is due."""
        config = self._load_config()
        now = self.clock()
        self.last_run = run_incremental(self.store, config.rules, now=now)
        refresh_baselines(self.store, config.rules, now)
        due = next_refresh_after(last_refresh_at(self.store), config.queue.refresh_hour)
        if due is None or now >= due:
            self.last_refresh = refresh_queue(
                self.store, config.queue, now=now, notify=config.notify
            )
        self.runs += 1

    def _main(self) -> None:
        delay = self.initial_delay_s
        while not self._stop.wait(delay):
            delay = self.interval_s
            try:
                self.run_once()
                self.last_error = None
            except Exception as exc:  # the server must outlive any flagging failure
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("flagging loop run failed")

    def start(self) -> FlaggingLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def start_flagging_loop(
    store: Store, interval_s: float = 60.0, *, initial_delay_s: float = 5.0
) -> FlaggingLoop:
    """Start flagging new data every ``interval_s`` seconds in a background thread."""
    return FlaggingLoop(store, interval_s, initial_delay_s=initial_delay_s).start()


def start_flagging_loop_safely(
    store: Store, interval_s: float = 60.0, *, initial_delay_s: float = 10.0
) -> FlaggingLoop | None:
    """``start_flagging_loop`` for the server's lifespan: any failure to start is logged
    and the server runs on without continuous flagging."""
    try:
        return start_flagging_loop(store, interval_s, initial_delay_s=initial_delay_s)
    except Exception:
        log.exception("could not start the flagging loop; flags will only run on demand")
        return None
