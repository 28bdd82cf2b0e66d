"""Error budgets and burn rates for SLOs.

For an SLO with objective ``o`` over period ``P``:

* **SLI** = good / valid events over ``P`` (ending now).
* **Error budget** = ``1 − o`` of the valid events may be bad. ``budget_remaining`` =
  ``1 − (bad / valid) / (1 − o)``: 1.0 untouched, 0 spent, negative overspent.
* **Burn rate** over a window ``w`` = ``(bad_w / valid_w) / (1 − o)``: 1.0 spends the
  budget exactly over the period; 14.4 spends 2% of a 30-day budget in one hour.
  Reported for 5m, 30m, 1h, 6h and 3d.

Alerting follows the multiwindow, multi-burn-rate rules of the Google SRE workbook; a
rule fires when both its long and its short window burn faster than its threshold:

========  ======  =====  ====================  =====================================
rule      long    short  budget spent in long  action
========  ======  =====  ====================  =====================================
fast      1h      5m     2%                    **freeze experiments** (page)
medium    6h      30m    5%                    **freeze experiments** (page)
slow      3d      6h     10%                   warning (ticket)
========  ======  =====  ====================  =====================================

The threshold is ``share × P / long`` (14.4, 6 and 1 for a 30-day period). An
exhausted budget also freezes experiments: spend the rest of the period on eval cases
and fixes, not on new prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from goldenloop.metrics.compute import aggregate_columns, features_for, number
from goldenloop.metrics.facts import ensure_turn_facts
from goldenloop.metrics.relations import RelationSpec, build_relation
from goldenloop.metrics.signals import SignalConfig, SqlEnv
from goldenloop.metrics.slo import SLO
from goldenloop.metrics.windows import TimeWindow, aware, naive
from goldenloop.store.base import Store

BURN_WINDOWS: tuple[tuple[str, timedelta], ...] = (
    ("5m", timedelta(minutes=5)),
    ("30m", timedelta(minutes=30)),
    ("1h", timedelta(hours=1)),
    ("6h", timedelta(hours=6)),
    ("3d", timedelta(days=3)),
)
Status = Literal["ok", "warning", "freeze", "exhausted", "no_data"]


@dataclass(frozen=True)
class BurnRule:
    name: str
    long: str
    short: str
    budget_share: float
    freeze: bool

    def threshold(self, period: timedelta) -> float:
        long = dict(BURN_WINDOWS)[self.long]
        return self.budget_share * (period / long)


BURN_RULES: tuple[BurnRule, ...] = (
    BurnRule("fast", "1h", "5m", 0.02, True),
    BurnRule("medium", "6h", "30m", 0.05, True),
    BurnRule("slow", "3d", "6h", 0.10, False),
)


@dataclass
class SloStatus:
    slo: SLO
    evaluated_at: datetime
    good: float
    valid: float
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)

    @property
    def sli(self) -> float | None:
        return self.good / self.valid if self.valid else None

    @property
    def bad(self) -> float:
        return self.valid - self.good

    @property
    def budget_remaining(self) -> float | None:
        if not self.valid:
            return None
        return 1.0 - (self.bad / self.valid) / self.slo.error_budget

    @property
    def burn_rates(self) -> dict[str, float | None]:
        rates: dict[str, float | None] = {}
        for name, (good, valid) in self.windows.items():
            rates[name] = ((valid - good) / valid) / self.slo.error_budget if valid else None
        return rates

    @property
    def status(self) -> Status:
        if not self.valid:
            return "no_data"
        if any(r.freeze for r in BURN_RULES if r.name in self.alerts):
            return "freeze"
        remaining = self.budget_remaining
        if remaining is not None and remaining <= 0:
            return "exhausted"
        return "warning" if self.alerts else "ok"

    @property
    def freeze_experiments(self) -> bool:
        return self.status in ("freeze", "exhausted")

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.slo.to_dict(),
            "evaluated_at": self.evaluated_at.isoformat(),
            "sli": self.sli,
            "good_events": self.good,
            "valid_events": self.valid,
            "error_budget": self.slo.error_budget,
            "budget_remaining": self.budget_remaining,
            "burn_rates": self.burn_rates,
            "burn_thresholds": {r.name: r.threshold(self.slo.period) for r in BURN_RULES},
            "alerts": list(self.alerts),
            "status": self.status,
            "freeze_experiments": self.freeze_experiments,
        }


def _fired(rates: dict[str, float | None], period: timedelta) -> list[str]:
    fired = []
    for rule in BURN_RULES:
        long, short = rates.get(rule.long), rates.get(rule.short)
        limit = rule.threshold(period)
        if long is not None and short is not None and long >= limit and short >= limit:
            fired.append(rule.name)
    return fired


def evaluate_slo(
    store: Store, slo: SLO, *, now: datetime | None = None, signals: SignalConfig | None = None,
    facts: bool | None = None,
) -> SloStatus:  # fmt: skip
    """Good and valid events over the period and every burn window, in one query."""
    signals = signals or SignalConfig()
    env = SqlEnv(store.dialect, signals)
    if facts is None:
        facts = ensure_turn_facts(store, env)
    end = aware(now) if now is not None else datetime.now(UTC)
    windows = [("period", slo.period), *BURN_WINDOWS]
    span = max(length for _, length in windows)
    metric = slo.sli.good_metric(signals.judge_threshold)
    relation = build_relation(
        metric.source,
        RelationSpec(
            env,
            TimeWindow(end - span, end),
            (),
            slo.sli.filters,
            features_for([metric]),
            facts=facts,
        ),  # fmt: skip
    )
    columns = []
    for i, (_, length) in enumerate(windows):
        since = naive(end - length).isoformat(sep=" ")
        bounded = replace(metric, where=f"({metric.where}) AND ts >= TIMESTAMP '{since}'")
        columns += aggregate_columns(bounded, env, f"w{i}")
    row = store.fetch(f"SELECT {', '.join(columns)} FROM ({relation.sql}) r", relation.params)[0]
    counts = [
        (number(row[2 * i]) or 0.0, number(row[2 * i + 1]) or 0.0) for i in range(len(windows))
    ]
    status = SloStatus(slo, end, counts[0][0], counts[0][1])
    status.windows = {name: counts[i + 1] for i, (name, _) in enumerate(BURN_WINDOWS)}
    status.alerts = _fired(status.burn_rates, slo.period)
    return status


def evaluate_slos(
    store: Store, slos: Sequence[SLO], *, now: datetime | None = None,
    signals: SignalConfig | None = None,
) -> list[SloStatus]:  # fmt: skip
    moment = aware(now) if now is not None else datetime.now(UTC)
    facts = (
        ensure_turn_facts(store, SqlEnv(store.dialect, signals or SignalConfig()))
        if slos
        else False
    )
    return [evaluate_slo(store, slo, now=moment, signals=signals, facts=facts) for slo in slos]
