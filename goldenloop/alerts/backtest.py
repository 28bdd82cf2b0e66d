"""Dry-running a rule against history: when would it have fired?

The rule loads what every evaluation in the range needs once (for metric rules: one
per-minute series query covering ``[since − lookback, until)``), then the evaluator's
state machine (``evaluator.advance``) runs at every ``step`` in memory. Nothing is
written and nobody is notified. The result lists each episode (pending, fired,
resolved) with the numbers that tripped it, and pages per week for comparing rules.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from goldenloop.alerts.evaluator import advance
from goldenloop.alerts.model import Alert, Numbers, floor_minute, iso
from goldenloop.alerts.rules import AlertRule, RuleContext
from goldenloop.metrics.facts import ensure_turn_facts
from goldenloop.metrics.signals import SignalConfig, SqlEnv
from goldenloop.metrics.slo import SLO
from goldenloop.metrics.windows import TimeWindow, format_duration
from goldenloop.store.base import Store

WEEK = timedelta(days=7)
#: A backtest replays at most this many evaluations (a month at one per minute).
MAX_EVALUATIONS = 50_000


@dataclass
class Episode:
    labels: dict[str, str]
    severity: str
    pending_at: datetime
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    summary: str = ""
    numbers_at_fire: Numbers = field(default_factory=dict)
    peak_value: float | None = None

    @property
    def fired(self) -> bool:
        return self.fired_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "severity": self.severity,
            "pending_at": iso(self.pending_at),
            "fired_at": iso(self.fired_at),
            "resolved_at": iso(self.resolved_at),
            "duration": format_duration(self.resolved_at - self.fired_at)
            if self.fired_at and self.resolved_at else None,
            "summary": self.summary,
            "numbers_at_fire": self.numbers_at_fire,
            "peak_value": self.peak_value,
        }  # fmt: skip


@dataclass
class BacktestResult:
    rule: AlertRule
    window: TimeWindow
    step: timedelta
    evaluations: int
    episodes: list[Episode]
    load_ms: float
    evaluate_ms: float

    @property
    def fired(self) -> list[Episode]:
        return [e for e in self.episodes if e.fired]

    @property
    def pages(self) -> list[Episode]:
        return [e for e in self.fired if e.severity == "page"]

    @property
    def weeks(self) -> float:
        return self.window.length / WEEK

    @property
    def pages_per_week(self) -> float:
        return len(self.pages) / self.weeks if self.weeks else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.to_dict(),
            "since": iso(self.window.start),
            "until": iso(self.window.end),
            "step": format_duration(self.step),
            "evaluations": self.evaluations,
            "fired": len(self.fired),
            "pages": len(self.pages),
            "tickets": len(self.fired) - len(self.pages),
            "pending_only": len(self.episodes) - len(self.fired),
            "pages_per_week": round(self.pages_per_week, 3),
            "load_ms": round(self.load_ms, 1),
            "evaluate_ms": round(self.evaluate_ms, 1),
            "episodes": [e.to_dict() for e in self.episodes],
        }


def backtest(
    store: Store, rule: AlertRule, since: datetime, until: datetime, *,
    step: timedelta = timedelta(minutes=1), signals: SignalConfig | None = None,
    slos: dict[str, SLO] | None = None,
) -> BacktestResult:  # fmt: skip
    """Replay ``rule`` at every ``step`` in ``[since, until)``."""
    if step < timedelta(minutes=1) or step % timedelta(minutes=1):
        raise ValueError("step: use whole minutes (1m or more)")
    start, end = floor_minute(since), floor_minute(until)
    if end <= start:
        raise ValueError("since: must be before until")
    if (end - start) / step > MAX_EVALUATIONS:
        raise ValueError(
            f"since: {format_duration(end - start)} at {format_duration(step)} steps is more than "
            f"{MAX_EVALUATIONS} evaluations; shorten the range or use a longer step"
        )
    window = TimeWindow(start, end)
    started = time.perf_counter()
    env = SqlEnv(store.dialect, signals or SignalConfig())
    ctx = RuleContext(store, env, slos or {}, ensure_turn_facts(store, env), None)
    timeline = rule.impl.load(ctx, window)
    loaded = time.perf_counter()
    counter = itertools.count(1)
    state: dict[str, Alert] = {}
    episodes: dict[str, Episode] = {}
    evaluations = 0
    at = start
    while at < end:
        samples = timeline.evaluate(at)
        state, transitions = advance(rule, state, samples, at, new_id=lambda: str(next(counter)))
        evaluations += 1
        for t in transitions:
            alert = t.alert
            if t.to_status == "pending":
                episodes[alert.id] = Episode(
                    dict(alert.labels), alert.severity, at, summary=alert.summary
                )
            episode = episodes.get(alert.id)
            if episode is None:
                continue
            if t.to_status == "firing":
                episode.fired_at, episode.summary = at, alert.summary
                episode.numbers_at_fire = dict(alert.details.numbers_at_fire)
            elif t.to_status == "resolved":
                episode.resolved_at = at
        for alert in state.values():
            episode = episodes[alert.id]
            if alert.value is not None and (
                episode.peak_value is None or alert.value > episode.peak_value
            ):
                episode.peak_value = alert.value
        at += step
    done = time.perf_counter()
    ordered = sorted(episodes.values(), key=lambda e: (e.pending_at, sorted(e.labels.items())))
    return BacktestResult(rule, window, step, evaluations, ordered,
                          (loaded - started) * 1000, (done - loaded) * 1000)  # fmt: skip
