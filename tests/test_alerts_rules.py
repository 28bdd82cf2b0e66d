"""Rule types on traffic built span by span: spend velocity, rate spikes against their
baselines, the triage queue and P0 time-to-eval; plus validation and the registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import span_batch

from goldenloop.alerts import RULE_TYPES, RuleType, backtest, parse_rule, register_rule_type
from goldenloop.alerts.config import AlertConfigError, parse_alerts_config
from goldenloop.alerts.model import Sample
from goldenloop.alerts.rules import RuleContext, RuleError, RuleSpec
from goldenloop.alerts.significance import binomial_tail
from goldenloop.flags._sql import insert_rows
from goldenloop.metrics.windows import TimeWindow, naive
from goldenloop.store.base import Store
from goldenloop.triage.queue import ITEM_COLUMNS

T0 = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)


def _turns(store: Store, at: datetime, count: int, *, bad: int = 0, kind: str = "breaker",
           project: str = "refund", tier: str = "free", cost: float = 0.0, tag: str = "") -> None:  # fmt: skip
    """``count`` one-span turns in the minutes after ``at``; the first ``bad`` carry ``kind``."""
    rows = []
    for i in range(count):
        row: dict[str, Any] = {
            "trace_id": f"{tag}{at:%Y%m%d%H%M}-{i}", "span_id": "root", "session_id": f"s{tag}{at:%d%H%M}-{i}",
            "project": project, "customer_tier": tier, "cost_usd": cost,
            "start_time": at + timedelta(seconds=i * 2), "ingested_at": at + timedelta(minutes=1),
        }  # fmt: skip
        if i < bad and kind == "breaker":
            row.update(status="error", error_type="CircuitBreakerOpen")
        elif i < bad and kind == "injection":
            row["attributes"] = {"goldenloop.injection.detected": "true"}
        rows.append(row)
    store.insert_spans(span_batch(*rows), dedupe=False)


def _tool_calls(
    store: Store, at: datetime, count: int, failed: int, tool: str = "lookup_order"
) -> None:
    rows = []
    for i in range(count):
        trace = f"tool-{at:%Y%m%d%H%M}-{tool}-{i}"
        start = at + timedelta(seconds=i)
        rows.append({"trace_id": trace, "span_id": "root", "kind": "agent", "start_time": start,
                     "ingested_at": at + timedelta(hours=1)})  # fmt: skip
        rows.append({"trace_id": trace, "span_id": "tool", "parent_id": "root", "kind": "tool",
                     "tool_name": tool, "status": "error" if i < failed else "ok",
                     "start_time": start + timedelta(milliseconds=5), "ingested_at": at + timedelta(hours=1)})  # fmt: skip
    store.insert_spans(span_batch(*rows), dedupe=False)


def test_spend_velocity_fires_per_tier_against_its_own_budget(store: Store) -> None:
    _turns(store, T0, 30, project="refund", tier="free", cost=0.10, tag="f")  # $3.00 in the hour
    _turns(store, T0, 30, project="refund", tier="enterprise", cost=0.50, tag="e")  # $15.00
    rule = parse_rule({
        "name": "spend", "type": "spend_velocity", "usd_per_hour": 5, "by": ["project", "customer_tier"],
        "budgets": [{"match": {"customer_tier": "enterprise"}, "usd_per_hour": 20}],
    })  # fmt: skip
    assert backtest(store, rule, T0, T0 + timedelta(hours=1)).fired == []
    cheap = parse_rule({"name": "spend", "type": "spend_velocity", "usd_per_hour": 2,
                        "by": ["project", "customer_tier"]})  # fmt: skip
    fired = backtest(store, cheap, T0, T0 + timedelta(hours=1)).fired
    tiers = {e.labels["customer_tier"] for e in fired}
    assert tiers == {"free", "enterprise"}
    enterprise = next(e for e in fired if e.labels["customer_tier"] == "enterprise")
    assert enterprise.numbers_at_fire["budget_usd_per_hour"] == 2
    assert enterprise.numbers_at_fire["spend_usd"] > 2


def test_breaker_spike_compares_with_the_same_hour_of_the_previous_week(store: Store) -> None:
    for day in range(1, 8):
        _turns(store, T0 - timedelta(days=day), 100, bad=1)  # 1% at this hour each day
    _turns(store, T0, 100, bad=10)  # 10% now
    _turns(store, T0 - timedelta(hours=6), 100, bad=10, tag="other-hour")  # not this hour: ignored
    rule = parse_rule({"name": "breaker", "type": "breaker_spike"})
    result = backtest(store, rule, T0 + timedelta(minutes=5), T0 + timedelta(minutes=6))
    (episode,) = result.fired
    numbers = episode.numbers_at_fire
    assert numbers["baseline_rate"] == pytest.approx(0.01)
    assert numbers["baseline_events"] == 700
    assert numbers["bad_events"] == 10 and numbers["events"] == 100
    assert numbers["p_value"] is not None and numbers["p_value"] < 0.05


def test_breaker_spike_needs_enough_trips_and_a_real_difference(store: Store) -> None:
    for day in range(1, 8):
        _turns(store, T0 - timedelta(days=day), 100, bad=3)  # 3% baseline
    _turns(store, T0, 100, bad=4)  # 4%: not 3×
    rule = parse_rule({"name": "breaker", "type": "breaker_spike"})
    assert backtest(store, rule, T0 + timedelta(minutes=5), T0 + timedelta(minutes=6)).fired == []


def test_injection_rise_uses_the_previous_day_as_baseline(store: Store) -> None:
    for hour in range(1, 25):
        _turns(
            store, T0 - timedelta(hours=hour), 20, bad=1 if hour % 4 == 0 else 0, kind="injection"
        )
    _turns(store, T0, 60, bad=9, kind="injection")
    rule = parse_rule({"name": "injections", "type": "injection_rise"})
    (episode,) = backtest(store, rule, T0 + timedelta(minutes=3), T0 + timedelta(minutes=4)).fired
    assert episode.labels["metric"] == "injection_attempt_rate"
    assert episode.numbers_at_fire["baseline_events"] == 480


def test_tool_error_rate_doubling_week_over_week_fires_per_tool(store: Store) -> None:
    week_ago = T0 - timedelta(days=7)
    _tool_calls(store, week_ago, 150, failed=3)  # 2%
    _tool_calls(store, T0, 150, failed=15)  # 10%
    _tool_calls(store, week_ago, 150, failed=3, tool="get_invoice")
    _tool_calls(store, T0, 150, failed=4, tool="get_invoice")  # 2.7%: not doubled enough
    rule = parse_rule({"name": "tools", "type": "tool_error_wow"})
    at = T0 + timedelta(hours=1)
    fired = backtest(store, rule, at, at + timedelta(minutes=1)).fired
    assert [e.labels["tool_name"] for e in fired] == ["lookup_order"]
    assert fired[0].numbers_at_fire["rate"] == pytest.approx(0.1)
    assert fired[0].numbers_at_fire["baseline_rate"] == pytest.approx(0.02)


def _item(item_id: str, **values: Any) -> list[Any]:
    base: dict[str, Any] = {
        "id": item_id, "dedupe_key": item_id, "project": "refund", "source": "flag",
        "primary_rule": "thumbs_down", "rules": json.dumps(["thumbs_down"]), "category": "wrong",
        "title": f"item {item_id}", "question": "q", "prompt_hash": "p-9", "session_id": f"sess-{item_id}",
        "trace_id": f"trace-{item_id}", "frequency": 1, "revenue_tier": "free", "tier_weight": 1.0,
        "severity": 3, "impact": 3.0, "priority": "P1", "status": "open",
        "first_seen_at": naive(T0 - timedelta(days=3)), "last_seen_at": naive(T0 - timedelta(days=3)),
        "created_at": naive(T0 - timedelta(days=3)), "queued_at": naive(T0 - timedelta(days=2)),
        "due_at": None, "label": None, "owner": None, "notes": None, "failure_modes": "[]",
        "criteria": None, "labelled_at": None, "golden_case_id": None, "case_merged_at": None,
        "resolved_at": None, "resolution": None, "updated_at": naive(T0 - timedelta(days=2)),
    }  # fmt: skip
    base.update(values)
    if "updated_at" not in values:  # the row last changed at its latest timestamp
        stamps = [
            base[c]
            for c in ("created_at", "queued_at", "labelled_at", "case_merged_at", "resolved_at")
        ]
        base["updated_at"] = max(v for v in stamps if v is not None)
    return [base[c] for c in ITEM_COLUMNS]


def test_review_queue_fires_on_depth_or_on_the_age_of_the_oldest_item(store: Store) -> None:
    rows = [_item(f"i{n}", queued_at=naive(T0 - timedelta(hours=n))) for n in range(1, 4)]
    rows.append(_item("done", status="labelled", labelled_at=naive(T0 - timedelta(hours=30)),
                      queued_at=naive(T0 - timedelta(hours=40))))  # fmt: skip
    insert_rows(store, "triage_items", ITEM_COLUMNS, rows)
    deep = parse_rule({"name": "queue", "type": "review_queue", "max_depth": 3})
    (episode,) = backtest(store, deep, T0, T0 + timedelta(minutes=1)).fired
    assert episode.numbers_at_fire["depth"] == 3
    old = parse_rule({"name": "queue", "type": "review_queue", "max_age": "2h"})
    (episode,) = backtest(store, old, T0, T0 + timedelta(minutes=1)).fired
    assert episode.numbers_at_fire["oldest_age_hours"] == 3.0
    # 35 hours earlier the labelled item was still waiting and the others not queued yet.
    past = T0 - timedelta(hours=35)
    (before,) = backtest(store, old, past, past + timedelta(minutes=1)).fired
    assert before.numbers_at_fire["depth"] == 1
    assert before.numbers_at_fire["oldest_age_hours"] == 5.0


def test_p0_overdue_fires_for_items_past_their_time_to_eval_target(store: Store) -> None:
    insert_rows(store, "triage_items", ITEM_COLUMNS, [
        _item("late", priority="P0", due_at=naive(T0 - timedelta(hours=5))),
        _item("merged", priority="P0", due_at=naive(T0 - timedelta(hours=5)),
              case_merged_at=naive(T0 - timedelta(hours=6))),
        _item("on-time", priority="P0", due_at=naive(T0 + timedelta(hours=5))),
        _item("p1", priority="P1", due_at=naive(T0 - timedelta(hours=5))),
    ])  # fmt: skip
    rule = parse_rule({"name": "p0", "type": "p0_overdue"})
    (episode,) = backtest(store, rule, T0, T0 + timedelta(minutes=1)).fired
    assert episode.numbers_at_fire["overdue"] == 1
    assert episode.numbers_at_fire["most_overdue_hours"] == 5.0
    assert "item late" in episode.summary
    # Before its due time nothing was overdue.
    assert backtest(store, rule, T0 - timedelta(hours=6), T0 - timedelta(hours=5)).fired == []
    feedback_only = parse_rule({"name": "p0", "type": "p0_overdue", "source": "feedback"})
    assert backtest(store, feedback_only, T0, T0 + timedelta(minutes=1)).fired == []


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"name": "x", "type": "nope"}, "rule 'x': type: 'nope' is not a rule type"),
        ({"name": "x", "type": "spend_velocity"}, "rule 'x': usd_per_hour: required"),
        (
            {"name": "x", "type": "spend_velocity", "usd_per_hour": "lots"},
            "rule 'x': usd_per_hour: expected a number",
        ),
        (
            {"name": "x", "type": "spend_velocity", "usd_per_hour": 5, "window": "30s"},
            "rule 'x': window: must be at least 1m",
        ),
        (
            {
                "name": "x",
                "type": "spend_velocity",
                "usd_per_hour": 5,
                "budgets": [{"match": {"locale": "de"}, "usd_per_hour": 1}],
            },
            "rule 'x': budgets[0].match.locale: not one of the rule's by dimensions",
        ),
        (
            {"name": "x", "type": "breaker_spike", "metric": "task_success_rate"},
            "rule 'x': metric: 'task_success_rate' is not a problem rate",
        ),
        (
            {"name": "x", "type": "breaker_spike", "factor": 0.5},
            "rule 'x': factor: must be greater than 1",
        ),
        (
            {"name": "x", "type": "breaker_spike", "by": ["planet"]},
            "rule 'x': by: unknown dimension 'planet'",
        ),
        ({"name": "x", "type": "review_queue"}, "rule 'x': max_depth: give max_depth"),
        (
            {"name": "x", "type": "review_queue", "max_depth": 5, "by": ["locale"]},
            "rule 'x': by: triage rules can only be split by project",
        ),
        ({"name": "x", "type": "success_below_slo"}, "rule 'x': slo: name an SLO"),
        (
            {"name": "x", "type": "success_below_slo", "metric": "cost_usd", "objective": 0.9},
            "rule 'x': metric: 'cost_usd' is not a success rate",
        ),
        (
            {
                "name": "x",
                "type": "slo_burn",
                "slo": {"name": "s", "objective": "120%", "sli": {"kind": "turn"}},
            },
            "rule 'x': slo: objective: '120%' must lie strictly between",
        ),
        (
            {"name": "x", "type": "p0_overdue", "severity": "sms"},
            "rule 'x': severity: 'sms' is not one of page, ticket",
        ),
        ({"name": "x", "type": "p0_overdue", "for": "soon"}, "rule 'x': for:"),
        (
            {"name": "x", "type": "p0_overdue", "labels": {"severity": "low"}},
            "rule 'x': labels.severity",
        ),
        ({"name": "x", "type": "p0_overdue", "treshold": 3}, "rule 'x': unknown key(s) treshold"),
        ({"name": "bad name!", "type": "p0_overdue"}, "name: use letters"),
    ],
)
def test_invalid_rules_name_the_rule_and_the_key(definition: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(definition)
    assert message in str(info.value)


def test_config_errors_name_the_place() -> None:
    with pytest.raises(AlertConfigError, match="duplicate rule name"):
        parse_alerts_config(
            {"rules": [{"name": "a", "type": "p0_overdue"}, {"name": "a", "type": "p0_overdue"}]}
        )
    with pytest.raises(AlertConfigError, match=r"notifier 'hook'.type: 'fax' is not a notifier"):
        parse_alerts_config({"notifiers": [{"name": "hook", "type": "fax"}]})
    with pytest.raises(AlertConfigError, match=r"notifier 'hook': url: expected an http"):
        parse_alerts_config({"notifiers": [{"name": "hook", "type": "webhook", "url": "ftp://x"}]})
    with pytest.raises(AlertConfigError, match="notifier 'pd': routing_key: required"):
        parse_alerts_config({"notifiers": [{"name": "pd", "type": "pagerduty"}]})
    with pytest.raises(
        AlertConfigError, match="environment variable GOLDENLOOP_TEST_UNSET_VAR is not set"
    ):
        parse_alerts_config(
            {"notifiers": [{"name": "s", "type": "slack", "url": "${GOLDENLOOP_TEST_UNSET_VAR}"}]}
        )
    with pytest.raises(AlertConfigError, match="unknown section"):
        parse_alerts_config({"receivers": []})


def test_config_defaults_follow_alertmanager() -> None:
    config = parse_alerts_config({"notifiers": [{"name": "hook", "type": "webhook", "url": "http://x/y",
                                                 "match": {"severity": "page"}, "group_wait": "0s"}]})  # fmt: skip
    route = config.routes[0]
    assert route.grouping.group_wait == timedelta(0)
    assert route.grouping.group_interval == timedelta(minutes=5)
    assert route.grouping.repeat_interval == timedelta(hours=4)
    assert [str(m) for m in route.matchers] == ['severity="page"']


class _Always:
    """A user's rule type: one active series, registered like the built-ins."""

    @classmethod
    def from_spec(cls, spec: RuleSpec) -> _Always:
        spec.text("reason", "always")
        return cls()

    def lookback(self) -> timedelta:
        return timedelta(0)

    def load(self, ctx: RuleContext, span: TimeWindow) -> _Always:
        return self

    def evaluate(self, at: datetime) -> list[Sample]:
        return [Sample({"team": "core"}, True, 1.0, {"value": 1}, "always on")]


def test_user_rule_types_register_like_the_built_ins(store: Store) -> None:
    register_rule_type(RuleType("always", _Always.from_spec, "Test rule type."))
    try:
        rule = parse_rule({"name": "a", "type": "always", "reason": "test", "for": "2m"})
        (episode,) = backtest(store, rule, T0, T0 + timedelta(minutes=5)).fired
        assert episode.fired_at == T0 + timedelta(minutes=2)
        assert episode.labels == {"alertname": "a", "severity": "ticket", "team": "core"}
    finally:
        RULE_TYPES.pop("always")


def test_binomial_tail_matches_known_values() -> None:
    assert binomial_tail(1, 23, 0.01) == pytest.approx(1 - 0.99**23)
    assert binomial_tail(5, 5, 0.5) == pytest.approx(1 / 32)
    assert binomial_tail(0, 10, 0.3) == 1.0
    assert binomial_tail(11, 10, 0.3) == 0.0
