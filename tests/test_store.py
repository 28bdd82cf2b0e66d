"""Store behaviour, run on DuckDB and on a real PostgreSQL server (``store`` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from conftest import BASE_TIME, micros, span_batch, span_row

from goldenloop.model import SPAN_COLUMN_NAMES, Feedback, Outcome, SessionFilter, SpanBatch
from goldenloop.store.base import Store


def _session(session_id: str, *, start: datetime, **fields: object) -> SpanBatch:
    """One single-span turn in ``session_id`` with extra span fields."""
    return span_batch(
        {
            "trace_id": f"trace-{session_id}",
            "span_id": f"span-{session_id}",
            "session_id": session_id,
            "start_time": start,
            **fields,
        }
    )


def _ids(store: Store, flt: SessionFilter, **kwargs: int) -> list[str]:
    return [s.session_id for s in store.list_sessions(flt, **kwargs)]


# -- spans -----------------------------------------------------------------------------
def test_span_round_trips_with_all_normalized_fields(store: Store) -> None:
    start = BASE_TIME + timedelta(microseconds=123_457)
    row = span_row(
        project="shop",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        parent_id="a3ce929d0e0e4736",
        session_id="sess-42",
        message_id="msg-7",
        name="tool: lookup_order",
        kind="tool",
        start_time=start,
        end_time=start + timedelta(milliseconds=250, microseconds=1),
        latency_ms=250.001,
        status="error",
        error_type="TimeoutError",
        status_message="order service timed out after 250 ms (100% of budget?)",
        model="claude-3-5-sonnet",
        provider="anthropic",
        input_tokens=1234,
        output_tokens=56,
        cost_usd=0.012345,
        stop_reason="tool_use",
        prompt_hash="p-ff00",
        model_version="claude-3-5-sonnet-20241022",
        feature_flags={"new_ranker": "on", "beta": "off"},
        customer_tier="enterprise",
        locale="de-DE",
        index_version="idx-2024-06",
        user_id="user-9",
        tool_name="lookup_order",
        tool_args='{"order_id": "A-1"}',
        score=0.75,
        input_text="Wo ist meine Bestellung? 100% dringend",
        output_text="Ihre Bestellung ist unterwegs 🚚",
        attributes={"http.status_code": 504, "retry": True, "tags": ["a", "b"]},
        resource={"service.name": "shop-api", "deployment.environment": "prod"},
        events=[{"name": "exception", "attributes": {"exception.type": "TimeoutError"}}],
        ingested_at=start + timedelta(seconds=2),
    )
    assert store.insert_spans(span_batch(row)) == 1

    [span] = store.get_trace("4bf92f3577b34da6a3ce929d0e0e4736")

    assert span.start_time == start
    assert span.start_time.tzinfo is not None and span.start_time.utcoffset() == timedelta(0)
    assert span.end_time == start + timedelta(milliseconds=250, microseconds=1)
    assert span.ingested_at == start + timedelta(seconds=2)
    assert span.feature_flags == {"new_ranker": "on", "beta": "off"}
    assert span.attributes == {"http.status_code": 504, "retry": True, "tags": ["a", "b"]}
    assert span.resource == {"service.name": "shop-api", "deployment.environment": "prod"}
    assert span.events == [{"name": "exception", "attributes": {"exception.type": "TimeoutError"}}]
    scalar = {
        k: v
        for k, v in row.items()
        if k not in {"start_time", "end_time", "ingested_at"}
        and k not in {"feature_flags", "attributes", "resource", "events"}
    }
    assert {k: getattr(span, k) for k in scalar} == scalar


def test_optional_span_fields_come_back_as_none_and_empty_json(store: Store) -> None:
    required = {"project", "trace_id", "span_id", "name", "kind", "start_time", "latency_ms"}
    nulls = {name: None for name in SPAN_COLUMN_NAMES if name not in required | {"status"}}
    store.insert_spans(span_batch(nulls))

    [span] = store.get_trace("trace-1")

    assert span.model is None and span.input_tokens is None and span.ingested_at is None
    assert span.feature_flags == {} and span.attributes == {} and span.events == []


def test_get_trace_orders_spans_by_start_time(store: Store) -> None:
    store.insert_spans(
        span_batch(
            {"span_id": "late", "start_time": BASE_TIME + timedelta(seconds=2)},
            {"span_id": "early", "start_time": BASE_TIME},
            {"span_id": "middle", "start_time": BASE_TIME + timedelta(seconds=1)},
        )
    )
    assert [s.span_id for s in store.get_trace("trace-1")] == ["early", "middle", "late"]
    assert store.get_trace("no-such-trace") == []


def test_insert_returns_number_of_new_spans_and_count_spans_agrees(store: Store) -> None:
    assert store.insert_spans(SpanBatch()) == 0
    batch = span_batch(*({"span_id": f"s{i}", "trace_id": f"t{i % 7}"} for i in range(500)))
    assert store.insert_spans(batch) == 500
    assert store.count_spans() == 500


def test_retried_batch_is_stored_once(store: Store) -> None:
    batch = span_batch({"span_id": "a"}, {"span_id": "b", "parent_id": "a"})
    assert store.insert_spans(batch) == 2

    assert store.insert_spans(batch) == 0
    assert store.count_spans() == 2


def test_partly_retried_batch_stores_only_new_spans(store: Store) -> None:
    store.insert_spans(span_batch({"span_id": "a"}, {"span_id": "b"}))

    assert store.insert_spans(span_batch({"span_id": "b"}, {"span_id": "c"})) == 1
    assert sorted(s.span_id for s in store.get_trace("trace-1")) == ["a", "b", "c"]


def test_duplicates_within_one_batch_are_stored_once(store: Store) -> None:
    batch = span_batch({"span_id": "a"}, {"span_id": "a"}, {"span_id": "b"}, {"span_id": "a"})

    assert store.insert_spans(batch) == 2
    assert store.count_spans() == 2


def test_same_span_id_in_different_traces_are_different_spans(store: Store) -> None:
    batch = span_batch({"trace_id": "t1", "span_id": "a"}, {"trace_id": "t2", "span_id": "a"})
    assert store.insert_spans(batch) == 2


def test_insert_without_dedupe_stores_a_fresh_batch(store: Store) -> None:
    batch = span_batch(*({"span_id": f"s{i}"} for i in range(10)))
    assert store.insert_spans(batch, dedupe=False) == 10
    assert store.count_spans() == 10


def test_fetch_and_execute_translate_placeholders_but_not_literals(store: Store) -> None:
    store.insert_spans(span_batch({"span_id": "a", "name": "chat?"}, {"span_id": "b"}))
    store.execute("UPDATE spans SET status_message = ? WHERE span_id = ?", ("50% done", "b"))

    rows = store.fetch(
        "SELECT span_id, '?%', status_message FROM spans "
        "WHERE name LIKE 'ch%' AND trace_id = ? ORDER BY span_id",
        ("trace-1",),
    )
    assert rows == [("a", "?%", None), ("b", "?%", "50% done")]
    assert store.fetch("SELECT count(*) FROM spans WHERE name = 'chat?'") == [(1,)]


# -- sessions --------------------------------------------------------------------------
def _agent_session() -> SpanBatch:
    """Two turns. Wrappers (agent/chain) repeat their children's usage; tools have none."""
    t0 = BASE_TIME
    t1 = BASE_TIME + timedelta(minutes=1)
    return span_batch(
        # turn 1: agent -> llm, tool, embedding, judge
        {"trace_id": "tr-1", "span_id": "root-1", "kind": "agent", "name": "agent run",
         "message_id": "m1", "start_time": t0, "latency_ms": 3000.0, "input_tokens": 999,
         "output_tokens": 999, "cost_usd": 9.0, "model": None, "stop_reason": None,
         "input_text": "Where is my order?", "output_text": "It ships tomorrow."},
        {"trace_id": "tr-1", "span_id": "llm-1", "parent_id": "root-1", "kind": "llm",
         "start_time": t0 + timedelta(milliseconds=10), "input_tokens": 100,
         "output_tokens": 20, "cost_usd": 0.001, "model": "gpt-4o", "stop_reason": "tool_calls"},
        {"trace_id": "tr-1", "span_id": "tool-1", "parent_id": "root-1", "kind": "tool",
         "start_time": t0 + timedelta(milliseconds=20), "input_tokens": None,
         "output_tokens": None, "cost_usd": None, "tool_name": "lookup_order"},
        {"trace_id": "tr-1", "span_id": "emb-1", "parent_id": "root-1", "kind": "embedding",
         "start_time": t0 + timedelta(milliseconds=30), "input_tokens": 8,
         "output_tokens": 0, "cost_usd": 0.0001, "model": None, "stop_reason": None},
        {"trace_id": "tr-1", "span_id": "judge-1", "parent_id": "root-1", "kind": "judge",
         "start_time": t0 + timedelta(milliseconds=40), "input_tokens": 50,
         "output_tokens": 5, "cost_usd": 0.0005, "model": None, "stop_reason": None},
        # turn 2: chain -> llm that fails
        {"trace_id": "tr-2", "span_id": "root-2", "kind": "chain", "name": "chain run",
         "message_id": "m2", "start_time": t1, "latency_ms": 800.0, "input_tokens": 500,
         "output_tokens": 500, "cost_usd": 5.0},
        {"trace_id": "tr-2", "span_id": "llm-2", "parent_id": "root-2", "kind": "llm",
         "start_time": t1 + timedelta(milliseconds=5), "latency_ms": 700.0, "status": "error",
         "error_type": "RateLimitError", "input_tokens": 40, "output_tokens": 0,
         "cost_usd": 0.0002},
    )  # fmt: skip


