"""Spend velocity, and rates that rise against a baseline.

``spend_velocity``
    Dollars per hour over ``window`` (default 1h) above a budget, per series of ``by``
    (default ``project``; add ``customer_tier`` for per-tier budgets). ``budgets``
    overrides the default ``usd_per_hour`` for series that match.

``breaker_spike``, ``injection_rise``, ``tool_error_wow``
    One rule class with three sets of defaults: the rate of a problem metric over
    ``window`` against a baseline, firing at ``factor`` × the baseline. Baselines:

    * ``same_hour``: the same window of the day over the previous ``days`` days (the
      trailing 7-day rate at the same hour) — circuit-breaker spikes;
    * ``week_ago``: the same window one week earlier — tool error rate doubling week
      over week;
    * a duration (``24h``): the period just before the window — injection attempts.

    Guards: ``min_events`` (denominator now), ``min_bad`` (problem events now),
    ``min_baseline_events`` and a ``floor`` under the baseline rate, so a rare event
    against a near-zero baseline does not fire.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from goldenloop.alerts.model import MetricEvidence, Numbers, Sample
from goldenloop.alerts.rules import RuleContext, RuleSpec, RuleType, register_rule_type
from goldenloop.alerts.series import MinuteSeries, SeriesQuery, SliceKey
from goldenloop.alerts.significance import rise_p_value
from goldenloop.alerts.slices import (
    fmt,
    fmt_rate,
    keys_or_all,
    scope_of,
    slice_filters,
    slice_labels,
)
from goldenloop.metrics.catalog import METRICS, MetricDef
from goldenloop.metrics.dimensions import Dimension, Filter
from goldenloop.metrics.windows import TimeWindow, format_duration

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


# -- spend velocity ----------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    match: tuple[tuple[str, str], ...]
    usd_per_hour: float

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(name) == value for name, value in self.match)


class SpendVelocityRule:
    def __init__(self, usd_per_hour: float | None, budgets: tuple[Budget, ...], window: timedelta,
                 by: tuple[Dimension, ...], filters: tuple[Filter, ...]) -> None:  # fmt: skip
        self.usd_per_hour, self.budgets, self.window = usd_per_hour, budgets, window
        self.by, self.filters = by, filters

    @classmethod
    def from_spec(cls, spec: RuleSpec) -> SpendVelocityRule:
        by = spec.dims("by", ("project",))
        default = spec.number("usd_per_hour", None)
        budgets = []
        raw = spec.raw("budgets") or []
        if not isinstance(raw, list):
            raise spec.error("budgets", "expected a list of {match: {DIM: VALUE}, usd_per_hour}")
        names = {d.name for d in by}
        for i, item in enumerate(raw):
            key = f"budgets[{i}]"
            if not isinstance(item, Mapping):
                raise spec.error(key, "expected a mapping with match and usd_per_hour")
            sub = spec.nested(key, item)
            match = sub.raw("match") or {}
            if not isinstance(match, Mapping) or not match:
                raise sub.error("match", "expected a mapping of dimension → value")
            for name in match:
                if str(name) not in names:
                    raise sub.error(
                        f"match.{name}",
                        f"not one of the rule's by dimensions ({', '.join(sorted(names))})",
                    )
            rate = sub.number("usd_per_hour", None)
            if rate is None:
                raise sub.error("usd_per_hour", "required (dollars per hour)")
            sub.finish()
            budgets.append(Budget(tuple((str(k), str(v)) for k, v in match.items()), rate))
        if default is None and not budgets:
            raise spec.error("usd_per_hour", "required: the budget in dollars per hour")
        window = spec.duration("window", "1h")
        assert window is not None
        return cls(default, tuple(budgets), window, by, spec.filters())

    def budget_for(self, labels: Mapping[str, str]) -> float | None:
        for budget in self.budgets:
            if budget.matches(labels):
                return budget.usd_per_hour
        return self.usd_per_hour

    def lookback(self) -> timedelta:
        return self.window

    def load(self, ctx: RuleContext, span: TimeWindow) -> SpendTimeline:
        metric = METRICS["cost_usd"]
        query = SeriesQuery(metric, self.by, self.filters)
        series = ctx.series(query, TimeWindow(span.start - self.window, span.end))
        return SpendTimeline(self, query.effective_metric, series)


class SpendTimeline:
    def __init__(self, rule: SpendVelocityRule, metric: MetricDef, series: MinuteSeries) -> None:
        self.rule, self.metric, self.series = rule, metric, series
        self._budgets = {
            key: rule.budget_for(slice_labels(rule.by, key))
            for key in keys_or_all(series.keys(), rule.by)
        }

    def evaluate(self, at: datetime) -> list[Sample]:
        rule, samples = self.rule, []
        hours = rule.window / timedelta(hours=1)
        for key, budget in self._budgets.items():
            if budget is None:
                continue
            spend, turns = self.series.sums(key, at - rule.window, at)
            velocity = spend / hours
            if velocity <= budget:  # the details are only worked out for active series
                samples.append(Sample({}, False, round(velocity, 6)))
                continue
            labels = slice_labels(rule.by, key)
            numbers: Numbers = {
                "usd_per_hour": round(velocity, 6), "budget_usd_per_hour": budget,
                "spend_usd": round(spend, 6), "turns": int(turns), "window_hours": hours,
            }  # fmt: skip
            where = ", ".join(f"{k}={v}" for k, v in labels.items()) or "all traffic"
            summary = (
                f"Spend {fmt(velocity, 'usd')}/h over the last {format_duration(rule.window)} "
                f"for {where} is above the budget of {fmt(budget, 'usd')}/h"
            )
            filters = (*rule.filters, *slice_filters(rule.by, key))
            evidence = MetricEvidence(
                self.metric, filters, TimeWindow(at - rule.window, at), "largest"
            )
            samples.append(Sample(labels, True, round(velocity, 6), numbers, summary,
                                  None, evidence, scope=scope_of(rule.filters, rule.by, key)))  # fmt: skip
        return samples


# -- rates against a baseline --------------------------------------------------------------
@dataclass(frozen=True)
class RateDefaults:
    metric: str
    window: str
    baseline: str
    factor: float
    min_events: int
    min_bad: int
    min_baseline_events: int
    floor: float
    #: Evaluated every minute, a rule runs ~170 independent hourly tests a week: paging
    #: rules need a stricter confidence than 95% to stay quiet on a clean week.
    confidence: float = 0.99
    by: tuple[str, ...] = ()


class RateChangeRule:
    def __init__(self, metric: str, window: timedelta, baseline: str | timedelta, days: int,
                 factor: float, min_events: int, min_bad: int, min_baseline_events: int,
                 floor: float, by: tuple[Dimension, ...], filters: tuple[Filter, ...],
                 confidence: float = 0.99) -> None:  # fmt: skip
        self.metric, self.window, self.baseline, self.days = metric, window, baseline, days
        self.confidence = confidence
        self.factor, self.min_events, self.min_bad = factor, min_events, min_bad
        self.min_baseline_events, self.floor, self.by, self.filters = (
            min_baseline_events,
            floor,
            by,
            filters,
        )

    @classmethod
    def factory(cls, defaults: RateDefaults) -> Callable[[RuleSpec], RateChangeRule]:
        def build(spec: RuleSpec) -> RateChangeRule:
            name = spec.text("metric", defaults.metric)
            assert name is not None
            metric = METRICS.get(name)
            if (
                metric is None
                or metric.higher_is_better is not False
                or metric.aggregation not in ("rate", "ratio")
            ):
                rising = sorted(m.name for m in METRICS.values()
                                if m.higher_is_better is False and m.aggregation in ("rate", "ratio"))  # fmt: skip
                raise spec.error(
                    "metric", f"{name!r} is not a problem rate; use one of {', '.join(rising)}"
                )
            window = spec.duration("window", defaults.window)
            assert window is not None
            raw = spec.raw("baseline")
            baseline: str | timedelta = defaults.baseline if raw is None else str(raw)
            if baseline not in ("same_hour", "week_ago"):
                baseline = spec.duration("baseline", str(baseline)) or window
            days = spec.integer("days", 7, minimum=1)
            factor = spec.number("factor", defaults.factor, above=1.0)
            floor = spec.number("floor", defaults.floor, above=None, minimum=0.0, maximum=1.0)
            confidence = spec.number("confidence", defaults.confidence, above=None, minimum=0.0,
                                     maximum=0.99999)  # fmt: skip
            assert factor is not None and floor is not None and confidence is not None
            return cls(name, window, baseline, days, factor,
                       spec.integer("min_events", defaults.min_events),
                       spec.integer("min_bad", defaults.min_bad),
                       spec.integer("min_baseline_events", defaults.min_baseline_events),
                       floor, spec.dims("by", defaults.by), spec.filters(), confidence)  # fmt: skip

        return build

    def baseline_windows(self, at: datetime) -> list[tuple[datetime, datetime]]:
        end = at - self.window
        if self.baseline == "same_hour":
            return [(at - d * DAY - self.window, at - d * DAY) for d in range(1, self.days + 1)]
        if self.baseline == "week_ago":
            return [(at - WEEK - self.window, at - WEEK)]
        assert isinstance(self.baseline, timedelta)
        return [(end - self.baseline, end)]

    def describe_baseline(self) -> str:
        if self.baseline == "same_hour":
            return f"the same {format_duration(self.window)} of the previous {self.days} days"
        if self.baseline == "week_ago":
            return "the same window a week earlier"
        assert isinstance(self.baseline, timedelta)
        return f"the {format_duration(self.baseline)} before"

    def lookback(self) -> timedelta:
        if self.baseline == "same_hour":
            return self.days * DAY + self.window
        if self.baseline == "week_ago":
            return WEEK + self.window
        assert isinstance(self.baseline, timedelta)
        return self.window + self.baseline

    def load(self, ctx: RuleContext, span: TimeWindow) -> RateChangeTimeline:
        query = SeriesQuery(METRICS[self.metric], self.by, self.filters)
        series = ctx.series(query, TimeWindow(span.start - self.lookback(), span.end))
        return RateChangeTimeline(self, query.effective_metric, series)


class RateChangeTimeline:
    def __init__(self, rule: RateChangeRule, metric: MetricDef, series: MinuteSeries) -> None:
        self.rule, self.metric, self.series = rule, metric, series

    def evaluate(self, at: datetime) -> list[Sample]:
        return [self._sample(key, at) for key in keys_or_all(self.series.keys(), self.rule.by)]

    def _sample(self, key: SliceKey, at: datetime) -> Sample:
        rule = self.rule
        bad, events = self.series.sums(key, at - rule.window, at)
        base_bad = base_events = 0.0
        for lo, hi in rule.baseline_windows(at):
            b, e = self.series.sums(key, lo, hi)
            base_bad, base_events = base_bad + b, base_events + e
        rate = bad / events if events else None
        base_rate = base_bad / base_events if base_events else None
        limit = rule.factor * max(base_rate or 0.0, rule.floor)
        active = (
            rate is not None and events >= rule.min_events and bad >= rule.min_bad
            and base_events >= rule.min_baseline_events and rate >= limit
        )  # fmt: skip
        p_value = rise_p_value(bad, events, base_bad, base_events) if active else None
        if p_value is not None and rule.confidence and p_value >= 1 - rule.confidence:
            active = False  # not distinguishable from the baseline's own noise
        if not active:  # the details are only worked out for active series
            return Sample({}, False, _r(rate))
        ratio = rate / base_rate if rate is not None and base_rate else None
        numbers: Numbers = {
            "rate": _r(rate), "baseline_rate": _r(base_rate), "ratio": _r(ratio, 3),
            "factor": rule.factor, "threshold_rate": _r(limit), "events": int(events),
            "bad_events": int(bad), "baseline_events": int(base_events),
            "baseline_bad_events": int(base_bad), "floor": rule.floor, "p_value": _r(p_value),
        }  # fmt: skip
        title = METRICS[rule.metric].title
        labels = slice_labels(rule.by, key)
        where = ", ".join(f"{k}={v}" for k, v in labels.items())
        summary = (
            f"{title}{' for ' + where if where else ''}: {fmt_rate(rate)} over the last "
            f"{format_duration(rule.window)} ({int(bad)} of {int(events)}) against "
            f"{fmt_rate(base_rate)} in {rule.describe_baseline()}"
            + (f" — {ratio:.1f}× the baseline" if ratio else "")
        )
        filters = (*rule.filters, *slice_filters(rule.by, key))
        evidence = MetricEvidence(
            self.metric, filters, TimeWindow(at - rule.window, at), "matching"
        )
        return Sample({"metric": rule.metric, **labels}, True, _r(rate), numbers, summary,
                      None, evidence, scope=scope_of(rule.filters, rule.by, key))  # fmt: skip


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


BREAKER = RateDefaults("circuit_breaker_rate", "1h", "same_hour", 3.0, 50, 5, 200, 0.002, 0.999)
INJECTION = RateDefaults("injection_attempt_rate", "1h", "24h", 3.0, 50, 5, 200, 0.005)
TOOL_ERRORS = RateDefaults("tool_error_rate", "6h", "week_ago", 2.0, 100, 10, 100, 0.01,
                           by=("tool_name",))  # fmt: skip

register_rule_type(RuleType(
    "spend_velocity", SpendVelocityRule.from_spec,
    "Dollars per hour over a window above a budget, per project (and tier).",
))  # fmt: skip
register_rule_type(RuleType(
    "breaker_spike", RateChangeRule.factory(BREAKER),
    "Circuit-breaker trip rate at 3× its trailing 7-day rate at the same hour.",
    severity="page",
))  # fmt: skip
register_rule_type(RuleType(
    "injection_rise", RateChangeRule.factory(INJECTION),
    "Injection-attempt rate at 3× the previous 24 hours.",
))  # fmt: skip
register_rule_type(RuleType(
    "tool_error_wow", RateChangeRule.factory(TOOL_ERRORS),
    "Tool error rate (per tool) doubled against the same window a week earlier.",
))  # fmt: skip
