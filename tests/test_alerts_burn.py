"""Burn-rate math against the SRE Workbook's worked numbers, and the multiwindow,
multi-burn-rate rule on traffic whose error rate is known to the turn."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import span_batch

from goldenloop.alerts import backtest, budget_consumed, burn_rate_for, burn_rates, parse_rule
from goldenloop.alerts.evaluator import Evaluator
from goldenloop.alerts.rules import RuleError
from goldenloop.alerts.slo_rules import default_burn_windows
from goldenloop.alerts.states import load_alerts
from goldenloop.metrics.slo import parse_slo
from goldenloop.store.base import Store

PERIOD = timedelta(days=30)
SLO_999 = {"name": "answers", "objective": "99.9%", "sli": {"kind": "turn", "checks": ["no_error"]}}
SLO_99 = {"name": "answers", "objective": "99%", "sli": {"kind": "turn", "checks": ["no_error"]}}
T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
#: Errors start here: two hours of clean traffic before it.
ONSET = T0 + timedelta(hours=2)


@pytest.mark.parametrize(
    ("burn_rate", "window", "budget"),
    [
        (14.4, timedelta(hours=1), 0.02),
        (6.0, timedelta(hours=6), 0.05),
        (1.0, timedelta(days=3), 0.10),
    ],
)
def test_burn_rate_spends_the_workbook_share_of_a_30_day_budget(
    burn_rate: float, window: timedelta, budget: float
) -> None:
    assert budget_consumed(burn_rate, window, PERIOD) == pytest.approx(budget)
    assert burn_rate_for(budget, window, PERIOD) == pytest.approx(burn_rate)


def test_burning_at_14_4_exhausts_a_30_day_budget_in_about_two_days() -> None:
    assert PERIOD / 14.4 == timedelta(hours=50)


def test_burn_rate_is_error_rate_over_the_error_budget() -> None:
    slo = parse_slo(SLO_999)
    assert slo.error_budget == pytest.approx(0.001)
    # 1.44% of 10,000 requests failed: 14.4× a 99.9% SLO's budget; 0.1% is exactly 1×.
    rates = burn_rates(
        slo, T0, {"1h": (10_000 - 144, 10_000), "3d": (999_000, 1_000_000), "5m": (0, 0)}
    )
    assert rates["1h"] == pytest.approx(14.4)
    assert rates["3d"] == pytest.approx(1.0)
    assert rates["5m"] is None


def test_default_windows_are_the_workbook_table() -> None:
    windows = default_burn_windows()
    assert [(w.long, w.short, w.severity) for w in windows] == [
        (timedelta(hours=1), timedelta(minutes=5), "page"),
        (timedelta(hours=6), timedelta(minutes=30), "page"),
        (timedelta(days=3), timedelta(hours=6), "ticket"),
    ]
    assert [w.threshold(PERIOD) for w in windows] == pytest.approx([14.4, 6.0, 1.0])


def _traffic(
    store: Store, *, minutes: int, per_minute: int = 10, errors_per_minute: int = 2
) -> None:
    """``per_minute`` turns each minute from T0; from ONSET, ``errors_per_minute`` fail."""
    rows = []
    for minute in range(minutes):
        at = T0 + timedelta(minutes=minute)
        failing = errors_per_minute if at >= ONSET else 0
        for i in range(per_minute):
            rows.append({
                "trace_id": f"t{minute:04d}{i:02d}", "span_id": "s", "session_id": f"sess-{minute:04d}-{i}",
                "start_time": at + timedelta(seconds=i), "status": "error" if i < failing else "ok",
                "ingested_at": at + timedelta(seconds=30),
            })  # fmt: skip
    store.insert_spans(span_batch(*rows), dedupe=False)


def test_fast_burn_pages_exactly_when_both_windows_cross_14_4(store: Store) -> None:
    _traffic(store, minutes=180)
    rule = parse_rule({"name": "answers-burn", "type": "slo_burn", "slo": SLO_99})
    result = backtest(store, rule, ONSET, ONSET + timedelta(minutes=60))
    pages = result.pages
    # 20% errors against a 1% budget burn at 20×; the hour window reaches 14.4× once 44
    # of its 60 minutes are failing (88 of 600 turns: 14.67×; at 43 minutes 14.33×).
    assert [p.fired_at for p in pages] == [ONSET + timedelta(minutes=44)]
    assert pages[0].numbers_at_fire["burn_rate_1h"] == pytest.approx(88 / 600 / 0.01, abs=1e-3)
    assert pages[0].numbers_at_fire["burn_rate_5m"] == pytest.approx(20.0)
    # The slow pair (3d and 6h at 1×) opens a ticket long before the page.
    tickets = [e for e in result.fired if e.severity == "ticket"]
    assert [t.fired_at for t in tickets] == [ONSET + timedelta(minutes=7)]


def test_burn_alert_state_is_stored_with_the_numbers_that_tripped_it(store: Store) -> None:
    _traffic(store, minutes=180)
    rule = parse_rule({"name": "answers-burn", "type": "slo_burn", "slo": SLO_99,
                       "windows": [{"long": "1h", "short": "5m", "burn_rate": 14.4, "severity": "page"}]})  # fmt: skip
    evaluator = Evaluator(store)
    evaluator.evaluate([rule], ONSET + timedelta(minutes=43))
    assert load_alerts(store) == []
    evaluator.evaluate([rule], ONSET + timedelta(minutes=44))
    (alert,) = load_alerts(store)
    assert (alert.status, alert.severity, alert.labels["slo"]) == ("firing", "page", "answers")
    assert alert.details.numbers_at_fire["bad_events_1h"] == 88
    assert alert.details.numbers_at_fire["events_1h"] == 600
    assert alert.details.numbers_at_fire["budget_spent_1h"] == pytest.approx(
        88 / 600 / 0.01 / 720, abs=1e-6
    )
    assert alert.details.exemplar is not None and alert.details.exemplar.trace_id is not None


def test_min_events_keeps_low_traffic_from_paging(store: Store) -> None:
    # 180 turns in all, every one failing after ONSET: no window holds 200 events.
    _traffic(store, minutes=180, per_minute=1, errors_per_minute=1)
    rule = parse_rule(
        {"name": "answers-burn", "type": "slo_burn", "slo": SLO_999, "min_events": 200}
    )
    assert backtest(store, rule, ONSET, ONSET + timedelta(minutes=60)).fired == []
    loud = parse_rule(
        {"name": "answers-burn", "type": "slo_burn", "slo": SLO_999, "min_events": 10}
    )
    assert backtest(store, loud, ONSET, ONSET + timedelta(minutes=60)).pages


def test_editable_windows_use_budget_or_burn_rate() -> None:
    rule = parse_rule({
        "name": "custom", "type": "slo_burn", "slo": SLO_99,
        "windows": [{"long": "2h", "short": "10m", "budget": 0.04, "severity": "page"},
                    {"long": "1d", "short": "2h", "burn_rate": 2, "severity": "ticket"}],
    })  # fmt: skip
    windows = rule.impl.windows  # type: ignore[attr-defined]
    assert [w.threshold(PERIOD) for w in windows] == pytest.approx([14.4, 2.0])
    assert rule.impl.lookback() == timedelta(days=1)


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        (
            [{"long": "5m", "short": "1h", "burn_rate": 2}],
            "windows[0].short: must be shorter than long",
        ),
        ([{"long": "1h", "short": "5m"}], "windows[0]: give exactly one of burn_rate"),
        (
            [{"long": "1h", "short": "5m", "burn_rate": -1}],
            "windows[0].burn_rate: must be greater than 0",
        ),
        ([{"long": "1h", "short": "5m", "burn_rate": 2, "severity": "sms"}], "windows[0].severity"),
        ([{"long": "1h", "short": "5m", "burn_rate": 2, "colour": "red"}], "unknown key(s) colour"),
    ],
)
def test_bad_burn_windows_name_the_rule_and_key(
    windows: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule({"name": "custom", "type": "slo_burn", "slo": SLO_99, "windows": windows})
    assert "rule 'custom'" in str(info.value)
    assert message in str(info.value)