def test_get_session_builds_turns_and_totals_from_billable_spans_only(store: Store) -> None:
    store.insert_spans(_agent_session())

    detail = store.get_session("sess-1")

    assert detail is not None
    assert [t.trace_id for t in detail.turns] == ["tr-1", "tr-2"]
    first, second = detail.turns
    assert (first.message_id, first.name, first.span_count) == ("m1", "agent run", 5)
    assert (first.input_tokens, first.output_tokens) == (158, 25)
    assert first.cost_usd == pytest.approx(0.0016)
    assert first.model == "gpt-4o" and first.stop_reason == "tool_calls"
    assert first.input_text == "Where is my order?" and first.latency_ms == 3000.0
    assert (second.input_tokens, second.output_tokens, second.error_count) == (40, 0, 1)
    assert second.cost_usd == pytest.approx(0.0002)

    summary = detail.summary
    assert (summary.session_id, summary.project) == ("sess-1", "demo")
    assert (summary.turn_count, summary.span_count, summary.error_count) == (2, 7, 1)
    assert (summary.input_tokens, summary.output_tokens) == (198, 25)
    assert summary.cost_usd == pytest.approx(0.0018)
    assert summary.start_time == BASE_TIME
    assert summary.start_time.tzinfo is not None
    assert len(detail.spans) == 7


