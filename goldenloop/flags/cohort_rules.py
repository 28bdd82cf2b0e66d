"""Built-in rules that compare a session with its cohort: cost or iteration count above
the rolling P95 of sessions of the same project and customer tier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from goldenloop.flags._sql import fmt_number, json_object, naive
from goldenloop.flags.baselines import (
    SPAN_COLUMNS_USED,
    SessionCost,
    SessionMetric,
    TurnIterations,
    day_of,
    ensure_baselines,
)
from goldenloop.flags.rules import (
    CandidateQuery,
    ConfiguredRule,
    RuleContext,
    RulePolicy,
    register_rule,
)
from goldenloop.store.base import Store


def _days_in_scope(ctx: RuleContext) -> list[datetime]:
    cached = ctx._cache.get("days")
    if cached is None:
        where, params = ctx.scope_filter()
        rows = ctx.store.fetch(
            f"SELECT DISTINCT date_trunc('day', start_time) FROM spans WHERE {where}", params
        )
        cached = sorted(day_of(r[0]) for r in rows if r[0] is not None)
        ctx._cache["days"] = cached
    return list(cached)


def _has_recent_baseline(ctx: RuleContext, metric_key: str, days: list[datetime]) -> bool:
    if not days:
        return True
    rows = ctx.store.fetch(
        "SELECT count(*) FROM flag_baselines WHERE metric = ? AND day >= ? AND day <= ?",
        (metric_key, min(days) - timedelta(days=2), max(days)),
    )
    return bool(rows and rows[0][0])


def _above_p95(
    ctx: RuleContext,
    metric: SessionMetric,
    metric_key: str,
    *,
    window_days: int,
    min_samples: int,
    min_value: float,
    refresh_minutes: int,
    value_text: str,
    unit: str,
) -> CandidateQuery:
    days = _days_in_scope(ctx)
    incremental = ctx.scope.mode == "ingested"
    # Backfills compute every day's baseline; incremental runs use the freshest baseline
    # of the cohort (the flag loop refreshes today's hourly, see refresh_baselines) and
    # compute one only when the store has none yet, so a new batch never waits for a
    # scan of the whole window.
    if not incremental or not _has_recent_baseline(ctx, metric_key, days):
        ensure_baselines(
            ctx.store,
            metric,
            metric_key,
            days,
            window_days=window_days,
            now=ctx.now,
            refresh=timedelta(minutes=refresh_minutes),
        )
    spans, params = ctx.spans(SPAN_COLUMNS_USED)
    values = metric.values_sql(spans)
    d = ctx.dialect
    cohort = "v.project || ' × ' || CASE WHEN v.customer_tier = '' THEN 'no tier' ELSE v.customer_tier END"
    if incremental:
        # The latest baseline day at or before the session's day, within two days.
        baseline = (
            "JOIN (SELECT project, customer_tier, max(day) AS day FROM flag_baselines "
            "WHERE metric = ? AND day <= ? GROUP BY project, customer_tier) AS latest "
            "ON latest.project = v.project AND latest.customer_tier = v.customer_tier "
            "AND latest.day >= date_trunc('day', v.started) - INTERVAL '2 days' "
            "JOIN flag_baselines b ON b.metric = ? AND b.project = v.project "
            "AND b.customer_tier = v.customer_tier AND b.day = latest.day"
        )
        baseline_params: tuple[Any, ...] = (metric_key, max(days, default=ctx.now), metric_key)
    else:
        baseline = (
            "JOIN flag_baselines b ON b.metric = ? AND b.project = v.project "
            "AND b.customer_tier = v.customer_tier AND b.day = date_trunc('day', v.started)"
        )
        baseline_params = (metric_key,)
    sql = f"""
        SELECT v.session_id, v.project, nullif(v.customer_tier, ''), NULL,
               v.value / b.p95, NULL,
               '{metric.label} ' || {value_text.format(x="v.value")} || ' is ' ||
               {fmt_number(d, "v.value / b.p95", 1)} || '× the P95 (' ||
               {value_text.format(x="b.p95")} || ') of ' || {cohort} ||
               ' over {window_days} days ({unit})',
               v.started,
               {json_object(d, {"value": "v.value", "p95": "b.p95", "samples": "b.samples", "window_days": str(window_days)})}
        FROM ({values}) AS v
        {baseline}
        WHERE b.samples >= ? AND b.p95 > 0 AND v.value > b.p95 AND v.value >= ?
    """
    return CandidateQuery(sql, (*params, *baseline_params, min_samples, min_value))


def refresh_baselines(
    store: Store, rules: Sequence[ConfiguredRule], now: datetime
) -> dict[str, int]:
    """Recompute today's (and yesterday's, until it is final) cohort baselines of the
    enabled P95 rules when older than their ``refresh_minutes``; the flag loop calls
    this so incremental runs never wait for the window scan. Returns days recomputed
    per rule."""
    done: dict[str, int] = {}
    now = naive(now)
    today = day_of(now)
    for configured in rules:
        rule = configured.rule
        if not configured.policy.enabled or not isinstance(rule, CostAboveP95 | IterationsAboveP95):
            continue
        metric, key = rule.metric()
        done[rule.name] = ensure_baselines(
            store, metric, key, [today - timedelta(days=1), today],
            window_days=rule.window_days, now=now,
            refresh=timedelta(minutes=rule.refresh_minutes),
        )  # fmt: skip
    return done


def _check_window(window_days: int, min_samples: int, refresh_minutes: int) -> None:
    if not 1 <= window_days <= 90:
        raise ValueError(f"window_days: must be between 1 and 90, got {window_days}")
    if min_samples < 1:
        raise ValueError(f"min_samples: must be at least 1, got {min_samples}")
    if refresh_minutes < 1:
        raise ValueError(f"refresh_minutes: must be at least 1, got {refresh_minutes}")


@dataclass(frozen=True)
class CostAboveP95:
    name: ClassVar[str] = "cost_p95"
    description: ClassVar[str] = (
        "Session cost above the rolling P95 of its cohort (project × customer tier)."
    )
    default_severity: ClassVar[int] = 2
    window_days: int = 7
    #: Cohorts with fewer sessions in the window are not judged.
    min_samples: int = 50
    #: Never flag a session cheaper than this (USD).
    min_value: float = 0.0
    #: How often today's (unfinished) baseline is recomputed.
    refresh_minutes: int = 60

    def __post_init__(self) -> None:
        _check_window(self.window_days, self.min_samples, self.refresh_minutes)

    def metric(self) -> tuple[SessionMetric, str]:
        return SessionCost(), "cost_usd"

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        metric, key = self.metric()
        return _above_p95(
            ctx,
            metric,
            key,
            window_days=self.window_days,
            min_samples=self.min_samples,
            min_value=self.min_value,
            refresh_minutes=self.refresh_minutes,
            value_text="'$' || " + fmt_number(ctx.dialect, "{x}", 4),
            unit="USD",
        )


@dataclass(frozen=True)
class IterationsAboveP95:
    name: ClassVar[str] = "iterations_p95"
    description: ClassVar[str] = (
        "More agent steps (LLM + tool calls) in one turn than the rolling P95 of the cohort."
    )
    default_severity: ClassVar[int] = 2
    kinds: tuple[str, ...] = ("llm", "tool")
    window_days: int = 7
    min_samples: int = 50
    min_value: float = 0.0
    refresh_minutes: int = 60

    def __post_init__(self) -> None:
        _check_window(self.window_days, self.min_samples, self.refresh_minutes)
        if not self.kinds:
            raise ValueError("kinds: name at least one span kind to count")

    def metric(self) -> tuple[SessionMetric, str]:
        return TurnIterations(kinds=self.kinds), "iterations:" + "+".join(self.kinds)

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        metric, key = self.metric()
        return _above_p95(
            ctx,
            metric,
            key,
            window_days=self.window_days,
            min_samples=self.min_samples,
            min_value=self.min_value,
            refresh_minutes=self.refresh_minutes,
            value_text=fmt_number(ctx.dialect, "{x}", 1),
            unit="+".join(self.kinds) + " spans per turn",
        )


register_rule(CostAboveP95, policy=RulePolicy(daily_cap=100))
register_rule(IterationsAboveP95, policy=RulePolicy(daily_cap=100))
