"""SLO rules: multiwindow multi-burn-rate alerts, and success below the SLO held for a
while.

Burn-rate math (Google SRE Workbook, "Alerting on SLOs"): the **error budget** is
``1 − SLO``; the **burn rate** over a window is ``error rate ÷ (1 − SLO)`` (computed by
``goldenloop.metrics.burn.SloStatus``); burning at rate ``b`` for a window ``w`` spends
``b × w ÷ period`` of the period's budget. The defaults are the workbook's table, taken
from ``metrics.burn.BURN_RULES``:

==========  ======  =====  =========================  ========
budget      long    short  burn rate (30-day period)  severity
==========  ======  =====  =========================  ========
2%          1h      5m     14.4                       page
5%          6h      30m    6                          page
10%         3d      6h     1                          ticket
==========  ======  =====  =========================  ========

A window pair trips when both windows burn at least its rate and the long window holds
at least ``min_events`` valid events (so three failures at 3 a.m. never page).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from goldenloop.alerts.model import MetricEvidence, Numbers, Sample, Severity
from goldenloop.alerts.rules import (
    RuleContext,
    RuleEvaluationError,
    RuleSpec,
    RuleType,
    register_rule_type,
)
from goldenloop.alerts.series import MinuteSeries, SeriesQuery, SliceKey
from goldenloop.alerts.significance import below_objective_p_value
from goldenloop.alerts.slices import fmt_rate, keys_or_all, scope_of, slice_filters, slice_labels
from goldenloop.metrics.burn import BURN_RULES, BURN_WINDOWS, SloStatus
from goldenloop.metrics.catalog import METRICS, MetricDef
from goldenloop.metrics.dimensions import Dimension, Filter
from goldenloop.metrics.slo import SLO, SloError, parse_objective, parse_slo
from goldenloop.metrics.windows import TimeWindow, format_duration


def budget_consumed(burn_rate: float, window: timedelta, period: timedelta) -> float:
    """Share of the period's error budget spent by burning at ``burn_rate`` for ``window``."""
    return burn_rate * (window / period)


def burn_rate_for(budget_share: float, window: timedelta, period: timedelta) -> float:
    """The burn rate that spends ``budget_share`` of the period's budget in ``window``."""
    return budget_share * (period / window)


def burn_rates(
    slo: SLO, at: datetime, counts: Mapping[str, tuple[float, float]]
) -> dict[str, float | None]:
    """Burn rate per named window from (good, valid) counts, by the metrics package's rule."""
    return SloStatus(slo, at, 0.0, 0.0, windows=dict(counts)).burn_rates


@dataclass(frozen=True)
class BurnWindow:
    long: timedelta
    short: timedelta
    severity: Severity
    #: Either a fixed burn rate or the budget share the long window may spend.
    burn_rate: float | None = None
    budget: float | None = None

    def threshold(self, period: timedelta) -> float:
        if self.burn_rate is not None:
            return self.burn_rate
        assert self.budget is not None
        return burn_rate_for(self.budget, self.long, period)

    @property
    def names(self) -> tuple[str, str]:
        return format_duration(self.long), format_duration(self.short)


def default_burn_windows() -> tuple[BurnWindow, ...]:
    lengths = dict(BURN_WINDOWS)
    return tuple(
        BurnWindow(
            lengths[r.long],
            lengths[r.short],
            "page" if r.freeze else "ticket",
            budget=r.budget_share,
        )  # fmt: skip
        for r in BURN_RULES
    )


def _slo_ref(spec: RuleSpec) -> str | SLO | None:
    value = spec.raw("slo")
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, Mapping):
        try:
            return parse_slo(value, where="slo")
        except SloError as exc:
            raise spec.error("slo", str(exc)) from None
    raise spec.error("slo", "expected an SLO name or an inline SLO definition")


def resolve_slo(ref: str | SLO, ctx: RuleContext) -> SLO:
    if isinstance(ref, SLO):
        return ref
    slo = ctx.slos.get(ref)
    if slo is None:
        raise RuleEvaluationError(
            f"unknown SLO {ref!r}: define it in the metrics config (slos:) or with POST /api/v1/slos"
        )
    return slo


