"""Evaluating rules: samples → alert states, pending → firing → resolved, with history.

``advance`` is the state machine, shared by the evaluator and the backtest:

* an active sample with no alert starts one as **pending** (``active_at`` = now);
* a pending alert whose condition has held for the rule's ``for`` becomes **firing**
  (at once when ``for`` is 0), keeping the numbers that tripped it;
* a pending alert whose condition clears is dropped (it never fired);
* a firing alert whose condition clears is **resolved**; if it trips again later a new
  episode starts.

``Evaluator.evaluate(at)`` loads every enabled rule's timeline (series through a cache
kept between ticks), advances the stored states, enriches alerts that start firing
with an exemplar and the affected slice, and writes states and history in one
transaction. A rule that fails is reported and its alerts are left as they were.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from goldenloop.alerts.enrich import enrich_alert
from goldenloop.alerts.model import Alert, AlertDetails, Sample, fingerprint, floor_minute
from goldenloop.alerts.rules import AlertRule, RuleContext
from goldenloop.alerts.series import MINUTE, SeriesCache
from goldenloop.alerts.states import (
    Statements,
    delete_alert,
    history_row,
    load_alerts,
    run_statements,
    upsert_alert,
)
from goldenloop.metrics.facts import ensure_turn_facts
from goldenloop.metrics.signals import SignalConfig, SqlEnv
from goldenloop.metrics.slo import SLO
from goldenloop.metrics.windows import TimeWindow
from goldenloop.store.base import Store

log = logging.getLogger("goldenloop.alerts")
MICRO = timedelta(microseconds=1)


@dataclass
class Transition:
    alert: Alert
    from_status: str
    to_status: str
    at: datetime
    sample: Sample | None = None


def alert_labels(rule: AlertRule, sample: Sample) -> dict[str, str]:
    return {
        "alertname": rule.name,
        "severity": sample.severity or rule.severity,
        **rule.labels,
        **sample.labels,
    }


def advance(
    rule: AlertRule,
    current: dict[str, Alert],
    samples: Sequence[Sample],
    at: datetime,
    *,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> tuple[dict[str, Alert], list[Transition]]:
    """Next states of one rule's pending/firing alerts (by fingerprint) at ``at``."""
    active: dict[str, tuple[dict[str, str], Sample]] = {}
    for sample in samples:
        if sample.active:
            labels = alert_labels(rule, sample)
            active[fingerprint(labels)] = (labels, sample)
    following: dict[str, Alert] = {}
    transitions: list[Transition] = []
    for fp, (labels, sample) in active.items():
        alert = current.get(fp)
        if alert is None:
            alert = Alert(
                id=new_id(), rule=rule.name, fingerprint=fp, labels=labels,
                severity="page" if labels["severity"] == "page" else "ticket", status="pending",
                active_at=at, last_eval_at=at,
                details=AlertDetails(rule_type=rule.type, annotations=dict(rule.annotations),
                                     slice=dict(sample.scope), exemplar=sample.exemplar),
            )  # fmt: skip
            transitions.append(Transition(alert, "inactive", "pending", at, sample))
        alert.last_eval_at, alert.value = at, sample.value
        alert.summary, alert.numbers = sample.summary, dict(sample.numbers)
        alert.details.last_active_at = at
        if alert.status == "pending" and at - alert.active_at >= rule.hold:
            alert.status, alert.fired_at = "firing", at
            alert.details.numbers_at_fire = dict(sample.numbers)
            alert.details.summary_at_fire = sample.summary
            if sample.exemplar is not None:
                alert.details.exemplar = sample.exemplar
            transitions.append(Transition(alert, "pending", "firing", at, sample))
        following[fp] = alert
    for fp, alert in current.items():
        if fp in active:
            continue
        alert.last_eval_at = at
        if alert.status == "pending":
            transitions.append(Transition(alert, "pending", "inactive", at))
        elif alert.status == "firing":
            held = alert.details.last_active_at or alert.last_eval_at
            if rule.keep_firing_for and at - held < rule.keep_firing_for:
                following[fp] = alert  # keep_firing_for: stays firing a while after clearing
                continue
            alert.status, alert.resolved_at = "resolved", at
            transitions.append(Transition(alert, "firing", "resolved", at))
    return following, transitions


@dataclass
class RuleOutcome:
    rule: str
    samples: int = 0
    active: int = 0
    error: str | None = None
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "samples": self.samples, "active": self.active,
                "error": self.error, "duration_ms": round(self.duration_ms, 2)}  # fmt: skip