def test_list_sessions_totals_match_get_session(store: Store) -> None:
    store.insert_spans(_agent_session())

    [listed] = store.list_sessions(SessionFilter())
    detail = store.get_session("sess-1")

    assert detail is not None
    expected = detail.summary
    assert (listed.turn_count, listed.span_count, listed.error_count) == (2, 7, 1)
    assert (listed.input_tokens, listed.output_tokens) == (
        expected.input_tokens,
        expected.output_tokens,
    )
    assert listed.cost_usd == pytest.approx(expected.cost_usd)
    assert (listed.start_time, listed.end_time) == (expected.start_time, expected.end_time)
    assert isinstance(listed.input_tokens, int) and isinstance(listed.cost_usd, float)


def test_get_session_of_unknown_id_is_none(store: Store) -> None:
    assert store.get_session("nope") is None


def test_list_sessions_filters_by_time_range(store: Store) -> None:
    for i, sid in enumerate(["s-old", "s-mid", "s-new"]):
        store.insert_spans(_session(sid, start=BASE_TIME + timedelta(hours=i)))

    since = BASE_TIME + timedelta(minutes=30)
    until = BASE_TIME + timedelta(hours=2)  # exclusive
    assert _ids(store, SessionFilter(since=since)) == ["s-new", "s-mid"]
    assert _ids(store, SessionFilter(until=until)) == ["s-mid", "s-old"]
    assert _ids(store, SessionFilter(since=since, until=until)) == ["s-mid"]
    # aware datetimes in any zone are compared as UTC
    tz_plus_two = since.astimezone(timezone(timedelta(hours=2)))
    assert _ids(store, SessionFilter(since=tz_plus_two)) == ["s-new", "s-mid"]