def _burn_windows(spec: RuleSpec) -> tuple[BurnWindow, ...]:
    raw = spec.raw("windows")
    if raw is None:
        return default_burn_windows()
    if not isinstance(raw, list) or not raw:
        raise spec.error(
            "windows", "expected a list of {long, short, burn_rate or budget, severity}"
        )
    windows = []
    for i, item in enumerate(raw):
        key = f"windows[{i}]"
        if not isinstance(item, Mapping):
            raise spec.error(
                key, "expected a mapping with long, short, burn_rate (or budget), severity"
            )
        sub = spec.nested(key, item)
        long = sub.duration("long", None)
        short = sub.duration("short", None)
        if long is None or short is None:
            raise spec.error(key, "needs both long and short windows (e.g. long: 1h, short: 5m)")
        if short >= long:
            raise spec.error(f"{key}.short", "must be shorter than long")
        rate = sub.number("burn_rate", None)
        budget = sub.number("budget", None, maximum=1.0)
        if (rate is None) == (budget is None):
            raise spec.error(key, "give exactly one of burn_rate (e.g. 14.4) or budget (e.g. 0.02)")
        severity = sub.choice("severity", "page", ("page", "ticket"))
        sub.finish()
        windows.append(
            BurnWindow(long, short, "page" if severity == "page" else "ticket", rate, budget)
        )
    return tuple(windows)


class SloBurnRule:
    """Page or ticket when an SLO's error budget burns fast in both windows of a pair."""

    def __init__(self, slo: str | SLO, windows: Sequence[BurnWindow], min_events: int,
                 by: tuple[Dimension, ...], filters: tuple[Filter, ...]) -> None:  # fmt: skip
        self.slo = slo
        self.windows = tuple(windows)
        self.min_events = min_events
        self.by = by
        self.filters = filters

    @classmethod
    def from_spec(cls, spec: RuleSpec) -> SloBurnRule:
        slo = _slo_ref(spec)
        if slo is None:
            raise spec.error("slo", "required: the name of an SLO (or an inline SLO)")
        return cls(slo, _burn_windows(spec), spec.integer("min_events", 30), spec.dims("by"),
                   spec.filters())  # fmt: skip

    def lookback(self) -> timedelta:
        return max(w.long for w in self.windows)

    def load(self, ctx: RuleContext, span: TimeWindow) -> SloBurnTimeline:
        slo = resolve_slo(self.slo, ctx)
        metric = slo.sli.good_metric(ctx.env.signals.judge_threshold)
        filters = (*slo.sli.filters, *self.filters)
        query = SeriesQuery(metric, self.by, filters)
        series = ctx.series(query, TimeWindow(span.start - self.lookback(), span.end))
        return SloBurnTimeline(self, slo, metric, filters, series)


