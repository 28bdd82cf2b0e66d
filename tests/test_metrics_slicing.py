"""Grouping, filtering and bucketing metrics by any dimension (both stores)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import span_batch
from metrics_data import T0, WINDOW, load

from goldenloop.metrics import MetricsQuery, compute_metrics, parse_dimensions, parse_filters
from goldenloop.metrics import compute as compute_module
from goldenloop.metrics.compute import View, compute_views
from goldenloop.metrics.dimensions import DimensionError, parse_dimension, parse_filter
from goldenloop.store.base import Store


def _query(metrics: str, by: str = "", where: tuple[str, ...] = (), **kw: object) -> MetricsQuery:
    dims = tuple(parse_dimensions([by])) if by else ()
    return MetricsQuery(WINDOW, tuple(metrics.split(",")), dims, tuple(parse_filters(where)), **kw)  # type: ignore[arg-type]


def _table(
    store: Store, query: MetricsQuery, metric: str
) -> dict[tuple[str | None, ...], float | None]:
    return {row.dims: row.values[metric].value for row in compute_metrics(store, query).rows}


def test_group_by_locale_splits_turns_sessions_and_feedback(store: Store) -> None:
    load(store)
    query = _query("turns,turn_error_rate,task_success_rate,feedback_success_rate", "locale")
    rows = {r.dims: r.values for r in compute_metrics(store, query).rows}
    assert rows[("de-DE",)]["turns"].value == 2 and rows[("en-US",)]["turns"].value == 2
    assert rows[("de-DE",)]["turn_error_rate"].value == pytest.approx(0.5)
    assert rows[("en-US",)]["turn_error_rate"].value == 0
    assert rows[("de-DE",)]["task_success_rate"].value == 0  # S1 failed
    assert rows[("en-US",)]["task_success_rate"].value == 1  # S2, S3
    assert rows[("de-DE",)]["feedback_success_rate"].value == 0
    assert rows[("en-US",)]["feedback_success_rate"].value == 1


def test_group_by_feature_flag_and_span_attribute(store: Store) -> None:
    load(store)
    assert _table(store, _query("turns", "flag.eu_banner"), "turns") == {("on",): 2, ("off",): 2}
    errors = _table(store, _query("turn_error_rate", "attr.intent"), "turn_error_rate")
    assert errors == {("refund",): pytest.approx(1 / 3), ("search",): 0}


def test_filters_equal_not_equal_and_absent(store: Store) -> None:
    load(store)
    only_us = compute_metrics(store, _query("turns,task_success_rate", where=("locale=en-US",)))
    assert only_us.rows[0].values["turns"].value == 2
    assert only_us.rows[0].values["task_success_rate"].value == 1
    not_us = compute_metrics(store, _query("turns", where=("locale!=en-US",)))
    assert not_us.rows[0].values["turns"].value == 2
    flagged = compute_metrics(store, _query("turns", where=("flag.eu_banner=on", "tier=free")))
    assert flagged.rows[0].values["turns"].value == 2
    no_index = compute_metrics(store, _query("turns", where=("index_version=(none)",)))
    assert no_index.rows[0].values["turns"].value == 4


def test_span_metrics_by_span_dimensions_count_each_span(store: Store) -> None:
    load(store)
    by_tool = _table(store, _query("tool_error_rate", "tool_name"), "tool_error_rate")
    assert by_tool == {("escalate_to_human",): 0, ("lookup",): 0.5, ("refund",): 0, (None,): None}
    by_kind = _table(store, _query("span_latency_p50", "kind"), "span_latency_p50")
    assert by_kind[("tool",)] == pytest.approx(125.0)  # 50 100 150 200
    assert by_kind[("guardrail",)] == pytest.approx(50.0)  # 40 60
    by_model = _table(store, _query("cost_usd", "model"), "cost_usd")
    assert by_model[("m-a",)] == pytest.approx(0.03)
    assert by_model[("m-j",)] == pytest.approx(0.003)


def test_spans_without_a_context_dimension_take_their_turns_value(store: Store) -> None:
    load(store)
    # Tool spans carry no prompt hash; they count under their turn's (root's) prompt.
    by_prompt = _table(store, _query("tool_error_rate", "prompt_hash,tool_name"), "tool_error_rate")
    assert by_prompt[("p1", "lookup")] == 0.5
    assert by_prompt[("p2", "escalate_to_human")] == 0


def test_hourly_buckets_are_filled_and_totals_come_from_the_same_scan(store: Store) -> None:
    load(store)
    result = compute_metrics(store, _query("turns,turn_latency_p50", bucket="hour", totals=True))
    series = result.series("turns")
    assert series == [(T0, 3.0), (T0 + timedelta(hours=1), 1.0)]
    assert result.value("turns").value == 4
    assert result.value("turn_latency_p50").value == pytest.approx(1500.0)
    minute = compute_metrics(store, _query("turns", bucket="minute"))
    assert len(minute.series("turns")) == 120
    assert sum(v or 0 for _, v in minute.series("turns")) == 4


def test_several_groupings_in_one_pass_match_separate_queries(store: Store) -> None:
    load(store)
    metrics = ("turns", "task_success_rate", "turn_latency_p95", "feedback_success_rate")
    locale, tier = parse_dimension("locale"), parse_dimension("tier")
    views = [View((), "hour"), View(()), View((locale,)), View((tier,))]
    together = compute_views(store, WINDOW, metrics, views)
    for view, result in zip(views, together, strict=True):
        alone = compute_metrics(store, MetricsQuery(WINDOW, metrics, view.by, (), view.bucket))
        assert [
            (r.bucket, r.dims, {k: v.value for k, v in r.values.items()}) for r in result.rows
        ] == [(r.bucket, r.dims, {k: v.value for k, v in r.values.items()}) for r in alone.rows]


def test_a_session_counts_all_of_its_turns_even_after_the_window(store: Store) -> None:
    load(store)
    late = {"trace_id": "T5", "span_id": "T5-root", "session_id": "S3", "kind": "agent",
            "start_time": T0 + timedelta(hours=2, minutes=10), "cost_usd": None,
            "locale": "en-US", "customer_tier": "pro"}  # fmt: skip
    late_llm = {**late, "span_id": "T5-a", "parent_id": "T5-root", "kind": "llm", "cost_usd": 1.0}
    store.insert_spans(span_batch(late, late_llm))
    result = compute_metrics(store, _query("cost_per_session,cost_usd,turns"))
    values = result.rows[0].values
    assert values["turns"].value == 4  # T5 starts after the window
    assert values["cost_usd"].value == pytest.approx(0.068)
    assert values["cost_per_session"].value == pytest.approx((0.068 + 1.0) / 3)


def test_late_spans_update_their_turn(store: Store) -> None:
    load(store)
    before = compute_metrics(store, _query("tool_calls_per_turn")).rows[0].values
    late_tool = {"trace_id": "T4", "span_id": "T4-late", "parent_id": "T4-root", "kind": "tool",
                 "session_id": "S3", "start_time": T0 + timedelta(hours=1, seconds=5),
                 "tool_name": "lookup", "tool_args": "{}", "cost_usd": None,
                 "locale": "en-US", "customer_tier": "pro"}  # fmt: skip
    store.insert_spans(span_batch(late_tool))
    after = compute_metrics(store, _query("tool_calls_per_turn")).rows[0].values
    assert before["tool_calls_per_turn"].value == 1.0
    assert after["tool_calls_per_turn"].value == 1.25


def test_slices_from_spans_equal_slices_from_facts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(store)
    query = _query("turns,task_success_rate,feedback_success_rate,cost_per_session,turn_latency_p50",
                   "flag.eu_banner", where=("prompt_hash!=p9",))  # fmt: skip

    def flat(q: MetricsQuery) -> list[object]:
        return [
            (r.dims, {k: v.value for k, v in r.values.items()})
            for r in compute_metrics(store, q).rows
        ]

    with_facts = flat(query)
    monkeypatch.setattr(compute_module, "ensure_turn_facts", lambda store, env: False)
    assert flat(query) == with_facts


@pytest.mark.parametrize("text", ["colour", "attr.", "attr.bad key", "flag.x'y"])
def test_bad_dimensions_are_rejected_with_their_name(text: str) -> None:
    with pytest.raises(DimensionError, match="dimension|name"):
        parse_dimension(text)


def test_filters_need_an_equals_sign() -> None:
    with pytest.raises(DimensionError, match="DIM=VALUE"):
        parse_filter("locale")
    assert str(parse_filter("tier!=free")) == "customer_tier!=free"