def test_list_sessions_filters_by_project(store: Store) -> None:
    store.insert_spans(_session("a", start=BASE_TIME, project="shop"))
    store.insert_spans(_session("b", start=BASE_TIME, project="support"))

    assert _ids(store, SessionFilter(project="shop")) == ["a"]
    assert _ids(store, SessionFilter(project="missing")) == []


def test_list_sessions_filters_by_slice_dimension(store: Store) -> None:
    store.insert_spans(_session("de", start=BASE_TIME, locale="de-DE", customer_tier="pro"))
    store.insert_spans(_session("en", start=BASE_TIME, locale="en-US", customer_tier="pro"))
    store.insert_spans(_session("fr", start=BASE_TIME, locale="fr-FR", customer_tier="free"))

    assert _ids(store, SessionFilter(dimensions=(("locale", "de-DE"),))) == ["de"]
    both = SessionFilter(dimensions=(("customer_tier", "pro"), ("locale", "en-US")))
    assert _ids(store, both) == ["en"]


def test_list_sessions_matches_sessions_where_any_span_matches(store: Store) -> None:
    batch = _session("s1", start=BASE_TIME)
    child = {"trace_id": "trace-s1", "span_id": "child", "parent_id": "span-s1"}
    batch.extend(span_batch({**child, "session_id": "s1", "model": "special-model"}))
    store.insert_spans(batch)
    store.insert_spans(_session("s2", start=BASE_TIME))

    [summary] = store.list_sessions(SessionFilter(dimensions=(("model", "special-model"),)))
    assert summary.session_id == "s1"
    assert summary.span_count == 2  # the whole session is summarized, not just matches


def test_list_sessions_filters_by_raw_attribute(store: Store) -> None:
    store.insert_spans(_session("a", start=BASE_TIME, attributes={"some.key": "v", "n": 1}))
    store.insert_spans(_session("b", start=BASE_TIME, attributes={"some.key": "w"}))
    store.insert_spans(_session("c", start=BASE_TIME, attributes={}))

    assert _ids(store, SessionFilter(attributes=(("some.key", "v"),))) == ["a"]
    assert _ids(store, SessionFilter(attributes=(("n", "1"),))) == ["a"]
    assert _ids(store, SessionFilter(attributes=(("missing.key", "v"),))) == []


def test_list_sessions_filters_by_feature_flag(store: Store) -> None:
    store.insert_spans(_session("on", start=BASE_TIME, feature_flags={"new_ranker": "on"}))
    store.insert_spans(_session("off", start=BASE_TIME, feature_flags={"new_ranker": "off"}))
    store.insert_spans(_session("none", start=BASE_TIME))

    assert _ids(store, SessionFilter(feature_flags=(("new_ranker", "on"),))) == ["on"]


