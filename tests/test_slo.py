"""SLOs: definitions, error budgets and burn rates against hand-computed fixtures
(DuckDB and PostgreSQL), API-defined SLOs, and the config file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import span_batch
from metrics_data import WINDOW, load

from goldenloop.metrics.burn import BURN_RULES, evaluate_slo, evaluate_slos
from goldenloop.metrics.config import MetricsConfigError, load_metrics_config
from goldenloop.metrics.slo import (
    SloConflict,
    SloError,
    SloSet,
    delete_slo,
    parse_objective,
    parse_slo,
    save_slo,
    stored_slos,
)
from goldenloop.store.base import Store

NOW = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)
#: (minutes before NOW, good turns, bad turns) for the burn-rate fixture.
SCHEDULE = [
    (2, 1, 1),  # last 5m: 1 of 2 bad
    (20, 3, 0),  # last 30m: 1 of 5 bad
    (45, 0, 5),  # last 1h: 6 of 10 bad
    (3 * 60, 10, 0),  # last 6h: 6 of 20 bad
    (2 * 24 * 60, 30, 0),  # last 3d: 6 of 50 bad
    (10 * 24 * 60, 50, 0),  # last 30d: 6 of 100 bad
]


def _latency_turns(store: Store) -> None:
    rows = []
    for minutes, good, bad in SCHEDULE:
        for i in range(good + bad):
            start = NOW - timedelta(minutes=minutes, seconds=i)
            rows.append({"trace_id": f"t{minutes}-{i}", "span_id": f"s{minutes}-{i}",
                         "session_id": f"sess{minutes}-{i}", "kind": "agent", "start_time": start,
                         "latency_ms": 9000.0 if i < bad else 200.0, "customer_tier": "enterprise"})  # fmt: skip
    store.insert_spans(span_batch(*rows))


def _latency_slo(period: str = "30d") -> dict[str, object]:
    return {"name": "tier1-latency", "objective": "90%", "period": period,
            "sli": {"kind": "latency", "threshold_ms": 8000, "filter": {"customer_tier": "enterprise"}}}  # fmt: skip


def test_burn_rates_budget_and_slow_burn_warning(store: Store) -> None:
    _latency_turns(store)
    status = evaluate_slo(store, parse_slo(_latency_slo()), now=NOW)
    assert (status.good, status.valid) == (94, 100)
    assert status.sli == pytest.approx(0.94)
    assert status.budget_remaining == pytest.approx(1 - 0.06 / 0.1)  # 0.4
    assert status.burn_rates == pytest.approx(
        {"5m": 0.5 / 0.1, "30m": 0.2 / 0.1, "1h": 0.6 / 0.1, "6h": 0.3 / 0.1, "3d": 0.12 / 0.1}
    )
    # 30-day thresholds: fast 14.4 (1h & 5m), medium 6 (6h & 30m), slow 1 (3d & 6h)
    assert status.alerts == ["slow"]
    assert status.status == "warning" and not status.freeze_experiments


def test_a_fast_burn_freezes_experiments(store: Store) -> None:
    _latency_turns(store)
    status = evaluate_slo(store, parse_slo(_latency_slo("1d")), now=NOW)
    # One day: 20 turns, 6 bad. Thresholds scale with the period: fast 0.48, medium 0.2.
    assert (status.good, status.valid) == (14, 20)
    assert status.budget_remaining == pytest.approx(1 - 0.3 / 0.1)
    assert status.alerts == ["fast", "medium", "slow"]
    assert status.status == "freeze" and status.freeze_experiments
    assert status.to_dict()["burn_thresholds"]["fast"] == pytest.approx(0.48)


def test_thresholds_follow_the_sre_workbook_for_thirty_days() -> None:
    period = timedelta(days=30)
    assert [round(r.threshold(period), 2) for r in BURN_RULES] == [14.4, 6.0, 1.0]


def test_an_exhausted_budget_freezes_experiments_without_a_burst(store: Store) -> None:
    rows = [{"trace_id": f"t{i}", "span_id": f"s{i}", "kind": "agent", "session_id": f"x{i}",
             "start_time": NOW - timedelta(days=5, minutes=i), "latency_ms": 9000.0 if i < 3 else 10.0}
            for i in range(10)]  # fmt: skip
    store.insert_spans(span_batch(*rows))
    slo = parse_slo(
        {"name": "x", "objective": 0.9, "sli": {"kind": "latency", "threshold_ms": 100}}
    )
    status = evaluate_slo(store, slo, now=NOW)
    assert status.budget_remaining == pytest.approx(1 - 0.3 / 0.1)
    assert status.alerts == [] and status.status == "exhausted" and status.freeze_experiments


def test_no_events_means_no_data(store: Store) -> None:
    status = evaluate_slo(store, parse_slo(_latency_slo()), now=NOW)
    assert status.status == "no_data" and status.sli is None and status.budget_remaining is None


@pytest.mark.parametrize(
    ("sli", "good", "valid"),
    [
        ({"kind": "judge", "judge": "answer_correctness"}, 1, 2),
        ({"kind": "judge", "min_score": 0.1}, 2, 2),
        ({"kind": "judge", "filter": {"locale": "de-DE"}}, 1, 1),
        ({"kind": "outcome"}, 1, 2),
        ({"kind": "outcome", "outcome": "refund_completed"}, 0, 1),
        ({"kind": "feedback"}, 3, 4),
        ({"kind": "success"}, 2, 3),
        ({"kind": "latency", "threshold_ms": 1500}, 2, 4),
        ({"kind": "latency", "threshold_ms": 100, "span_kind": "tool"}, 2, 4),
        ({"kind": "turn"}, 1, 4),  # T2 failed, T3 blank, T4 judge failed
        ({"kind": "turn", "checks": ["no_error"], "threshold_ms": 1500}, 2, 4),
        ({"kind": "ratio", "metric": "tool_error_rate"}, 3, 4),
        ({"kind": "ratio", "metric": "task_success_rate"}, 2, 3),
    ],
)  # fmt: skip
def test_every_sli_kind_counts_good_and_valid_events(
    store: Store, sli: dict[str, object], good: int, valid: int
) -> None:
    load(store)
    slo = parse_slo({"name": "s", "objective": "99%", "period": "2h", "sli": sli})
    status = evaluate_slo(store, slo, now=WINDOW.end)
    assert (status.good, status.valid) == (good, valid)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"objective": 0.9, "sli": {"kind": "feedback"}}, "name"),
        ({"name": "a b", "objective": 0.9, "sli": {"kind": "feedback"}}, "name"),
        ({"name": "a", "sli": {"kind": "feedback"}}, "objective"),
        ({"name": "a", "objective": "150%", "sli": {"kind": "feedback"}}, "objective"),
        ({"name": "a", "objective": 0.9, "sli": {"kind": "uptime"}}, "sli.kind"),
        ({"name": "a", "objective": 0.9, "sli": {"kind": "latency"}}, "threshold_ms"),
        ({"name": "a", "objective": 0.9, "sli": {"kind": "ratio", "metric": "turns"}}, "metric"),
        ({"name": "a", "objective": 0.9, "sli": {"kind": "feedback", "filter": {"colour": "x"}}}, "filter"),
        ({"name": "a", "objective": 0.9, "period": "soon", "sli": {"kind": "feedback"}}, "period"),
        ({"name": "a", "objective": 0.9, "sli": {"kind": "feedback"}, "owner": "me"}, "owner"),
    ],
)  # fmt: skip
def test_invalid_slos_name_the_bad_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(SloError, match=message):
        parse_slo(data)


def test_objectives_accept_fractions_and_percentages() -> None:
    assert parse_objective(0.95) == parse_objective("95%") == parse_objective(95) == 0.95
    assert parse_objective("99.9%") == pytest.approx(0.999)


def test_api_slos_are_stored_replaced_and_deleted(store: Store) -> None:
    file_slo = parse_slo({"name": "from-file", "objective": 0.9, "sli": {"kind": "feedback"}})
    api_slo = parse_slo({"name": "api", "objective": 0.9, "sli": {"kind": "success"}}, origin="api")
    assert save_slo(store, api_slo, [file_slo]) is True
    assert save_slo(store, api_slo, [file_slo]) is False  # replaced
    assert [s.name for s in stored_slos(store)] == ["api"]
    assert [s.name for s in SloSet([file_slo]).all(store)] == ["from-file", "api"]
    clash = parse_slo({"name": "from-file", "objective": 0.5, "sli": {"kind": "feedback"}})
    with pytest.raises(SloConflict):
        save_slo(store, clash, [file_slo])
    assert delete_slo(store, "api", [file_slo]) is True
    assert delete_slo(store, "api", [file_slo]) is False
    assert evaluate_slos(store, SloSet([]).all(store)) == []


def test_config_file_with_slos_signals_and_prometheus(tmp_path: Path) -> None:
    path = tmp_path / "metrics.yaml"
    path.write_text(
        "slos:\n"
        "  - name: refund-grounded\n    objective: 95%\n    period: 28d\n"
        "    sli: {kind: judge, judge: grounded_citation, filter: {project: refund-assistant}}\n"
        "signals:\n  circuit_breaker_attribute: app.breaker.open\n  judge_threshold: 0.7\n"
        "prometheus:\n  labels: [project, tier]\n  window: 15m\n",
        encoding="utf-8",
    )
    config = load_metrics_config(path)
    assert config.slos[0].period == timedelta(days=28) and config.slos[0].objective == 0.95
    assert config.signals.circuit_breaker_attribute == "app.breaker.open"
    assert config.prometheus.labels == ("project", "customer_tier")
    assert config.prometheus.window == timedelta(minutes=15)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slos: {}\n", "expected a list"),
        ("slos:\n  - {name: a, objective: 0.9, sli: {kind: nope}}\n", "slo 'a'.sli.kind"),
        ("signals:\n  colour: red\n", "signals.colour"),
        ('signals:\n  circuit_breaker_attribute: "x\'; drop table spans"\n', "may only contain"),
        ("prometheus:\n  labels: [colour]\n", "colour"),
        ("dashboards: []\n", "unknown section"),
        ("slos: [\n", "not valid YAML"),
    ],
)
def test_bad_config_files_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MetricsConfigError, match=message) as info:
        load_metrics_config(path)
    assert str(path) in str(info.value)


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MetricsConfigError, match="cannot read"):
        load_metrics_config(tmp_path / "nope.yaml")
