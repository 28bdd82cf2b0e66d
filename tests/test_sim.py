"""The traffic simulator: determinism, plausibility, ground truth and both sinks."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from goldenloop.ingest.otlp import decode_protobuf
from goldenloop.ingest.raw import STATUS_ERROR, RawSpan
from goldenloop.sim import (
    InjectionWave,
    NewIntentCluster,
    PromptRegression,
    ProviderOutage,
    SimConfig,
    SimManifest,
    SimResult,
    ToolErrorSpike,
    default_scenarios,
    default_start,
    encode_otlp,
    generate_all,
    send_over_otlp,
    simulate,
    write_to_store,
)
from goldenloop.sim.otlp import trace_batches
from goldenloop.store.duckdb import DuckDBStore

START = datetime(2026, 6, 22, tzinfo=UTC)
SMALL = SimConfig(seed=11, start=START, days=0.5, sessions_per_day=600)


def _fingerprint(result: SimResult) -> list[Any]:
    spans = [
        (s.trace_id, s.span_id, s.parent_span_id, s.name, s.start_time_unix_nano,
         s.end_time_unix_nano, json.dumps(s.attributes, sort_keys=True), s.status_code,
         [(e.name, e.attributes) for e in s.events], s.resource)
        for s in result.spans
    ]  # fmt: skip
    return [spans, [f.to_dict() for f in result.feedback], [o.to_dict() for o in result.outcomes]]


def _roots(spans: list[RawSpan]) -> list[RawSpan]:
    return [s for s in spans if s.parent_span_id is None]


def _session_of(span: RawSpan) -> str:
    attrs = span.attributes
    return str(attrs.get("session.id") or attrs.get("gen_ai.conversation.id"))


@pytest.fixture(scope="module")
def week() -> SimResult:
    """A full default week at low volume, default scenarios included."""
    return generate_all(SimConfig(seed=3, start=START, days=7, sessions_per_day=500))


# -- determinism -------------------------------------------------------------------------


def test_same_seed_gives_identical_spans_ids_text_and_manifest() -> None:
    first, second = generate_all(SMALL), generate_all(SMALL)
    assert len(first.spans) > 500
    assert _fingerprint(first) == _fingerprint(second)
    assert first.manifest.to_dict() == second.manifest.to_dict()


def test_different_seed_gives_different_traffic() -> None:
    first, other = generate_all(SMALL), generate_all(SMALL.replace(seed=12))
    assert {s.trace_id for s in first.spans}.isdisjoint({s.trace_id for s in other.spans})
    assert _fingerprint(first) != _fingerprint(other)


def test_chunking_does_not_change_the_traffic() -> None:
    whole = generate_all(SMALL)
    chunks = list(simulate(SMALL.replace(chunk_spans=300)))
    assert len(chunks) > 3
    assert [s.span_id for c in chunks for s in c.spans] == [s.span_id for s in whole.spans]
    for chunk in chunks:  # a chunk never splits a trace
        traces = {s.trace_id for s in chunk.spans}
        assert len(_roots(chunk.spans)) == len(traces)


def test_max_spans_stops_at_a_session_boundary() -> None:
    result = generate_all(SMALL.replace(max_spans=400))
    assert 400 <= len(result.spans) < 460
    assert result.manifest.spans == len(result.spans)


# -- shape and plausibility ---------------------------------------------------------------


def test_ids_are_hex_of_the_otlp_sizes_and_unique(week: SimResult) -> None:
    span_ids = [s.span_id for s in week.spans]
    assert len(set(span_ids)) == len(span_ids)
    for span in week.spans[:2000]:
        assert len(span.trace_id) == 32 and int(span.trace_id, 16)
        assert len(span.span_id) == 16 and int(span.span_id, 16)


def test_every_trace_is_a_tree_under_one_root_that_spans_its_children(week: SimResult) -> None:
    by_trace: dict[str, list[RawSpan]] = defaultdict(list)
    for span in week.spans:
        by_trace[span.trace_id].append(span)
    for spans in by_trace.values():
        (root,) = _roots(spans)
        for child in spans:
            assert child.start_time_unix_nano >= root.start_time_unix_nano
            assert child.end_time_unix_nano <= root.end_time_unix_nano
            if child is not root:
                assert child.parent_span_id == root.span_id


def test_sessions_have_one_to_six_turns_and_plausible_span_counts(week: SimResult) -> None:
    turns = Counter(_session_of(r) for r in _roots(week.spans))
    assert set(turns.values()) <= set(range(1, 7))
    assert 1.5 < statistics.mean(turns.values()) < 3.5
    spans_per_session = len(week.spans) / len(turns)
    assert 5 < spans_per_session < 20
    assert week.manifest.sessions == len(turns)


def test_latencies_tokens_and_text_sizes_are_plausible(week: SimResult) -> None:
    def latency_ms(s: RawSpan) -> float:
        return (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6

    llm = [s for s in week.spans if s.name.startswith(("chat ", "Chat"))]
    assert 500 < statistics.median(latency_ms(s) for s in llm) < 5000
    retrieval = [s for s in week.spans if s.name.startswith("retrieval")]
    assert 50 < statistics.median(latency_ms(s) for s in retrieval) < 500
    tokens = [s.attributes.get("gen_ai.usage.input_tokens") for s in llm]
    assert 300 < statistics.median(t for t in tokens if t) < 4000
    text = [sum(len(v) for v in s.attributes.values() if isinstance(v, str)) for s in week.spans]
    assert 2500 < statistics.mean(text) < 4500


def test_short_text_mode_keeps_spans_small() -> None:
    result = generate_all(SMALL.replace(text="short"))
    text = [sum(len(v) for v in s.attributes.values() if isinstance(v, str)) for s in result.spans]
    assert statistics.mean(text) < 800


def test_both_conventions_cohorts_and_flags_are_present(week: SimResult) -> None:
    attrs = [s.attributes for s in week.spans]
    assert any(a.get("openinference.span.kind") == "LLM" and "llm.model_name" in a for a in attrs)
    assert any(a.get("gen_ai.operation.name") == "execute_tool" for a in attrs)
    assert any("gen_ai.conversation.id" in a for a in attrs)
    roots = [r.attributes for r in _roots(week.spans)]
    assert {r["goldenloop.locale"] for r in roots} >= {"en-US", "de-DE", "fr-FR", "ja-JP"}
    assert {r["goldenloop.customer.tier"] for r in roots} == {"free", "pro", "enterprise"}
    flags = [json.loads(r["goldenloop.feature_flags"]) for r in roots]
    assert any(f.get("eu_banner") == "on" for f in flags)
    assert {s.resource["service.name"] for s in week.spans} == {
        "refund-assistant", "support-search", "billing-agent"}  # fmt: skip
    # A user keeps one locale and one tier across sessions.
    seen: dict[str, tuple[str, str]] = {}
    for r in roots:
        cohort = (r["goldenloop.locale"], r["goldenloop.customer.tier"])
        assert seen.setdefault(r["user.id"], cohort) == cohort


def test_traffic_follows_a_diurnal_pattern(week: SimResult) -> None:
    hours = Counter(
        datetime.fromtimestamp(r.start_time_unix_nano / 1e9, UTC).hour for r in _roots(week.spans)
    )
    assert hours[14] > 2 * hours[3]


# -- ground truth ---------------------------------------------------------------------------


def test_default_scenarios_fit_the_window() -> None:
    for days in (1, 3, 7):
        scenarios = default_scenarios(START, days)
        assert scenarios
        for s in scenarios:
            assert START <= s.start < s.end <= START + timedelta(days=days)
    week_names = {s.name for s in default_scenarios(START, 7)}
    assert {"eu-prompt-regression", "provider-outage", "injection-wave"} <= week_names
    only_search = default_scenarios(START, 7, apps=("support-search",))
    assert "eu-prompt-regression" not in {s.name for s in only_search}


def test_manifest_lists_every_failure_kind_and_round_trips_json(week: SimResult) -> None:
    manifest = week.manifest
    for kind in ("thumbs_down", "rephrase", "abandon", "tool_error", "circuit_breaker",
                 "max_tokens", "injection", "guardrail_block", "judge_low", "provider_error"):  # fmt: skip
        assert manifest.failures[kind], kind
    for truth in manifest.scenarios.values():
        assert truth.sessions, truth.name
    again = SimManifest.from_dict(json.loads(manifest.to_json()))
    assert again.to_dict() == manifest.to_dict()


def test_injected_failures_are_visible_in_the_data(week: SimResult) -> None:
    failures = week.manifest.failures
    by_session: dict[str, list[RawSpan]] = defaultdict(list)
    trace_session = {r.trace_id: _session_of(r) for r in _roots(week.spans)}
    for span in week.spans:
        by_session[trace_session[span.trace_id]].append(span)
    for sid in failures["circuit_breaker"]:
        assert any(s.attributes.get("goldenloop.circuit_breaker.tripped") for s in by_session[sid])
    for sid in failures["max_tokens"]:
        reasons = [
            s.attributes.get("gen_ai.response.finish_reasons", [None])[0]
            or s.attributes.get("goldenloop.stop_reason")
            for s in by_session[sid]
        ]
        assert {"length", "max_tokens"} & set(reasons)
    for sid in failures["tool_error"]:
        assert any(
            s.status_code == STATUS_ERROR and s.name.startswith("execute_tool")
            and "error.type" in s.attributes
            for s in by_session[sid]
        )  # fmt: skip
    downs = {f.session_id for f in week.feedback if f.rating == "down"}
    assert downs == failures["thumbs_down"]
    assert failures["unsafe_answer"] <= failures["injection"]
    for sid in failures["unsafe_answer"]:
        assert any(
            str(
                r.attributes.get("goldenloop.output") or r.attributes.get("output.value")
            ).startswith("Sure. My instructions")
            for r in _roots(by_session[sid])
        )
    for sid in list(failures["rephrase"])[:50]:
        messages = [r.attributes.get("goldenloop.input") or r.attributes.get("input.value")
                    for r in sorted(_roots(by_session[sid]), key=lambda r: r.start_time_unix_nano)]  # fmt: skip
        assert any(
            b and a and a.rstrip("?.!。 ").lower()[1:] in b.lower()
            for a, b in zip(messages, messages[1:], strict=False)
        )


def test_prompt_regression_raises_thumbs_down_only_for_its_locales_after_it_starts() -> None:
    start = START + timedelta(hours=36)
    regression = PromptRegression(name="eu", start=start, end=START + timedelta(days=3))
    config = SimConfig(seed=5, start=START, days=3, sessions_per_day=5000, text="short",
                       apps=("refund-assistant",), scenarios=(regression,))  # fmt: skip
    result = generate_all(config)
    affected = result.manifest.scenarios["eu"].sessions
    roots = {r.attributes["session.id"]: r for r in _roots(result.spans)}
    assert len(affected) > 40
    for sid in affected:
        assert roots[sid].attributes["goldenloop.locale"] in ("de-DE", "fr-FR")
    a9f2 = [r for r in _roots(result.spans) if r.attributes["goldenloop.prompt.hash"] == "a9f2"]
    assert a9f2 and min(r.start_time_unix_nano for r in a9f2) >= start.timestamp() * 1e9

    downs = {f.session_id for f in result.feedback if f.rating == "down"}
    first_turn: dict[str, RawSpan] = {}
    for root in sorted(_roots(result.spans), key=lambda r: r.start_time_unix_nano):
        first_turn.setdefault(root.attributes["session.id"], root)

    def rate(eu: bool, during: bool) -> float:
        sessions = [
            sid for sid, r in first_turn.items()
            if (r.attributes["goldenloop.locale"] in ("de-DE", "fr-FR")) == eu
            and (r.start_time_unix_nano >= start.timestamp() * 1e9) == during
        ]  # fmt: skip
        return sum(sid in downs for sid in sessions) / len(sessions)

    assert rate(eu=True, during=True) > 2.5 * rate(eu=True, during=False)
    assert rate(eu=False, during=True) < 1.5 * rate(eu=False, during=False) + 0.01
    wrong = [f for f in result.feedback if f.category == "wrong"]
    assert wrong and all(f.prompt_hash == "a9f2" for f in wrong)
    failed = [o for o in result.outcomes if not o.success and o.session_id in affected]
    reasons = Counter(o.attributes.get("reason") for o in failed)
    assert reasons.most_common(1)[0][0] == "restocking_fee_applied"


def test_outage_slows_and_fails_llm_calls_only_inside_its_window() -> None:
    start, end = START + timedelta(hours=10), START + timedelta(hours=11)
    outage = ProviderOutage(name="out", start=start, end=end, latency_multiplier=6, error_rate=0.4)
    config = SimConfig(seed=8, start=START, days=1, sessions_per_day=4000, text="short",
                       scenarios=(outage,))  # fmt: skip
    result = generate_all(config)
    llm = [s for s in result.spans if s.name.startswith(("chat ", "Chat"))]

    def inside(s: RawSpan) -> bool:
        return start.timestamp() * 1e9 <= s.start_time_unix_nano < end.timestamp() * 1e9

    def median_ms(spans: list[RawSpan]) -> float:
        return statistics.median(
            (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6 for s in spans
        )

    during = [s for s in llm if inside(s)]
    before = [s for s in llm if s.end_time_unix_nano < start.timestamp() * 1e9]
    assert median_ms(during) > 4 * median_ms(before)
    assert sum(s.status_code == STATUS_ERROR for s in during) / len(during) > 0.25
    assert not any(s.status_code == STATUS_ERROR for s in before)
    assert result.manifest.failures["provider_error"] <= result.manifest.scenarios["out"].sessions


def test_injection_wave_tool_spike_and_new_intents_are_scheduled() -> None:
    mid = START + timedelta(hours=12)
    scenarios = (
        InjectionWave(name="wave", start=mid, end=START + timedelta(days=1), rate=0.3),
        ToolErrorSpike(name="tools", start=mid, end=START + timedelta(days=1), error_rate=0.5),
        NewIntentCluster(name="aurora", start=mid, end=START + timedelta(days=1), share=0.3),
    )
    config = SimConfig(seed=9, start=START, days=1, sessions_per_day=3000, text="short",
                       scenarios=scenarios)  # fmt: skip
    result = generate_all(config)
    roots = _roots(result.spans)
    before = [r for r in roots if r.start_time_unix_nano < mid.timestamp() * 1e9]
    after = [r for r in roots if r.start_time_unix_nano >= mid.timestamp() * 1e9]

    def text(r: RawSpan) -> str:
        return str(r.attributes.get("goldenloop.input") or r.attributes.get("input.value"))

    assert not any("aurora" in text(r).lower() for r in before)
    assert sum("aurora" in text(r).lower() for r in after) > 0.1 * len(after)
    injected = result.manifest.scenarios["wave"].sessions
    assert len(injected) > 50 and injected <= result.manifest.failures["injection"]
    assert result.manifest.scenarios["tools"].sessions <= result.manifest.failures["tool_error"]
    assert result.manifest.failures["tool_error_streak"]


# -- OTLP ------------------------------------------------------------------------------------


def test_encode_otlp_round_trips_ids_attributes_events_and_status(week: SimResult) -> None:
    spans = week.spans[:3000]
    body = encode_otlp(spans)
    request = ExportTraceServiceRequest.FromString(body)
    services = {
        kv.value.string_value
        for rs in request.resource_spans
        for kv in rs.resource.attributes
        if kv.key == "service.name"
    }
    assert services == {s.resource["service.name"] for s in spans}
    first = request.resource_spans[0].scope_spans[0].spans[0]
    assert len(first.trace_id) == 16 and len(first.span_id) == 8

    decoded = {s.span_id: s for s in decode_protobuf(body)}
    assert len(decoded) == len(spans)
    for original in spans:
        back = decoded[original.span_id]
        assert back.trace_id == original.trace_id
        assert back.parent_span_id == original.parent_span_id
        assert back.attributes == original.attributes
        assert back.resource == original.resource
        assert (back.start_time_unix_nano, back.end_time_unix_nano) == (
            original.start_time_unix_nano, original.end_time_unix_nano)  # fmt: skip
        assert (back.status_code, back.status_message) == (
            original.status_code, original.status_message)  # fmt: skip
        assert [(e.name, e.attributes) for e in back.events] == [
            (e.name, e.attributes) for e in original.events
        ]


def test_trace_batches_never_split_a_trace(week: SimResult) -> None:
    spans = week.spans[:5000]
    batches = list(trace_batches(spans, 700))
    assert len(batches) > 5
    assert [s for b in batches for s in b] == spans
    for a, b in zip(batches, batches[1:], strict=False):
        assert a[-1].trace_id != b[0].trace_id


def test_send_over_otlp_posts_protobuf_and_valid_feedback_and_outcomes() -> None:
    from goldenloop.web.ingest_api import FeedbackIn, OutcomeIn

    received: dict[str, list[Any]] = defaultdict(list)
    busy = {"left": 1}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer k1"
        if request.url.path == "/v1/traces":
            if busy["left"]:
                busy["left"] -= 1
                return httpx.Response(429, headers={"Retry-After": "0"})
            assert request.headers["content-type"] == "application/x-protobuf"
            received["spans"].extend(decode_protobuf(request.content))
        elif request.url.path == "/api/v1/feedback":
            received["feedback"].append(FeedbackIn.model_validate_json(request.content))
        elif request.url.path == "/api/v1/outcomes":
            received["outcomes"].append(OutcomeIn.model_validate_json(request.content))
        else:
            return httpx.Response(404)
        return httpx.Response(200 if request.url.path == "/v1/traces" else 202, json={})

    progress: list[int] = []
    manifest = send_over_otlp(
        "http://sim.test/", SMALL, api_key="k1", progress=progress.append, batch_spans=500,
        transport=httpx.MockTransport(handler),
    )  # fmt: skip
    assert len(received["spans"]) == manifest.spans == sum(progress)
    assert len(received["feedback"]) == manifest.feedback > 0
    assert len(received["outcomes"]) == manifest.outcomes > 0
    assert {f.rating for f in received["feedback"]} <= {"up", "down"}


def test_send_over_otlp_names_the_failing_request() -> None:
    from goldenloop.sim import SimSendError

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "bad spans"})

    with pytest.raises(SimSendError, match=r"/v1/traces.*HTTP 400.*bad spans"):
        send_over_otlp("http://sim.test", SMALL, transport=httpx.MockTransport(handler))


# -- bulk path into a real store ----------------------------------------------------------


def test_write_to_store_bulk_loads_normalized_spans_feedback_and_outcomes(tmp_path: Any) -> None:
    store = DuckDBStore(tmp_path / "x.duckdb")
    store.migrate()
    config = SimConfig(seed=2, start=default_start(1), days=0.25, sessions_per_day=1200,
                       chunk_spans=400)  # fmt: skip
    progress: list[int] = []
    manifest = write_to_store(store, config, progress=progress.append)
    try:
        assert store.count_spans() == manifest.spans == sum(progress)
        kinds = {k for (k,) in store.fetch("SELECT DISTINCT kind FROM spans")}
        assert {"llm", "tool", "retrieval", "agent", "chain", "guardrail"} <= kinds
        projects = dict(
            store.fetch("SELECT project, count(DISTINCT session_id) FROM spans GROUP BY 1")
        )
        assert projects == manifest.sessions_by_project
        (missing,) = store.fetch(
            "SELECT count(*) FROM spans WHERE session_id IS NULL OR locale IS NULL "
            "OR customer_tier IS NULL OR user_id IS NULL"
        )[0]
        assert missing == 0
        (unpriced,) = store.fetch(
            "SELECT count(*) FROM spans WHERE kind = 'llm' AND status = 'ok' AND cost_usd IS NULL"
        )[0]
        assert unpriced == 0
        models = {m for (m,) in store.fetch("SELECT DISTINCT model FROM spans WHERE kind = 'llm'")}
        assert "claude-sonnet-4-20250514" in models and "gpt-4o-mini-2024-07-18" in models
        stops = {r for (r,) in store.fetch("SELECT DISTINCT stop_reason FROM spans")}
        assert {"stop", "tool_calls"} <= stops
        (feedback,) = store.fetch("SELECT count(*) FROM feedback")[0]
        (outcomes,) = store.fetch("SELECT count(*) FROM outcomes")[0]
        assert (feedback, outcomes) == (manifest.feedback, manifest.outcomes)
        flags = store.fetch(
            "SELECT count(*) FROM spans WHERE (feature_flags::json ->> 'eu_banner') IS NOT NULL"
        )[0][0]
        assert flags > 0
    finally:
        store.close()


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="timezone"):
        SimConfig(start=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="apps"):
        SimConfig(apps=("nope",))
    with pytest.raises(ValueError, match="end must be after start"):
        PromptRegression(name="x", start=START, end=START)
