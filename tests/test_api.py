"""Reads: the JSON API, the HTML pages, /openapi.json and /healthz over ingested data."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from goldenloop.config import Settings
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

NS_PER_S = 10**9


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    return {"stringValue": str(value)}


def _kvs(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in attributes.items()]


def turn(
    session: str,
    *,
    ago_s: float,
    question: str = "Where is my refund?",
    answer: str = "It was sent yesterday.",
    root_attributes: dict[str, Any] | None = None,
    llm_attributes: dict[str, Any] | None = None,
    error: bool = False,
) -> tuple[str, list[dict[str, Any]]]:
    """One trace: a root span carrying the session and an LLM child span."""
    trace, root, child = secrets.token_hex(16), secrets.token_hex(8), secrets.token_hex(8)
    start = time.time_ns() - int(ago_s * NS_PER_S)
    spans = [
        {
            "traceId": trace,
            "spanId": root,
            "name": "handle_message",
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + 2 * NS_PER_S),
            "attributes": _kvs(
                {
                    "session.id": session,
                    "openinference.span.kind": "CHAIN",
                    "input.value": question,
                    "output.value": answer,
                    **(root_attributes or {}),
                }
            ),
        },
        {
            "traceId": trace,
            "spanId": child,
            "parentSpanId": root,
            "name": "chat gpt-4o-mini",
            "startTimeUnixNano": str(start + NS_PER_S // 10),
            "endTimeUnixNano": str(start + NS_PER_S),
            "attributes": _kvs(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 1000,
                    "gen_ai.usage.output_tokens": 100,
                    "gen_ai.response.finish_reasons": "stop",
                    **(llm_attributes or {}),
                }
            ),
            "status": {"code": 2, "message": "boom"} if error else {"code": 1},
        },
    ]
    return trace, spans


def ingest(client: TestClient, *traces: tuple[str, list[dict[str, Any]]], service: str) -> None:
    spans = [span for _, trace_spans in traces for span in trace_spans]
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": _kvs({"service.name": service})},
                "scopeSpans": [{"spans": spans}],
            }
        ]
    }
    response = client.post(
        "/v1/traces",
        content=json.dumps(document).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = DuckDBStore(tmp_path / "x.duckdb")
    store.migrate()
    try:
        with TestClient(create_app(Settings(batch_max_wait_ms=1), store)) as c:
            yield c
    finally:
        store.close()


@pytest.fixture
def data(client: TestClient) -> dict[str, str]:
    """Four sessions of different age, locale, tier, flags and attributes."""
    old = turn(
        "s-old",
        ago_s=3 * 86400,
        root_attributes={"goldenloop.locale": "en-US", "goldenloop.customer.tier": "free"},
    )
    de = turn(
        "s-de",
        ago_s=2 * 3600,
        question="Wo ist meine Erstattung?",
        answer="Sie wurde gestern überwiesen.",
        root_attributes={
            "goldenloop.locale": "de-DE",
            "goldenloop.customer.tier": "enterprise",
            "goldenloop.feature_flags": '{"new_ranker": "on"}',
            "app.region": "eu-west",
        },
    )
    de_second = turn("s-de", ago_s=3600, root_attributes={"goldenloop.locale": "de-DE"})
    fr = turn(
        "s-fr",
        ago_s=30 * 60,
        root_attributes={
            "goldenloop.locale": "fr-FR",
            "goldenloop.customer.tier": "enterprise",
            "goldenloop.feature_flags": '{"new_ranker": "off"}',
            "app.region": "eu-west",
        },
        error=True,
    )
    other_project = turn("s-bank", ago_s=10 * 60, root_attributes={"goldenloop.locale": "en-GB"})
    ingest(client, old, de, de_second, fr, service="shop")
    ingest(client, other_project, service="bank")
    return {"old": old[0], "de": de[0], "de_second": de_second[0], "fr": fr[0]}


def session_ids(client: TestClient, params: dict[str, str] | list[tuple[str, str]]) -> list[str]:
    response = client.get("/api/v1/sessions", params=params)
    assert response.status_code == 200, response.text
    return [s["session_id"] for s in response.json()["sessions"]]


# -- /api/v1/sessions --------------------------------------------------------------------------------


def test_sessions_are_listed_most_recent_first_with_totals(
    client: TestClient, data: dict[str, str]
) -> None:
    response = client.get("/api/v1/sessions")
    assert response.status_code == 200
    body = response.json()
    assert [s["session_id"] for s in body["sessions"]] == ["s-bank", "s-fr", "s-de", "s-old"]
    assert (body["limit"], body["offset"], body["next_offset"]) == (50, 0, None)
    de = next(s for s in body["sessions"] if s["session_id"] == "s-de")
    assert de["project"] == "shop"
    assert (de["turn_count"], de["span_count"]) == (2, 4)
    assert (de["input_tokens"], de["output_tokens"]) == (2000, 200)  # the LLM spans only
    assert de["cost_usd"] == pytest.approx(2 * (1000 * 0.15 + 100 * 0.60) / 1e6)
    assert (de["locale"], de["customer_tier"], de["model"]) == (
        "de-DE",
        "enterprise",
        "gpt-4o-mini",
    )
    fr = next(s for s in body["sessions"] if s["session_id"] == "s-fr")
    assert fr["error_count"] == 1


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("24h", ["s-bank", "s-fr", "s-de"]),
        ("90m", ["s-bank", "s-fr", "s-de"]),  # s-de has a turn an hour ago
        ("45m", ["s-bank", "s-fr"]),
        ("1.5h", ["s-bank", "s-fr", "s-de"]),
        ("7d", ["s-bank", "s-fr", "s-de", "s-old"]),
        ("1w", ["s-bank", "s-fr", "s-de", "s-old"]),
        ("30s", []),
    ],
)
def test_since_as_a_duration(
    client: TestClient, data: dict[str, str], since: str, expected: list[str]
) -> None:
    assert session_ids(client, {"since": since}) == expected


def test_since_and_until_as_iso_times(client: TestClient, data: dict[str, str]) -> None:
    now = datetime.now(UTC)
    two_days_ago = now - timedelta(days=2)
    assert session_ids(client, {"since": two_days_ago.isoformat()}) == ["s-bank", "s-fr", "s-de"]
    zulu = two_days_ago.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert session_ids(client, {"since": zulu}) == ["s-bank", "s-fr", "s-de"]
    naive_utc = two_days_ago.replace(tzinfo=None).isoformat()
    assert session_ids(client, {"since": naive_utc}) == ["s-bank", "s-fr", "s-de"]
    in_local_zone = two_days_ago.astimezone(datetime.now().astimezone().tzinfo).isoformat()
    assert session_ids(client, {"since": in_local_zone}) == ["s-bank", "s-fr", "s-de"]
    assert session_ids(client, {"until": "1d"}) == ["s-old"]
    assert session_ids(client, {"since": "4h", "until": "50m"}) == ["s-de"]
    assert session_ids(client, {"since": (now + timedelta(hours=1)).isoformat()}) == []


def test_slice_dimension_filters(client: TestClient, data: dict[str, str]) -> None:
    assert session_ids(client, {"locale": "de-DE"}) == ["s-de"]
    assert session_ids(client, {"customer_tier": "enterprise"}) == ["s-fr", "s-de"]
    assert session_ids(client, {"customer_tier": "enterprise", "locale": "fr-FR"}) == ["s-fr"]
    assert session_ids(client, {"locale": "xx-XX"}) == []
    assert session_ids(client, {"project": "bank"}) == ["s-bank"]
    assert session_ids(client, {"project": "shop", "since": "45m"}) == ["s-fr"]
    assert session_ids(client, {"model": "gpt-4o-mini", "project": "shop"}) == [
        "s-fr", "s-de", "s-old",
    ]  # fmt: skip
    assert session_ids(client, {"kind": "chain", "locale": "en-US"}) == ["s-old"]
    assert session_ids(client, {"status": "error"}) == ["s-fr"]
    assert session_ids(client, {"session_id": "s-old"}) == ["s-old"]


def test_feature_flag_and_attribute_filters(client: TestClient, data: dict[str, str]) -> None:
    assert session_ids(client, {"flag.new_ranker": "on"}) == ["s-de"]
    assert session_ids(client, {"flag.new_ranker": "off"}) == ["s-fr"]
    assert session_ids(client, {"flag.missing": "on"}) == []
    assert session_ids(client, {"attr.app.region": "eu-west"}) == ["s-fr", "s-de"]
    assert session_ids(client, {"attr.app.region": "eu-west", "flag.new_ranker": "on"}) == ["s-de"]
    assert session_ids(client, {"attr.gen_ai.request.model": "gpt-4o-mini", "locale": "en-GB"}) == [
        "s-bank"
    ]
    assert session_ids(client, {"attr.app.region": "us-east"}) == []


def test_pagination_with_next_offset_walks_every_session_once(
    client: TestClient, data: dict[str, str]
) -> None:
    everything = session_ids(client, {})
    seen: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        body = client.get("/api/v1/sessions", params={"limit": "3", "offset": str(offset)}).json()
        assert body["limit"] == 3 and body["offset"] == offset
        seen += [s["session_id"] for s in body["sessions"]]
        offset = body["next_offset"]
        pages += 1
    assert seen == everything
    assert pages == 2
    first = client.get("/api/v1/sessions", params={"limit": "2"}).json()
    assert first["next_offset"] == 2
    last = client.get("/api/v1/sessions", params={"limit": "2", "offset": "2"}).json()
    # A full last page still offers a next page, which is then empty.
    assert last["next_offset"] == 4
    beyond = client.get("/api/v1/sessions", params={"limit": "2", "offset": "4"}).json()
    assert (beyond["sessions"], beyond["next_offset"]) == ([], None)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"since": "yesterday"}, "since: 'yesterday' is neither an ISO-8601 time"),
        ({"until": "2024-13-45"}, "until: '2024-13-45'"),
        ({"since": "999999999w"}, "since: '999999999w' is too long a duration"),
        ({"since": "99999999999d"}, "since: '99999999999d' is too long a duration"),
        ({"limit": "abc"}, "limit: expected an integer, got 'abc'"),
        ({"limit": "0"}, "limit: must be between 1 and 500"),
        ({"limit": "501"}, "limit: must be between 1 and 500"),
        ({"offset": "-1"}, "offset: must not be negative"),
        ({"offset": "1.5"}, "offset: expected an integer"),
        ({"colour": "red"}, "unknown filter 'colour'"),
        ({"attr.": "x"}, "unknown filter 'attr.'"),
        ({"flag.": "x"}, "unknown filter 'flag.'"),
    ],
)
def test_bad_filters_answer_400_naming_the_parameter(
    client: TestClient, params: dict[str, str], named: str
) -> None:
    response = client.get("/api/v1/sessions", params=params)
    assert response.status_code == 400
    assert named in response.json()["error"]
    page = client.get("/sessions", params=params)
    assert page.status_code == 400
    assert "text/html" in page.headers["content-type"]
    assert 'role="alert"' in page.text


def test_large_offsets_are_fine(client: TestClient, data: dict[str, str]) -> None:
    response = client.get("/api/v1/sessions", params={"offset": "100000"})
    assert response.status_code == 200
    assert response.json()["sessions"] == []


# -- single trace / session ----------------------------------------------------------------------------


def test_trace_api_returns_every_span_with_normalized_fields(
    client: TestClient, data: dict[str, str]
) -> None:
    trace = data["fr"]
    body = client.get(f"/api/v1/traces/{trace}").json()
    assert body["trace_id"] == trace
    spans = {s["name"]: s for s in body["spans"]}
    assert set(spans) == {"handle_message", "chat gpt-4o-mini"}
    llm = spans["chat gpt-4o-mini"]
    assert (llm["kind"], llm["model"], llm["input_tokens"], llm["stop_reason"]) == (
        "llm", "gpt-4o-mini", 1000, "stop",
    )  # fmt: skip
    assert (llm["status"], llm["status_message"]) == ("error", "boom")
    assert llm["session_id"] == "s-fr"  # inherited from the root
    assert llm["parent_id"] == spans["handle_message"]["span_id"]
    assert spans["handle_message"]["feature_flags"] == {"new_ranker": "off"}
    assert spans["handle_message"]["attributes"]["app.region"] == "eu-west"
    # Upper-case ids find the same trace.
    assert client.get(f"/api/v1/traces/{trace.upper()}").json() == body


def test_session_api_returns_turns_spans_feedback_and_outcomes(
    client: TestClient, data: dict[str, str]
) -> None:
    assert client.post(
        "/api/v1/feedback", json={"session_id": "s-de", "rating": "up", "id": "fb-1"}
    ).status_code == 202  # fmt: skip
    body = client.get("/api/v1/sessions/s-de").json()
    assert body["session_id"] == "s-de"
    assert body["turn_count"] == 2
    assert [t["trace_id"] for t in body["turns"]] == [data["de"], data["de_second"]]
    first = body["turns"][0]
    assert (first["input_text"], first["output_text"]) == (
        "Wo ist meine Erstattung?", "Sie wurde gestern überwiesen.",
    )  # fmt: skip
    assert len(body["spans"]) == 4
    assert [f["id"] for f in body["feedback"]] == ["fb-1"]
    assert body["outcomes"] == []


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/v1/traces/0123456789abcdef0123456789abcdef", "no trace"),
        ("/api/v1/traces/not-a-trace", "no trace 'not-a-trace'"),
        ("/api/v1/sessions/s-nobody", "no session 's-nobody'"),
    ],
)
def test_unknown_trace_or_session_is_a_404_json_error(
    client: TestClient, data: dict[str, str], path: str, message: str
) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


# -- HTML pages -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/sessions"])
def test_session_list_pages_render_the_sessions(
    client: TestClient, data: dict[str, str], path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    for session in ("s-old", "s-de", "s-fr", "s-bank"):
        assert f'href="/sessions/{session}"' in response.text
    assert "de-DE" in response.text and "enterprise" in response.text


def test_session_list_page_applies_filters_and_links_the_next_page(
    client: TestClient, data: dict[str, str]
) -> None:
    page = client.get("/sessions", params={"locale": "de-DE"})
    assert page.status_code == 200
    assert "s-de" in page.text and "s-fr" not in page.text
    paged = client.get("/sessions", params={"limit": "2", "project": "shop"})
    assert 'rel="next"' in paged.text
    assert "offset=2" in paged.text
    assert "project=shop" in paged.text


def test_empty_session_list_page_says_so(client: TestClient) -> None:
    page = client.get("/sessions")
    assert page.status_code == 200
    assert "No sessions match" in page.text


def test_session_page_shows_the_conversation(client: TestClient, data: dict[str, str]) -> None:
    page = client.get("/sessions/s-de")
    assert page.status_code == 200
    assert "s-de" in page.text
    assert "Wo ist meine Erstattung?" in page.text
    assert "Sie wurde gestern überwiesen." in page.text
    assert f'href="/traces/{data["de"]}"' in page.text
    assert f'href="/traces/{data["de_second"]}"' in page.text


def test_trace_page_shows_every_span(client: TestClient, data: dict[str, str]) -> None:
    trace = data["fr"]
    page = client.get(f"/traces/{trace}")
    assert page.status_code == 200
    assert trace in page.text
    assert "handle_message" in page.text and "chat gpt-4o-mini" in page.text
    assert 'href="/sessions/s-fr"' in page.text
    assert "eu-west" in page.text  # attributes are shown


def test_pages_escape_user_content(client: TestClient) -> None:
    ingest(client, turn("s-xss", ago_s=60, question="<script>alert(1)</script>"), service="shop")
    page = client.get("/sessions/s-xss")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_session_ids_with_spaces_and_unicode_are_linked_and_found(client: TestClient) -> None:
    session = "sess ä 1"
    ingest(client, turn(session, ago_s=60), service="shop")
    listing = client.get("/sessions").text
    assert 'href="/sessions/sess%20%C3%A4%201"' in listing
    assert client.get("/sessions/sess%20%C3%A4%201").status_code == 200
    assert client.get(f"/api/v1/sessions/{quote(session)}").json()["session_id"] == session


def test_session_ids_with_a_slash_are_reachable(client: TestClient) -> None:
    session = "tenant/42"
    ingest(client, turn(session, ago_s=60), service="shop")
    assert session_ids(client, {"session_id": session}) == [session]
    assert client.get(f"/api/v1/sessions/{quote(session, safe='')}").status_code == 200
    page = client.get("/sessions")
    assert f'href="/sessions/{quote(session, safe="")}"' in page.text
    assert client.get(f"/sessions/{quote(session, safe='')}").status_code == 200


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/sessions/s-nobody", "no session"),
        ("/traces/0123456789abcdef0123456789abcdef", "no trace"),
    ],
)
def test_unknown_ids_render_a_404_page(
    client: TestClient, data: dict[str, str], path: str, message: str
) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"]
    assert message in response.text


# -- service documents ------------------------------------------------------------------------------------


def test_openapi_lists_the_api_routes_and_not_the_pages(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    assert {
        "/v1/traces",
        "/api/v1/feedback",
        "/api/v1/outcomes",
        "/api/v1/traces/{trace_id}",
        "/api/v1/sessions/{session_id}",
        "/api/v1/sessions",
        "/healthz",
    } <= set(paths)
    assert "post" in paths["/v1/traces"] and "post" in paths["/api/v1/feedback"]
    content = paths["/v1/traces"]["post"]["requestBody"]["content"]
    assert {"application/x-protobuf", "application/json"} <= set(content)
    for page in ("/", "/sessions", "/sessions/{session_id}", "/traces/{trace_id}"):
        assert page not in paths
    assert "FeedbackIn" in json.dumps(document["components"])


def test_healthz_reports_the_store_and_the_writer(client: TestClient, data: dict[str, str]) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["store"] == "duckdb"
    assert body["queued_spans"] == 0
    assert body["committed_spans"] == 10
    assert 1 <= body["commits"] <= 10
    assert isinstance(body["version"], str) and body["version"]
