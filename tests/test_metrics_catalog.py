"""Every built-in metric against hand-computed values, on DuckDB and PostgreSQL, from
the turn facts and from the spans (the fallback path) alike."""

from __future__ import annotations

import math

import pytest
from metrics_data import EXPECTED, WINDOW, load

from goldenloop.metrics import METRICS, MetricsQuery, compute_metrics
from goldenloop.metrics import compute as compute_module
from goldenloop.metrics.catalog import MetricDef, format_value, register_metric, resolve_metrics
from goldenloop.store.base import Store


def _mismatches(store: Store) -> list[str]:
    result = compute_metrics(store, MetricsQuery(WINDOW, tuple(EXPECTED)))
    assert len(result.rows) == 1
    values = result.rows[0].values
    wrong = []
    for name, expected in EXPECTED.items():
        got = values[name].value
        if got is None or not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12):
            wrong.append(f"{name}: expected {expected!r}, got {got!r}")
    return wrong


def test_every_builtin_metric_matches_its_hand_computed_value(store: Store) -> None:
    load(store)
    assert _mismatches(store) == []


def test_metrics_from_spans_equal_metrics_from_turn_facts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(store)
    monkeypatch.setattr(compute_module, "ensure_turn_facts", lambda store, env: False)
    assert _mismatches(store) == []


def test_every_registered_builtin_metric_has_a_hand_computed_fixture() -> None:
    assert sorted(METRICS) == sorted(EXPECTED)


def test_sample_sizes_count_the_population_of_each_metric(store: Store) -> None:
    load(store)
    values = compute_metrics(store, MetricsQuery(WINDOW, tuple(EXPECTED))).rows[0].values
    assert values["task_success_rate"].n == 3  # sessions with a verdict
    assert values["feedback_success_rate"].n == 4
    assert values["tool_error_rate"].n == 4  # tool calls
    assert values["turn_latency_p95"].n == 4
    assert (values["tool_error_rate"].numerator, values["tool_error_rate"].denominator) == (1, 4)


def test_an_empty_window_gives_zero_counts_and_no_rates(store: Store) -> None:
    result = compute_metrics(
        store, MetricsQuery(WINDOW, ("turns", "task_success_rate", "cost_usd"))
    )
    values = result.rows[0].values if result.rows else {}
    assert all(v.n == 0 for v in values.values())


def test_user_metrics_register_like_builtins(store: Store) -> None:
    load(store)
    metric = register_metric(
        MetricDef(
            "slow_turn_rate",
            "Turns over 1.5 s",
            "ratio",
            "turns",
            "rate",
            expr="root_latency_ms > 1500",
            needs=("root_latency_ms",),
        )  # fmt: skip
    )
    try:
        result = compute_metrics(store, MetricsQuery(WINDOW, ("slow_turn_rate",)))
        assert result.rows[0].values["slow_turn_rate"].value == pytest.approx(2 / 4)
    finally:
        METRICS.pop(metric.name)


def test_unknown_metric_names_list_the_catalog() -> None:
    with pytest.raises(KeyError, match="known metrics: .*task_success_rate"):
        resolve_metrics(["task_sucess_rate"])


def test_a_metric_definition_must_be_consistent() -> None:
    with pytest.raises(ValueError, match="quantile"):
        MetricDef("x", "X", "ms", "turns", "quantile", expr="root_latency_ms")
    with pytest.raises(ValueError, match="denominator"):
        MetricDef("x", "X", "ratio", "turns", "ratio", expr="tool_errors")
    with pytest.raises(ValueError, match="unknown turn features"):
        MetricDef("x", "X", "ratio", "turns", "rate", needs=("nope",))


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [(0.934, "ratio", "93.4%"), (1234.4, "ms", "1,234 ms"), (0.0123, "usd", "$0.0123"),
     (1234.0, "count", "1,234"), (None, "ratio", "–"), (1.875, "calls", "1.88")],
)  # fmt: skip
def test_values_are_formatted_for_people(value: float | None, unit: str, text: str) -> None:
    assert format_value(value, unit) == text
