"""Live shadowing inside the app: call a candidate on a share of real requests, in the
background, until a hard stop time, without ever touching the user's answer.

::

    from datetime import timedelta
    from goldenloop.evals.live_shadow import LiveShadow

    shadow = LiveShadow(new_answer, percent=5, until=timedelta(hours=48),
                        on_result=lambda o: log.info("shadow %s", o.to_dict()))

    def handle(question):
        return shadow.call(current_answer, question)   # always current_answer's result

The primary function runs exactly as before, in the caller's thread, and its result
(or exception) is what the caller gets. Only afterwards, and only for the sampled
share, the candidate is queued on a small background pool with the same arguments.
When the queue is full the call is dropped (counted in ``stats``), so a slow candidate
can never slow the app down; after ``until`` (or ``max_calls``) nothing is shadowed
any more, so shadowing cannot double spend indefinitely.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("goldenloop.shadow")


@dataclass(frozen=True)
class ShadowOutcome:
    primary_result: Any
    candidate_result: Any
    candidate_error: str | None
    primary_latency_ms: float
    candidate_latency_ms: float
    key: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "primary_latency_ms": round(self.primary_latency_ms, 3),
            "candidate_latency_ms": round(self.candidate_latency_ms, 3),
            "candidate_error": self.candidate_error,
            "same_result": self.primary_result == self.candidate_result,
            "key": self.key,
        }


class LiveShadow:
    """Shadow ``candidate`` on ``percent`` % of calls until ``until`` (required)."""

    def __init__(
        self,
        candidate: Callable[..., Any],
        *,
        percent: float,
        until: datetime | timedelta,
        max_calls: int | None = None,
        on_result: Callable[[ShadowOutcome], None] | None = None,
        key: Callable[..., str] | None = None,
        max_workers: int = 2,
        max_pending: int = 64,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not 0 <= percent <= 100:
            raise ValueError("percent must be between 0 and 100")
        if max_workers < 1 or max_pending < 1:
            raise ValueError("max_workers and max_pending must be at least 1")
        self._clock = clock or (lambda: datetime.now(UTC))
        stop = self._clock() + until if isinstance(until, timedelta) else until
        if stop.tzinfo is None:
            raise ValueError("until must be timezone-aware (or a timedelta from now)")
        self.candidate = candidate
        self.percent = percent
        self.stop_at = stop
        self.max_calls = max_calls
        self.on_result = on_result
        self._key = key
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="shadow")
        self._slots = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()
        self._random = random.Random()
        self.stats = {"calls": 0, "shadowed": 0, "dropped": 0, "errors": 0, "completed": 0}

    @property
    def active(self) -> bool:
        """False once the stop time or the call cap is reached."""
        if self._clock() >= self.stop_at:
            return False
        return self.max_calls is None or self.stats["shadowed"] < self.max_calls

    def _sampled(self, key: str | None) -> bool:
        if key is not None:
            bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 10_000
            return bucket < self.percent * 100
        with self._lock:
            return self._random.random() * 100 < self.percent

    def call(self, primary: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``primary`` and return its result; maybe shadow the candidate afterwards."""
        start = time.perf_counter()
        result = primary(*args, **kwargs)
        elapsed = (time.perf_counter() - start) * 1000
        try:
            self._maybe_shadow(result, elapsed, args, kwargs)
        except Exception:  # shadowing must never affect the caller
            log.exception("live shadow: scheduling the candidate failed")
        return result

    def wrap(self, primary: Callable[P, R]) -> Callable[P, R]:
        """``primary`` with shadowing (a decorator)."""

        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.call(primary, *args, **kwargs)

        wrapper.__name__ = getattr(primary, "__name__", "shadowed")
        wrapper.__doc__ = primary.__doc__
        return wrapper

    def _maybe_shadow(
        self, result: Any, elapsed: float, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        with self._lock:
            self.stats["calls"] += 1
        if not self.active:
            return
        key = self._key(*args, **kwargs) if self._key else None
        if not self._sampled(key):
            return
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.stats["dropped"] += 1
            return
        with self._lock:
            if self.max_calls is not None and self.stats["shadowed"] >= self.max_calls:
                self._slots.release()
                return
            self.stats["shadowed"] += 1
        try:
            self._pool.submit(self._run_candidate, result, elapsed, key, args, kwargs)
        except RuntimeError:  # pool shut down
            self._slots.release()

    def _run_candidate(
        self, result: Any, elapsed: float, key: str | None, args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:  # fmt: skip
        try:
            start = time.perf_counter()
            error = None
            candidate_result = None
            try:
                candidate_result = self.candidate(*args, **kwargs)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.stats["errors"] += 1
            outcome = ShadowOutcome(result, candidate_result, error, elapsed,
                                    (time.perf_counter() - start) * 1000, key)  # fmt: skip
            if self.on_result is not None:
                try:
                    self.on_result(outcome)
                except Exception:
                    log.exception("live shadow: on_result failed")
            with self._lock:
                self.stats["completed"] += 1
        finally:
            self._slots.release()

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting work; with ``wait`` finish what is queued."""
        self.stop_at = min(self.stop_at, self._clock())
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