class SloBurnTimeline:
    def __init__(self, rule: SloBurnRule, slo: SLO, metric: MetricDef,
                 filters: tuple[Filter, ...], series: MinuteSeries) -> None:  # fmt: skip
        self.rule, self.slo, self.metric = rule, slo, metric
        self.filters, self.series = filters, series
        self._lengths: dict[str, timedelta] = {}
        plan: dict[Severity, list[tuple[BurnWindow, str, str, float]]] = {}
        for window in rule.windows:
            long_name, short_name = window.names
            self._lengths.update({long_name: window.long, short_name: window.short})
            plan.setdefault(window.severity, []).append(
                (window, long_name, short_name, window.threshold(slo.period))
            )
        self._plan = [(s, plan[s]) for s in ("page", "ticket") if s in plan]

    def evaluate(self, at: datetime) -> list[Sample]:
        samples = []
        for key in keys_or_all(self.series.keys(), self.rule.by):
            samples += self._evaluate_key(key, at)
        return samples

    def _evaluate_key(self, key: SliceKey, at: datetime) -> list[Sample]:
        counts = {
            name: self.series.sums(key, at - length, at) for name, length in self._lengths.items()
        }
        rates = burn_rates(self.slo, at, counts)
        samples = []
        for severity, pairs in self._plan:
            scored = []
            for pair, long_name, short_name, limit in pairs:
                long_rate, short_rate = rates[long_name], rates[short_name]
                tripped = (
                    counts[long_name][1] >= self.rule.min_events and long_rate is not None
                    and short_rate is not None and long_rate >= limit and short_rate >= limit
                )  # fmt: skip
                closeness = min(long_rate or 0.0, short_rate or 0.0) / limit
                scored.append((tripped, closeness, pair, long_rate))
            tripped, _, pair, long_rate = max(scored, key=lambda s: (s[0], s[1]))
            if tripped:
                samples.append(self._sample(key, at, pair, counts, rates, severity))
            else:  # the details are only worked out for active series
                samples.append(Sample({}, False, _round(long_rate), severity=severity))
        return samples

    def _sample(
        self, key: SliceKey, at: datetime, pair: BurnWindow, counts: dict[str, tuple[float, float]],
        rates: dict[str, float | None], severity: Severity,
    ) -> Sample:  # fmt: skip
        slo = self.slo
        long_name, short_name = pair.names
        good, valid = counts[long_name]
        limit = pair.threshold(slo.period)
        long_rate, short_rate = rates[long_name], rates[short_name]
        spent = budget_consumed(long_rate, pair.long, slo.period) if long_rate is not None else None
        numbers: Numbers = {
            f"burn_rate_{long_name}": _round(long_rate),
            f"burn_rate_{short_name}": _round(short_rate),
            "threshold": _round(limit),
            f"error_rate_{long_name}": _round((valid - good) / valid if valid else None, 6),
            f"events_{long_name}": int(valid),
            f"bad_events_{long_name}": int(valid - good),
            f"events_{short_name}": int(counts[short_name][1]),
            f"budget_spent_{long_name}": _round(spent, 6),
            "objective": slo.objective,
            "error_budget": _round(slo.error_budget, 6),
            "min_events": self.rule.min_events,
        }
        summary = (
            f"SLO {slo.name} is burning its error budget {_x(long_rate)} over {long_name} and "
            f"{_x(short_rate)} over {short_name} (threshold {limit:.3g}×); "
            f"{fmt_rate(spent)} of the {format_duration(slo.period)} budget spent in {long_name}"
        )
        labels = {"slo": slo.name, **slice_labels(self.rule.by, key)}
        filters = (*self.filters, *slice_filters(self.rule.by, key))
        evidence = MetricEvidence(self.metric, filters, TimeWindow(at - pair.long, at), "failing")
        return Sample(labels, True, _round(long_rate), numbers, summary, severity, evidence,
                      scope=scope_of(self.filters, self.rule.by, key))  # fmt: skip


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}×"