def test_list_sessions_paginates_deterministically(store: Store) -> None:
    # s0..s5: two groups share an end time, so the session_id tie-break matters.
    for i in range(6):
        store.insert_spans(_session(f"s{i}", start=BASE_TIME + timedelta(minutes=i // 2)))

    everything = _ids(store, SessionFilter(), limit=100)
    assert everything == ["s4", "s5", "s2", "s3", "s0", "s1"]
    pages = [_ids(store, SessionFilter(), limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert pages == [["s4", "s5"], ["s2", "s3"], ["s0", "s1"], []]
    assert _ids(store, SessionFilter(), limit=2, offset=2) == ["s2", "s3"]


def test_spans_without_session_are_not_listed(store: Store) -> None:
    store.insert_spans(span_batch({"session_id": None}))
    assert store.list_sessions(SessionFilter()) == []


def test_unknown_filter_dimension_raises_value_error_naming_it(store: Store) -> None:
    with pytest.raises(ValueError, match="no_such_dimension"):
        store.list_sessions(SessionFilter(dimensions=(("no_such_dimension", "x"),)))
    with pytest.raises(ValueError, match="project; drop table spans"):
        store.list_sessions(SessionFilter(dimensions=(("project; drop table spans", "x"),)))


# -- feedback and outcomes ---------------------------------------------------------------
def _feedback(id: str, **fields: object) -> Feedback:
    values: dict[str, object] = {
        "id": id, "project": "demo", "session_id": "sess-1", "message_id": "msg-1",
        "rating": "down", "category": "wrong", "comment": "That order number is wrong",
        "prompt_hash": "p-abc123", "model_hash": "gpt-4o-mini", "user_id": "user-1",
        "created_at": BASE_TIME + timedelta(minutes=1),
    }  # fmt: skip
    values.update(fields)
    return Feedback(**values)  # type: ignore[arg-type]


def _outcome(id: str, **fields: object) -> Outcome:
    values: dict[str, object] = {
        "id": id, "project": "demo", "session_id": "sess-1", "message_id": None,
        "name": "checkout", "success": True, "value": 42.5,
        "attributes": {"currency": "EUR", "items": 3},
        "created_at": BASE_TIME + timedelta(minutes=2),
    }  # fmt: skip
    values.update(fields)
    return Outcome(**values)  # type: ignore[arg-type]


def test_feedback_is_inserted_idempotently_and_shown_in_session(store: Store) -> None:
    store.insert_spans(span_batch({}))
    up = _feedback("fb-2", rating="up", category=None, comment=None,
                   created_at=BASE_TIME + timedelta(minutes=3))  # fmt: skip
    assert store.insert_feedback([_feedback("fb-1"), up]) == 2
    assert store.insert_feedback([_feedback("fb-1"), _feedback("fb-1")]) == 0
    assert store.insert_feedback([]) == 0

    detail = store.get_session("sess-1")

    assert detail is not None
    assert detail.feedback == [_feedback("fb-1"), up]
    assert detail.feedback[0].created_at.tzinfo is not None


def test_outcomes_are_inserted_idempotently_and_shown_in_session(store: Store) -> None:
    store.insert_spans(span_batch({}))
    failed = _outcome("oc-2", success=False, value=None, attributes={},
                      created_at=BASE_TIME + timedelta(minutes=5))  # fmt: skip
    assert store.insert_outcomes([_outcome("oc-1"), failed, _outcome("oc-1")]) == 2
    assert store.insert_outcomes([_outcome("oc-1")]) == 0

    detail = store.get_session("sess-1")

    assert detail is not None
    assert detail.outcomes == [_outcome("oc-1"), failed]
    assert detail.outcomes[0].success is True and detail.outcomes[1].success is False


def test_feedback_with_aware_non_utc_time_is_stored_as_utc(store: Store) -> None:
    store.insert_spans(span_batch({}))
    local = datetime(2024, 6, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    store.insert_feedback([_feedback("fb-tz", created_at=local)])

    detail = store.get_session("sess-1")

    assert detail is not None
    assert detail.feedback[0].created_at == datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    assert micros(detail.feedback[0].created_at) == micros(local)
