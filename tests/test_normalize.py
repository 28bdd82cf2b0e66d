"""RawSpan → span columns: every naming convention, derived fields and validation."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from goldenloop.config import Settings
from goldenloop.ingest.normalize import IngestLimits, InvalidSpans, normalize_spans
from goldenloop.ingest.raw import STATUS_ERROR, STATUS_OK, RawEvent, RawSpan
from goldenloop.model import SPAN_COLUMN_NAMES
from goldenloop.pricing import Price, PriceTable
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

NOW_US = 1_750_000_000_000_000  # 2025-06-15
START_NS = NOW_US * 1000 - 60 * 10**9  # a minute ago
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT = "00f067aa0ba902b7"


def raw(
    attributes: dict[str, Any] | None = None,
    *,
    trace: str = TRACE,
    span: str | None = None,
    parent: str | None = None,
    name: str = "op",
    events: list[RawEvent] | None = None,
    resource: dict[str, Any] | None = None,
    status: int = 0,
    status_message: str = "",
    start_ns: int = START_NS,
    duration_ns: int = 250_000_000,
) -> RawSpan:
    return RawSpan(
        trace_id=trace,
        span_id=span or secrets.token_hex(8),
        parent_span_id=parent,
        name=name,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration_ns,
        attributes=attributes or {},
        resource={"service.name": "svc"} if resource is None else resource,
        events=events or [],
        status_code=status,
        status_message=status_message,
    )


def normalize(*spans: RawSpan, **kwargs: Any) -> list[dict[str, Any]]:
    kwargs.setdefault("default_project", "default")
    kwargs.setdefault("prices", PriceTable())
    kwargs.setdefault("now_us", NOW_US)
    return normalize_spans(spans, **kwargs).rows()


def one(attributes: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    (row,) = normalize(raw(attributes, **kwargs))
    return row


# -- basic columns ---------------------------------------------------------------------------


def test_a_row_has_every_span_column_with_times_in_microseconds() -> None:
    row = one(span="ABCDEF0123456789", trace=TRACE.upper(), parent="00F067AA0BA902B7")
    assert set(row) == set(SPAN_COLUMN_NAMES)
    assert row["trace_id"] == TRACE  # ids are lower-cased
    assert row["span_id"] == "abcdef0123456789"
    assert row["parent_id"] == ROOT
    assert row["start_time"] == START_NS // 1000
    assert row["end_time"] == (START_NS + 250_000_000) // 1000
    assert row["latency_ms"] == 250.0
    assert row["ingested_at"] == NOW_US
    assert row["status"] == "ok"
    assert row["kind"] == "other"
    assert row["feature_flags"] == "{}"
    assert row["events"] == "[]"
    assert json.loads(row["resource"]) == {"service.name": "svc"}


def test_status_error_sets_status_and_keeps_the_message() -> None:
    row = one(status=STATUS_ERROR, status_message="upstream timed out")
    assert (row["status"], row["status_message"]) == ("error", "upstream timed out")
    assert one(status=STATUS_OK)["status"] == "ok"
    assert one()["status_message"] is None


# -- OTel GenAI ------------------------------------------------------------------------------


def test_genai_attributes_map_to_columns() -> None:
    row = one(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 500,
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.conversation.id": "conv-1",
            "gen_ai.prompt.id": "prompt-7",
            "gen_ai.input.messages": [{"role": "user", "content": "hi"}],
            "gen_ai.output.messages": [{"role": "assistant", "content": "hello"}],
        }
    )
    assert row["kind"] == "llm"
    assert row["provider"] == "openai"
    assert row["model"] == "gpt-4o"
    assert row["model_version"] == "gpt-4o"
    assert (row["input_tokens"], row["output_tokens"]) == (1000, 500)
    assert row["stop_reason"] == "stop"
    assert row["session_id"] == "conv-1"
    assert row["prompt_hash"] == "prompt-7"
    assert json.loads(row["input_text"]) == [{"role": "user", "content": "hi"}]
    assert json.loads(row["output_text"]) == [{"role": "assistant", "content": "hello"}]
    # Message bodies move to their columns instead of being repeated in attributes.
    attributes = json.loads(row["attributes"])
    assert "gen_ai.input.messages" not in attributes
    assert "gen_ai.output.messages" not in attributes
    assert attributes["gen_ai.request.model"] == "gpt-4o"


def test_genai_response_model_wins_over_request_model() -> None:
    row = one({"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06"})
    assert row["model"] == "gpt-4o-2024-08-06"
    assert row["model_version"] == "gpt-4o-2024-08-06"
    # The order the attributes arrive in does not matter.
    row = one({"gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.request.model": "gpt-4o"})
    assert row["model"] == "gpt-4o-2024-08-06"


def test_genai_older_spellings_are_understood() -> None:
    row = one(
        {
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4",
            "gen_ai.usage.prompt_tokens": 10,
            "gen_ai.usage.completion_tokens": 20,
            "gen_ai.prompt": "question",
            "gen_ai.completion": "answer",
        }
    )
    assert (row["provider"], row["input_tokens"], row["output_tokens"]) == ("anthropic", 10, 20)
    assert (row["input_text"], row["output_text"]) == ("question", "answer")
    assert row["kind"] == "llm"  # a model with tokens is an LLM call


@pytest.mark.parametrize(
    ("operation", "kind"),
    [
        ("chat", "llm"),
        ("text_completion", "llm"),
        ("generate_content", "llm"),
        ("embeddings", "embedding"),
        ("execute_tool", "tool"),
        ("invoke_agent", "agent"),
        ("create_agent", "agent"),
        ("retrieval", "retrieval"),
    ],
)
def test_genai_operation_name_sets_the_kind(operation: str, kind: str) -> None:
    assert one({"gen_ai.operation.name": operation})["kind"] == kind


def test_genai_tool_span() -> None:
    row = one(
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "lookup_order",
            "gen_ai.tool.call.arguments": {"order_id": 7},
        }
    )
    assert (row["kind"], row["tool_name"]) == ("tool", "lookup_order")
    assert json.loads(row["tool_args"]) == {"order_id": 7}
    assert one({"gen_ai.tool.name": "search"})["kind"] == "tool"  # inferred from the name


def test_genai_evaluation_score() -> None:
    row = one({"gen_ai.evaluation.score.value": 0.75, "openinference.span.kind": "EVALUATOR"})
    assert (row["score"], row["kind"]) == (0.75, "judge")


# -- OpenInference ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("LLM", "llm"),
        ("TOOL", "tool"),
        ("RETRIEVER", "retrieval"),
        ("RERANKER", "retrieval"),
        ("CHAIN", "chain"),
        ("AGENT", "agent"),
        ("EMBEDDING", "embedding"),
        ("GUARDRAIL", "guardrail"),
        ("EVALUATOR", "judge"),
        (" llm ", "llm"),
    ],
)
def test_openinference_span_kind_maps_to_kind(value: str, kind: str) -> None:
    assert one({"openinference.span.kind": value})["kind"] == kind


def test_unknown_span_kind_values_fall_back_to_inference() -> None:
    assert one({"openinference.span.kind": "UNKNOWN"})["kind"] == "other"
    row = one({"openinference.span.kind": 3, "tool.name": "search"})
    assert row["kind"] == "tool"


def test_openinference_attributes_map_to_columns() -> None:
    row = one(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "llm.provider": "openai",
            "llm.token_count.prompt": 200,
            "llm.token_count.completion": 40,
            "llm.finish_reason": "length",
            "llm.prompt_template.version": "v3",
            "input.value": "What is my order status?",
            "output.value": "Shipped.",
            "session.id": "oi-session",
            "user.id": "u-9",
            "tool.name": "not-a-tool-span",
        }
    )
    assert row["kind"] == "llm"  # the explicit kind beats the tool-name inference
    assert (row["model"], row["model_version"], row["provider"]) == (
        "gpt-4o-mini", "gpt-4o-mini", "openai",
    )  # fmt: skip
    assert (row["input_tokens"], row["output_tokens"]) == (200, 40)
    assert row["stop_reason"] == "max_tokens"
    assert row["prompt_hash"] == "v3"
    assert (row["input_text"], row["output_text"]) == ("What is my order status?", "Shipped.")
    assert (row["session_id"], row["user_id"]) == ("oi-session", "u-9")
    attributes = json.loads(row["attributes"])
    assert "input.value" not in attributes and "output.value" not in attributes


def test_openinference_tool_and_embedding_spans() -> None:
    tool = one({"openinference.span.kind": "TOOL", "tool.name": "refund", "tool.parameters": "{}"})
    assert (tool["kind"], tool["tool_name"], tool["tool_args"]) == ("tool", "refund", "{}")
    embedding = one({"openinference.span.kind": "EMBEDDING", "embedding.model_name": "te-3"})
    assert (embedding["kind"], embedding["model"]) == ("embedding", "te-3")


# -- goldenloop's own names win ------------------------------------------------------------------


def test_goldenloop_names_win_over_genai_and_openinference() -> None:
    row = one(
        {
            "llm.model_name": "oi-model",
            "gen_ai.response.model": "genai-model",
            "goldenloop.model": "gl-model",
            "openinference.span.kind": "LLM",
            "gen_ai.operation.name": "chat",
            "goldenloop.span.kind": "judge",
            "session.id": "oi-session",
            "gen_ai.conversation.id": "genai-session",
            "goldenloop.session.id": "gl-session",
            "llm.token_count.prompt": 1,
            "gen_ai.usage.input_tokens": 2,
            "goldenloop.usage.input_tokens": 3,
            "input.value": "oi input",
            "goldenloop.input": "gl input",
            "llm.provider": "oi-provider",
            "goldenloop.provider": "gl-provider",
            "gen_ai.response.finish_reasons": ["length"],
            "goldenloop.stop_reason": "tool_use",
            "llm.prompt_template.version": "oi-v",
            "goldenloop.prompt.version": "gl-version",
            "goldenloop.prompt.hash": "gl-hash",
            "gen_ai.usage.cost": 9.0,
            "goldenloop.cost_usd": 0.5,
            "user.id": "oi-user",
            "goldenloop.user.id": "gl-user",
            "gen_ai.tool.name": "genai-tool",
            "goldenloop.tool.name": "gl-tool",
            "eval.score": 0.1,
            "goldenloop.score": 0.9,
        }
    )
    assert row["model"] == "gl-model"
    assert row["model_version"] == "genai-model"  # no goldenloop.model.version: GenAI next
    assert row["kind"] == "judge"
    assert row["session_id"] == "gl-session"
    assert row["input_tokens"] == 3
    assert row["input_text"] == "gl input"
    assert row["provider"] == "gl-provider"
    assert row["stop_reason"] == "tool_calls"
    assert row["prompt_hash"] == "gl-hash"
    assert row["cost_usd"] == 0.5
    assert row["user_id"] == "gl-user"
    assert row["tool_name"] == "gl-tool"
    assert row["score"] == 0.9


def test_goldenloop_slice_dimensions() -> None:
    row = one(
        {
            "goldenloop.customer.tier": "enterprise",
            "customer.tier": "free",
            "goldenloop.locale": "de-DE",
            "user.locale": "en-US",
            "goldenloop.model.version": "2024-11-20",
            "goldenloop.index.version": "idx-42",
            "retrieval.index.version": "idx-1",
            "goldenloop.message.id": "msg-1",
        }
    )
    assert (row["customer_tier"], row["locale"]) == ("enterprise", "de-DE")
    assert (row["model_version"], row["index_version"]) == ("2024-11-20", "idx-42")
    assert row["message_id"] == "msg-1"
    fallback = one({"app.customer.tier": "pro", "app.locale": "fr-FR", "enduser.id": "e-1"})
    assert (fallback["customer_tier"], fallback["locale"], fallback["user_id"]) == (
        "pro", "fr-FR", "e-1",
    )  # fmt: skip


def test_empty_attribute_values_do_not_shadow_lower_priority_names() -> None:
    row = one({"goldenloop.model": "", "gen_ai.request.model": "gpt-4o"})
    assert row["model"] == "gpt-4o"


def test_spans_with_the_same_keys_are_mapped_by_their_own_values() -> None:
    # The key-set plan is shared by every span of a request with the same keys; which
    # key wins still depends on each span's values.
    keys = ("goldenloop.model", "gen_ai.request.model", "gen_ai.input.messages", "x")
    values = [("claude", "gpt-4o", "hi", 1), ("", "gpt-4o", None, 2), (None, "", "yo", 3)]
    rows = normalize(*(raw(dict(zip(keys, v, strict=True))) for v in values))
    assert [r["model"] for r in rows] == ["claude", "gpt-4o", None]
    assert [r["input_text"] for r in rows] == ["hi", None, "yo"]
    assert [json.loads(r["attributes"]) for r in rows] == [
        {"goldenloop.model": "claude", "gen_ai.request.model": "gpt-4o", "x": 1},
        {"goldenloop.model": "", "gen_ai.request.model": "gpt-4o", "x": 2},
        {"goldenloop.model": None, "gen_ai.request.model": "", "x": 3},
    ]


def test_a_request_with_more_key_sets_than_are_remembered() -> None:
    spans = [raw({f"k{i}": i, "gen_ai.request.model": f"m{i}"}) for i in range(600)]
    rows = normalize(*spans)
    assert [r["model"] for r in rows] == [f"m{i}" for i in range(600)]
    assert [json.loads(r["attributes"]) for r in rows][599] == {
        "k599": 599, "gen_ai.request.model": "m599",
    }  # fmt: skip


def test_feature_flags_shared_by_spans_merge_with_each_span_s_own() -> None:
    shared = json.dumps({"new_prompt": "on"})
    rows = normalize(
        raw({"goldenloop.feature_flags": shared}),
        raw({"goldenloop.feature_flags": shared, "feature_flag.key": "ranker"}),
        raw({"goldenloop.feature_flags": shared}),
    )
    assert [json.loads(r["feature_flags"]) for r in rows] == [
        {"new_prompt": "on"}, {"new_prompt": "on", "ranker": ""}, {"new_prompt": "on"},
    ]  # fmt: skip


def test_non_string_values_of_text_fields_are_stored_as_text() -> None:
    row = one({"session.id": 12345, "goldenloop.locale": ["de", "DE"]})
    assert row["session_id"] == "12345"
    assert json.loads(row["locale"]) == ["de", "DE"]


# -- finish reasons ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stop_reason"),
    [
        (["length"], "max_tokens"),
        ("length", "max_tokens"),
        ("max_tokens", "max_tokens"),
        ("end_turn", "stop"),
        (["stop", "length"], "stop"),
        ("STOP", "stop"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        (["tool_calls"], "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("safety", "content_filter"),
        ("refusal", "content_filter"),
        ("something_new", "something_new"),
        ([], None),
    ],
)
def test_finish_reasons_are_normalized(value: Any, stop_reason: str | None) -> None:
    assert one({"gen_ai.response.finish_reasons": value})["stop_reason"] == stop_reason


# -- feature flags -------------------------------------------------------------------------------


def test_feature_flags_from_goldenloop_json() -> None:
    row = one({"goldenloop.feature_flags": json.dumps({"new_prompt": "on", "retries": 3})})
    assert json.loads(row["feature_flags"]) == {"new_prompt": "on", "retries": "3"}


def test_feature_flags_from_a_key_value_list_or_a_map() -> None:
    row = one({"goldenloop.feature_flags": "a=on,b=off"})
    assert json.loads(row["feature_flags"]) == {"a": "on", "b": "off"}
    row = one({"goldenloop.feature_flags": {"kv": "list"}})
    assert json.loads(row["feature_flags"]) == {"kv": "list"}


def test_feature_flags_from_otel_attributes() -> None:
    row = one({"feature_flag.key": "checkout_v2", "feature_flag.result.variant": "treatment"})
    assert json.loads(row["feature_flags"]) == {"checkout_v2": "treatment"}
    row = one({"feature_flag.key": "legacy", "feature_flag.variant": "b"})
    assert json.loads(row["feature_flags"]) == {"legacy": "b"}
    row = one({"feature_flag.key": "no_variant"})
    assert json.loads(row["feature_flags"]) == {"no_variant": ""}


def test_feature_flags_from_evaluation_events_merge_with_the_others() -> None:
    events = [
        RawEvent(
            "feature_flag.evaluation",
            START_NS,
            {"feature_flag.key": "ranker", "feature_flag.result.variant": "bm25"},
        ),
        RawEvent(
            "feature_flag", START_NS, {"feature_flag.key": "cache", "feature_flag.variant": "on"}
        ),
        RawEvent("feature_flag.evaluation", START_NS, {"no": "key"}),
        RawEvent("log", START_NS, {"feature_flag.key": "ignored", "feature_flag.variant": "x"}),
    ]
    row = one(
        {
            "goldenloop.feature_flags": '{"prompt": "v2"}',
            "feature_flag.key": "checkout",
            "feature_flag.result.variant": "on",
        },
        events=events,
    )
    assert json.loads(row["feature_flags"]) == {
        "prompt": "v2",
        "checkout": "on",
        "ranker": "bm25",
        "cache": "on",
    }
    stored_events = json.loads(row["events"])
    assert [e["name"] for e in stored_events] == [e.name for e in events]
    assert stored_events[0]["attributes"]["feature_flag.key"] == "ranker"


# -- errors --------------------------------------------------------------------------------------


def test_error_type_from_the_attribute() -> None:
    row = one({"error.type": "RateLimitError"}, status=STATUS_ERROR)
    assert (row["error_type"], row["status"]) == ("RateLimitError", "error")


def test_error_type_from_an_exception_event() -> None:
    events = [
        RawEvent("log", START_NS, {"exception.type": "NotThisOne"}),
        RawEvent(
            "exception",
            START_NS,
            {"exception.type": "TimeoutError", "exception.message": "read timed out"},
        ),
    ]
    row = one(events=events, status=STATUS_ERROR, status_message="read timed out")
    assert row["error_type"] == "TimeoutError"
    assert row["status_message"] == "read timed out"


def test_error_type_attribute_wins_over_the_exception_event() -> None:
    event = RawEvent("exception", START_NS, {"exception.type": "FromEvent"})
    assert one({"error.type": "FromAttribute"}, events=[event])["error_type"] == "FromAttribute"
    assert one()["error_type"] is None


# -- prompt hash and cost --------------------------------------------------------------------------


def test_prompt_hash_from_the_template_when_no_version_is_given() -> None:
    template = "You are a helpful refund assistant. Policy: {policy}"
    row = one({"llm.prompt_template.template": template})
    assert row["prompt_hash"] == hashlib.sha256(template.encode()).hexdigest()[:8]
    # Same template, same hash; a different template, a different hash.
    assert one({"llm.prompt_template.template": template})["prompt_hash"] == row["prompt_hash"]
    assert one({"llm.prompt_template.template": template + "!"})["prompt_hash"] != row[
        "prompt_hash"
    ]  # fmt: skip


def test_an_explicit_prompt_version_wins_over_the_template_hash() -> None:
    row = one({"llm.prompt_template.template": "t", "llm.prompt_template.version": "v9"})
    assert row["prompt_hash"] == "v9"
    assert one({"llm.prompt_template.template": ""})["prompt_hash"] is None


def test_cost_sent_on_the_span_is_kept() -> None:
    attributes = {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000}
    assert one({**attributes, "goldenloop.cost_usd": 0.123})["cost_usd"] == 0.123
    assert one({**attributes, "gen_ai.usage.cost": "0.5"})["cost_usd"] == 0.5
    assert one({**attributes, "llm.cost.total": 0})["cost_usd"] == 0.0  # zero is a real cost


def test_cost_is_computed_from_the_price_table_when_not_sent() -> None:
    row = one(
        {
            "gen_ai.request.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 500,
        }
    )
    assert row["cost_usd"] == pytest.approx((1000 * 2.50 + 500 * 10.00) / 1e6)
    only_input = one({"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 1e6})
    assert only_input["cost_usd"] == pytest.approx(0.15)


def test_cost_uses_the_price_table_it_is_given() -> None:
    prices = PriceTable().with_overrides({"my-finetune": Price(1.0, 2.0)})
    (row,) = normalize(
        raw({"goldenloop.model": "my-finetune", "goldenloop.usage.output_tokens": 500_000}),
        prices=prices,
    )
    assert row["cost_usd"] == pytest.approx(1.0)


def test_no_cost_for_unknown_models_or_without_tokens() -> None:
    assert one({"gen_ai.request.model": "acme-9000", "gen_ai.usage.input_tokens": 5})[
        "cost_usd"
    ] is None  # fmt: skip
    assert one({"gen_ai.request.model": "gpt-4o"})["cost_usd"] is None
    assert one({"gen_ai.usage.input_tokens": 5})["cost_usd"] is None


# -- attributes ----------------------------------------------------------------------------------


def test_unknown_attributes_are_kept_raw() -> None:
    attributes = {
        "my.key": "value",
        "http.status_code": 200,
        "cache.hit": True,
        "ratio": 0.5,
        "tags": ["a", "b"],
        "nested": {"k": [1, 2]},
        "blob": "00ff",
    }
    row = one(attributes)
    assert json.loads(row["attributes"]) == attributes


def test_token_counts_are_validated_and_coerced() -> None:
    row = one({"gen_ai.usage.input_tokens": "42", "gen_ai.usage.output_tokens": 9.6})
    assert (row["input_tokens"], row["output_tokens"]) == (42, 10)
    with pytest.raises(InvalidSpans) as excinfo:
        one({"gen_ai.usage.input_tokens": True, "llm.token_count.completion": "x"}, span=ROOT)
    assert excinfo.value.problems == [
        f"span #0 'op' (spanId {ROOT}): "
        "attribute 'gen_ai.usage.input_tokens' must be an integer, got bool",
        f"span #0 'op' (spanId {ROOT}): "
        "attribute 'llm.token_count.completion' must be an integer, got 'x'",
    ]


# -- trace-level propagation ---------------------------------------------------------------------


def test_turn_level_fields_propagate_to_other_spans_of_the_trace() -> None:
    root = raw(
        {
            "session.id": "sess-9",
            "user.id": "user-9",
            "goldenloop.locale": "de-DE",
            "goldenloop.customer.tier": "enterprise",
            "goldenloop.message.id": "msg-9",
        },
        span=ROOT,
        name="turn",
    )
    child = raw({"gen_ai.request.model": "gpt-4o"}, parent=ROOT, name="llm")
    grandchild_own_locale = raw({"goldenloop.locale": "fr-FR"}, name="tool")
    other_trace = raw({}, trace="1" * 32, name="elsewhere")
    # Inheritance does not depend on order (SDKs export children before their root) …
    rows = {r["name"]: r for r in normalize(child, root, grandchild_own_locale, other_trace)}
    for name in ("turn", "llm", "tool"):
        row = rows[name]
        assert (row["session_id"], row["user_id"], row["customer_tier"], row["message_id"]) == (
            "sess-9", "user-9", "enterprise", "msg-9",
        ), name  # fmt: skip
    assert rows["llm"]["locale"] == "de-DE"
    assert rows["tool"]["locale"] == "fr-FR"  # … and a span's own value is kept
    elsewhere = rows["elsewhere"]
    assert (elsewhere["session_id"], elsewhere["user_id"], elsewhere["locale"]) == (None,) * 3


def test_message_id_defaults_to_the_trace_id() -> None:
    rows = normalize(raw(name="a"), raw(name="b"), raw(trace="2" * 32, name="c"))
    assert [r["message_id"] for r in rows] == [TRACE, TRACE, "2" * 32]


# -- project -------------------------------------------------------------------------------------


def test_project_comes_from_override_then_attribute_then_resource_then_default() -> None:
    attributed = raw({"goldenloop.project": "from-attribute"})
    resourced = raw(resource={"service.name": "from-service"})
    explicit_resource = raw(resource={"goldenloop.project": "gl", "service.name": "svc"})
    bare = raw(resource={})
    rows = normalize(attributed, resourced, explicit_resource, bare, default_project="fallback")
    assert [r["project"] for r in rows] == ["from-attribute", "from-service", "gl", "fallback"]
    rows = normalize(attributed, resourced, project_override="keyed")
    assert [r["project"] for r in rows] == ["keyed", "keyed"]


# -- validation ----------------------------------------------------------------------------------


def test_limits_are_configurable() -> None:
    an_hour_ahead = NOW_US * 1000 + 3600 * 10**9
    assert normalize(raw(start_ns=an_hour_ahead))  # default skew is 24 h
    with pytest.raises(InvalidSpans, match="1 hours in the future"):
        normalize(raw(start_ns=an_hour_ahead + 10**9), limits=IngestLimits(max_clock_skew_hours=1))
    two_days_ago = NOW_US * 1000 - 2 * 24 * 3600 * 10**9
    with pytest.raises(InvalidSpans, match="more than 1 days ago"):
        normalize(raw(start_ns=two_days_ago), limits=IngestLimits(oldest_span_days=1))
    with pytest.raises(InvalidSpans, match="'big' is 11 bytes; the limit is 10"):
        normalize(raw({"big": "x" * 11}), limits=IngestLimits(max_attribute_bytes=10))


def test_a_bad_span_rejects_the_whole_request_listing_every_problem() -> None:
    good = raw(name="good")
    bad = raw(
        {"gen_ai.usage.output_tokens": -1},
        span="0" * 16,
        name="bad",
        start_ns=START_NS,
        duration_ns=-1,
    )
    with pytest.raises(InvalidSpans) as excinfo:
        normalize(good, bad)
    assert excinfo.value.problems == [
        "span #1 'bad' (spanId 0000000000000000): spanId is all zeros",
        "span #1 'bad' (spanId 0000000000000000): endTimeUnixNano is before startTimeUnixNano",
        "span #1 'bad' (spanId 0000000000000000): "
        "attribute 'gen_ai.usage.output_tokens' must not be negative, got -1",
    ]


def test_the_error_message_is_capped_at_twenty_problems() -> None:
    spans = [raw(span="0" * 16, name=f"s{i}") for i in range(25)]
    with pytest.raises(InvalidSpans) as excinfo:
        normalize(*spans)
    assert len(excinfo.value.problems) == 25
    message = str(excinfo.value)
    assert message.count("spanId is all zeros") == 20
    assert message.endswith("(+5 more)")


def test_hex_ids_must_be_plain_hex_digits() -> None:
    for bad in ("+123456789abcdef", "0x23456789abcdef", "12345678_abcdef0", "12345678 abcdef0"):
        with pytest.raises(InvalidSpans, match="spanId is not hexadecimal"):
            normalize(raw(span=bad))
    assert normalize(raw(span="ABCDEF0123456789"))[0]["span_id"] == "abcdef0123456789"


# -- through the app: raw attributes are queryable ---------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = DuckDBStore(tmp_path / "x.duckdb")
    store.migrate()
    try:
        with TestClient(create_app(Settings(batch_max_wait_ms=1), store)) as c:
            yield c
    finally:
        store.close()


def _otlp(session: str, attributes: list[dict[str, Any]]) -> bytes:
    now = time.time_ns() - 10**9
    trace = secrets.token_hex(16)
    root, child = secrets.token_hex(8), secrets.token_hex(8)
    spans = [
        {
            "traceId": trace,
            "spanId": root,
            "name": "turn",
            "startTimeUnixNano": str(now),
            "endTimeUnixNano": str(now + 10**6),
            "attributes": [{"key": "session.id", "value": {"stringValue": session}}],
        },
        {
            "traceId": trace,
            "spanId": child,
            "parentSpanId": root,
            "name": "step",
            "startTimeUnixNano": str(now),
            "endTimeUnixNano": str(now + 10**6),
            "attributes": attributes,
        },
    ]
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


def test_unknown_attributes_are_queryable_through_the_sessions_api(client: TestClient) -> None:
    for session, attributes in [
        (
            "s-match",
            [
                {"key": "my.key", "value": {"stringValue": "value"}},
                {"key": "retries", "value": {"intValue": "3"}},
                {"key": "cached", "value": {"boolValue": True}},
            ],
        ),
        ("s-other", [{"key": "my.key", "value": {"stringValue": "other"}}]),
        ("s-none", []),
    ]:
        response = client.post(
            "/v1/traces",
            content=_otlp(session, attributes),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text

    def sessions(**params: str) -> list[str]:
        response = client.get("/api/v1/sessions", params=params)
        assert response.status_code == 200, response.text
        return sorted(s["session_id"] for s in response.json()["sessions"])

    assert sessions() == ["s-match", "s-none", "s-other"]
    assert sessions(**{"attr.my.key": "value"}) == ["s-match"]
    assert sessions(**{"attr.my.key": "other"}) == ["s-other"]
    assert sessions(**{"attr.my.key": "nope"}) == []
    assert sessions(**{"attr.retries": "3"}) == ["s-match"]
    assert sessions(**{"attr.cached": "true"}) == ["s-match"]
    assert sessions(**{"attr.my.key": "value", "attr.retries": "4"}) == []
    # The session id was set on the root only; the child inherited it.
    detail = client.get("/api/v1/sessions/s-match").json()
    assert {s["name"]: s["session_id"] for s in detail["spans"]} == {
        "turn": "s-match",
        "step": "s-match",
    }