class SuccessBelowSloRule:
    """Fire when a success rate stays below its objective (use ``for`` to hold it)."""

    def __init__(self, slo: str | SLO | None, metric: str | None, objective: float | None,
                 window: timedelta, min_events: int, by: tuple[Dimension, ...],
                 filters: tuple[Filter, ...], confidence: float = 0.99) -> None:  # fmt: skip
        self.slo, self.metric, self.objective = slo, metric, objective
        self.window, self.min_events, self.by, self.filters = window, min_events, by, filters
        self.confidence = confidence

    @classmethod
    def from_spec(cls, spec: RuleSpec) -> SuccessBelowSloRule:
        slo = _slo_ref(spec)
        metric = spec.text("metric")
        objective = None
        if spec.has("objective"):
            try:
                objective = parse_objective(spec.raw("objective"))
            except SloError as exc:
                raise spec.error("objective", str(exc).split(": ", 1)[-1]) from None
        if slo is None and (metric is None or objective is None):
            raise spec.error("slo", "name an SLO, or give metric and objective")
        if slo is not None and metric is not None:
            raise spec.error("metric", "give either slo or metric, not both")
        if metric is not None:
            base = METRICS.get(metric)
            if (
                base is None
                or base.higher_is_better is not True
                or base.aggregation not in ("rate", "ratio")
            ):
                good = sorted(m.name for m in METRICS.values()
                              if m.higher_is_better and m.aggregation in ("rate", "ratio"))  # fmt: skip
                raise spec.error(
                    "metric", f"{metric!r} is not a success rate; use one of {', '.join(good)}"
                )
        window = spec.duration("window", "15m")
        confidence = spec.number("confidence", 0.99, above=None, minimum=0.0, maximum=0.99999)
        assert window is not None and confidence is not None
        return cls(slo, metric, objective, window, spec.integer("min_events", 20),
                   spec.dims("by"), spec.filters(), confidence)  # fmt: skip

    def lookback(self) -> timedelta:
        return self.window

    def load(self, ctx: RuleContext, span: TimeWindow) -> SuccessTimeline:
        if self.slo is not None:
            slo = resolve_slo(self.slo, ctx)
            metric = slo.sli.good_metric(ctx.env.signals.judge_threshold)
            filters, objective, name = (*slo.sli.filters, *self.filters), slo.objective, slo.name
        else:
            assert self.metric is not None and self.objective is not None
            metric, filters = METRICS[self.metric], self.filters
            objective, name = self.objective, self.metric
        series = ctx.series(SeriesQuery(metric, self.by, filters),
                            TimeWindow(span.start - self.window, span.end))  # fmt: skip
        return SuccessTimeline(self, name, metric, filters, objective, series)


class SuccessTimeline:
    def __init__(self, rule: SuccessBelowSloRule, name: str, metric: MetricDef,
                 filters: tuple[Filter, ...], objective: float, series: MinuteSeries) -> None:  # fmt: skip
        self.rule, self.name, self.metric, self.filters = rule, name, metric, filters
        self.objective, self.series = objective, series

    def evaluate(self, at: datetime) -> list[Sample]:
        rule, samples = self.rule, []
        for key in keys_or_all(self.series.keys(), rule.by):
            good, valid = self.series.sums(key, at - rule.window, at)
            rate = good / valid if valid else None
            active = rate is not None and valid >= rule.min_events and rate < self.objective
            p_value = below_objective_p_value(good, valid, self.objective) if active else None
            if p_value is not None and rule.confidence and p_value >= 1 - rule.confidence:
                active = False  # this few failures are likely bad luck, not a breach
            if not active:  # the details are only worked out for active series
                samples.append(Sample({}, False, _round(rate, 6)))
                continue
            numbers: Numbers = {
                "success_rate": _round(rate, 6), "objective": self.objective,
                "events": int(valid), "good_events": int(good), "bad_events": int(valid - good),
                "min_events": rule.min_events, "p_value": _round(p_value, 6),
            }  # fmt: skip
            window = format_duration(rule.window)
            summary = (
                f"{self.name}: success {fmt_rate(rate)} over the last {window} is below the "
                f"objective {fmt_rate(self.objective)} ({int(valid - good)} of {int(valid)} failed)"
            )
            labels = {"slo" if rule.slo is not None else "metric": self.name,
                      **slice_labels(rule.by, key)}  # fmt: skip
            filters = (*self.filters, *slice_filters(rule.by, key))
            evidence = MetricEvidence(
                self.metric, filters, TimeWindow(at - rule.window, at), "failing"
            )
            samples.append(Sample(labels, True, _round(rate, 6), numbers, summary, None, evidence,
                                  scope=scope_of(self.filters, rule.by, key)))  # fmt: skip
        return samples


register_rule_type(RuleType(
    "slo_burn", SloBurnRule.from_spec,
    "Multiwindow, multi-burn-rate SLO alert (SRE Workbook): page at 14.4× over 1h and 5m "
    "or 6× over 6h and 30m, ticket at 1× over 3d and 6h.",
    severity="page",
))  # fmt: skip
register_rule_type(RuleType(
    "success_below_slo", SuccessBelowSloRule.from_spec,
    "Success rate (an SLO's SLI, or a success metric and objective) below the objective, "
    "held for `for` (default 15m).",
    severity="page", hold=timedelta(minutes=15),
))  # fmt: skip