@dataclass
class EvaluationReport:
    at: datetime
    outcomes: list[RuleOutcome] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    pending: int = 0
    firing: int = 0

    @property
    def errors(self) -> dict[str, str]:
        return {o.rule: o.error for o in self.outcomes if o.error}

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "rules": [o.to_dict() for o in self.outcomes],
            "transitions": [
                {
                    "rule": t.alert.rule,
                    "labels": t.alert.labels,
                    "from": t.from_status,
                    "to": t.to_status,
                    "value": t.alert.value,
                    "summary": t.alert.summary,
                }
                for t in self.transitions
            ],  # fmt: skip
            "pending": self.pending,
            "firing": self.firing,
            "errors": self.errors,
        }


class Evaluator:
    """Evaluates rules against a store and keeps their states there."""

    def __init__(self, store: Store, *, cache: SeriesCache | None = None) -> None:
        self.store = store
        self.cache = cache if cache is not None else SeriesCache()

    def context(self, signals: SignalConfig, slos: dict[str, SLO]) -> RuleContext:
        env = SqlEnv(self.store.dialect, signals)
        facts = ensure_turn_facts(self.store, env)
        return RuleContext(self.store, env, slos, facts, self.cache)

    def evaluate(
        self, rules: Sequence[AlertRule], at: datetime, *, signals: SignalConfig | None = None,
        slos: dict[str, SLO] | None = None, dry_run: bool = False,
    ) -> EvaluationReport:  # fmt: skip
        at = floor_minute(at)
        now = datetime.now(UTC)
        report = EvaluationReport(at)
        ctx = self.context(signals or SignalConfig(), slos or {})
        self.cache.start_tick()
        stored = load_alerts(self.store)
        by_rule: dict[str, dict[str, Alert]] = {}
        for alert in stored:
            by_rule.setdefault(alert.rule, {})[alert.fingerprint] = alert
        statements: Statements = []
        names = {r.name for r in rules if r.enabled}
        for rule in rules:
            if not rule.enabled:
                continue
            outcome = RuleOutcome(rule.name)
            report.outcomes.append(outcome)
            started = time.perf_counter()
            try:
                timeline = rule.impl.load(ctx, TimeWindow(at - MINUTE, at))
                samples = timeline.evaluate(at)
            except Exception as exc:  # one broken rule must not stop the others
                outcome.error = f"{type(exc).__name__}: {exc}"
                log.warning("alert rule %s failed: %s", rule.name, outcome.error)
                continue
            finally:
                outcome.duration_ms = (time.perf_counter() - started) * 1000
            outcome.samples, outcome.active = len(samples), sum(s.active for s in samples)
            current = by_rule.pop(rule.name, {})
            following, transitions = advance(rule, current, samples, at)
            self._enrich(ctx, transitions)
            statements += self._statements(following, transitions, now)
            report.transitions += transitions
        # Alerts of rules that were removed or disabled resolve (or drop when pending).
        for rule_name, leftovers in by_rule.items():
            if rule_name in names:
                continue  # the rule failed this tick: keep its alerts as they are
            for alert in leftovers.values():
                if alert.status == "firing":
                    alert.status, alert.resolved_at = "resolved", at
                    transition = Transition(alert, "firing", "resolved", at)
                else:
                    transition = Transition(alert, "pending", "inactive", at)
                report.transitions.append(transition)
                statements += self._statements({}, [transition], now)
        if not dry_run:
            run_statements(self.store, statements)
        live = load_alerts(self.store) if not dry_run else []
        report.pending = sum(a.status == "pending" for a in live)
        report.firing = sum(a.status == "firing" for a in live)
        self.cache.forget_unused()
        return report

    def _enrich(self, ctx: RuleContext, transitions: list[Transition]) -> None:
        for t in transitions:
            if t.to_status == "firing" and t.sample is not None:
                enrich_alert(ctx, t.alert, t.sample)

    @staticmethod
    def _statements(
        following: dict[str, Alert], transitions: list[Transition], now: datetime
    ) -> Statements:
        statements: Statements = []
        for i, t in enumerate(transitions):
            if t.to_status == "inactive":
                statements.append(delete_alert(t.alert.id))
            elif t.to_status == "resolved":
                statements.append(upsert_alert(t.alert, now))
            # Transitions of one tick share a time: a microsecond apart keeps their order.
            statements.append(
                history_row(t.alert, t.from_status, t.to_status, t.at, now + i * MICRO)
            )
        for alert in following.values():
            statements.append(upsert_alert(alert, now))
        return statements
