"""OTLP/HTTP, feedback and outcome ingest through the real app, writer and DuckDB file.

Every rejection is checked three ways: the status code, a message that names the
problem, and that the server goes on serving with earlier data intact.
"""

from __future__ import annotations

import base64
import gzip
import json
import secrets
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from goldenloop.config import Settings
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

SPAN_PATH = "resourceSpans[0].scopeSpans[0].spans[0]"
JSON = {"content-type": "application/json"}
PROTOBUF = {"content-type": "application/x-protobuf"}


# -- payload builders ----------------------------------------------------------------------


def any_value(value: Any) -> dict[str, Any]:
    """A Python value as an OTLP/JSON AnyValue."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    assert isinstance(value, dict)
    return {"kvlistValue": {"values": key_values(value)}}


def key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in attributes.items()]


def trace_id() -> str:
    return secrets.token_hex(16)


def span_id() -> str:
    return secrets.token_hex(8)


def json_span(
    *,
    trace: str | None = None,
    span: str | None = None,
    parent: str | None = None,
    name: str = "chat",
    start_ns: int | None = None,
    duration_ns: int = 1_500_000_000,
    attributes: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    start = time.time_ns() - 5_000_000_000 if start_ns is None else start_ns
    doc: dict[str, Any] = {
        "traceId": trace or trace_id(),
        "spanId": span or span_id(),
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + duration_ns),
        "attributes": key_values(attributes or {}),
    }
    if parent:
        doc["parentSpanId"] = parent
    doc.update(extra)
    return doc


def otlp_json(*spans: dict[str, Any], service: str = "checkout") -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values({"service.name": service})},
                "scopeSpans": [{"scope": {"name": "tests"}, "spans": list(spans)}],
            }
        ]
    }


def body_of(document: Any) -> bytes:
    return json.dumps(document).encode()


def sdk_protobuf(service: str = "checkout", session: str = "sess-sdk") -> tuple[bytes, str]:
    """A real SDK trace (root LLM span + tool child) encoded as OTLP protobuf."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span(
        "chat gpt-4o-mini",
        attributes={
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 30,
            "session.id": session,
        },
    ) as root:
        with tracer.start_as_current_span(
            "lookup_order", attributes={"gen_ai.tool.name": "orders"}
        ):
            pass
        root.set_status(Status(StatusCode.OK))
    spans = exporter.get_finished_spans()
    provider.shutdown()
    return encode_spans(spans).SerializeToString(), format(spans[0].context.trace_id, "032x")


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[DuckDBStore]:
    store = DuckDBStore(tmp_path / "x.duckdb")
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def make_client(store: DuckDBStore, **settings: Any) -> TestClient:
    settings.setdefault("batch_max_wait_ms", 1)
    return TestClient(create_app(Settings(**settings), store))


@pytest.fixture
def client(db: DuckDBStore) -> Iterator[TestClient]:
    with make_client(db) as c:
        yield c


def post_spans(client: TestClient, *spans: dict[str, Any], **kwargs: Any) -> Any:
    return client.post("/v1/traces", content=body_of(otlp_json(*spans, **kwargs)), headers=JSON)


def stored_span_ids(db: DuckDBStore) -> set[str]:
    return {row[0] for row in db.fetch("SELECT span_id FROM spans")}


@pytest.fixture
def seeded(client: TestClient, db: DuckDBStore) -> dict[str, Any]:
    """A trace stored before the bad request, to check it survives untouched."""
    trace = trace_id()
    spans = [json_span(trace=trace, attributes={"session.id": "seed"}) for _ in range(2)]
    assert post_spans(client, *spans).status_code == 200
    return {"trace": trace, "rows": sorted(db.fetch("SELECT * FROM spans"))}


def assert_still_serving(client: TestClient, db: DuckDBStore, seeded: dict[str, Any]) -> None:
    """The server answers a good request afterwards and the seeded data is unchanged."""
    before = sorted(db.fetch("SELECT * FROM spans"))
    assert before == seeded["rows"], "the rejected request changed the store"
    good = json_span()
    response = post_spans(client, good)
    assert response.status_code == 200, response.text
    assert good["spanId"] in stored_span_ids(db)
    trace = client.get(f"/api/v1/traces/{seeded['trace']}")
    assert trace.status_code == 200
    assert len(trace.json()["spans"]) == 2


def error_of(response: Any) -> str:
    body = response.json()
    return body["error"] + " " + " ".join(body.get("problems", []))


# -- happy paths -----------------------------------------------------------------------------


def test_sdk_protobuf_export_is_stored_and_answered_with_an_export_response(
    client: TestClient, db: DuckDBStore
) -> None:
    body, trace = sdk_protobuf()
    response = client.post("/v1/traces", content=body, headers=PROTOBUF)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    parsed = ExportTraceServiceResponse()
    parsed.ParseFromString(response.content)
    assert not parsed.HasField("partial_success")
    spans = client.get(f"/api/v1/traces/{trace}").json()["spans"]
    assert {s["name"] for s in spans} == {"chat gpt-4o-mini", "lookup_order"}
    assert all(s["project"] == "checkout" for s in spans)
    assert all(s["session_id"] == "sess-sdk" for s in spans)  # propagated to the child


def test_protobuf_is_the_default_when_no_content_type_is_sent(
    client: TestClient, db: DuckDBStore
) -> None:
    body, trace = sdk_protobuf()
    response = client.post("/v1/traces", content=body)
    assert "content-type" not in response.request.headers
    assert response.status_code == 200, response.text
    assert len(db.get_trace(trace)) == 2


def test_json_export_is_answered_with_json(client: TestClient) -> None:
    response = post_spans(client, json_span())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}


def test_content_type_is_matched_case_insensitively_and_ignores_parameters(
    client: TestClient, db: DuckDBStore
) -> None:
    span = json_span()
    response = client.post(
        "/v1/traces",
        content=body_of(otlp_json(span)),
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert span["spanId"] in stored_span_ids(db)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies_are_accepted(client: TestClient, db: DuckDBStore, encoding: str) -> None:
    span = json_span()
    raw = body_of(otlp_json(span))
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    response = client.post(
        "/v1/traces", content=body, headers={**JSON, "content-encoding": encoding}
    )
    assert response.status_code == 200, response.text
    assert span["spanId"] in stored_span_ids(db)


def test_empty_export_is_accepted_and_stores_nothing(client: TestClient, db: DuckDBStore) -> None:
    assert client.post("/v1/traces", content=b"{}", headers=JSON).status_code == 200
    assert client.post("/v1/traces", content=b"", headers=PROTOBUF).status_code == 200
    assert db.count_spans() == 0


# -- bad input: 400 --------------------------------------------------------------------------


def test_corrupt_protobuf_is_rejected_with_400(
    client: TestClient, db: DuckDBStore, seeded: dict[str, Any]
) -> None:
    body, _ = sdk_protobuf()
    for corrupt in (body[: len(body) // 2], b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f"):
        response = client.post("/v1/traces", content=corrupt, headers=PROTOBUF)
        assert response.status_code == 400
        assert "not a valid OTLP ExportTraceServiceRequest protobuf" in error_of(response)
    assert_still_serving(client, db, seeded)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"\xff\xfe\x00garbage", "body is not valid JSON"),
        (b"[]", "body: expected an ExportTraceServiceRequest object, got list"),
        (b'"resourceSpans"', "body: expected an ExportTraceServiceRequest object, got str"),
        (b'{"resourceSpans": {"a": 1}}', "resourceSpans: expected a list"),
        (b'{"resourceSpans": [7]}', "resourceSpans[0]: expected an object"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": "x"}]}]}',
            "resourceSpans[0].scopeSpans[0].spans: expected a list",
        ),
        (
            b'{"resourceSpans": [{"resource": {"attributes": {"k": 1}}}]}',
            "resourceSpans[0].resource.attributes: expected a list",
        ),
    ],
)
def test_json_that_is_not_an_export_request_is_rejected_with_400(
    client: TestClient, db: DuckDBStore, seeded: dict[str, Any], body: bytes, expected: str
) -> None:
    response = client.post("/v1/traces", content=body, headers=JSON)
    assert response.status_code == 400
    assert expected in error_of(response)
    assert_still_serving(client, db, seeded)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"startTimeUnixNano": "abc"}, f"{SPAN_PATH}.startTimeUnixNano"),
        ({"endTimeUnixNano": True}, f"{SPAN_PATH}.endTimeUnixNano"),
        ({"endTimeUnixNano": 1.5}, f"{SPAN_PATH}.endTimeUnixNano"),
        ({"attributes": {"a": 1}}, f"{SPAN_PATH}.attributes"),
        ({"attributes": [7]}, f"{SPAN_PATH}.attributes[0]"),
        ({"attributes": [{"key": 5, "value": {}}]}, f"{SPAN_PATH}.attributes[0].key"),
        (
            {"attributes": [{"key": "n", "value": {"intValue": "x"}}]},
            f"{SPAN_PATH}.attributes[0].value.intValue",
        ),
        (
            {"attributes": [{"key": "s", "value": {"stringValue": 5}}]},
            f"{SPAN_PATH}.attributes[0].value.stringValue",
        ),
        (
            {"attributes": [{"key": "b", "value": {"boolValue": "yes"}}]},
            f"{SPAN_PATH}.attributes[0].value.boolValue",
        ),
        (
            {"attributes": [{"key": "d", "value": {"doubleValue": "many"}}]},
            f"{SPAN_PATH}.attributes[0].value.doubleValue",
        ),
        (
            {"attributes": [{"key": "l", "value": {"arrayValue": {"values": [{"intValue": []}]}}}]},
            f"{SPAN_PATH}.attributes[0].value.arrayValue.values[0].intValue",
        ),
        (
            {"attributes": [{"key": "raw", "value": {"bytesValue": "not base64!"}}]},
            f"{SPAN_PATH}.attributes[0].value.bytesValue",
        ),
        ({"attributes": [{"key": "v", "value": "plain"}]}, f"{SPAN_PATH}.attributes[0].value"),
        ({"traceId": 12345}, f"{SPAN_PATH}.traceId"),
        ({"name": ["x"]}, f"{SPAN_PATH}.name"),
        ({"status": "ERROR"}, f"{SPAN_PATH}.status"),
        ({"status": {"code": "two"}}, f"{SPAN_PATH}.status.code"),
        ({"kind": "SERVER"}, f"{SPAN_PATH}.kind"),
        ({"events": {"name": "e"}}, f"{SPAN_PATH}.events"),
        (
            {"events": [{"name": "e", "timeUnixNano": "soon"}]},
            f"{SPAN_PATH}.events[0].timeUnixNano",
        ),
    ],
)
def test_json_with_wrong_types_is_rejected_with_400_naming_the_path(
    client: TestClient,
    db: DuckDBStore,
    seeded: dict[str, Any],
    change: dict[str, Any],
    path: str,
) -> None:
    span = json_span()
    span.update(change)
    response = post_spans(client, span)
    assert response.status_code == 400, response.text
    assert f"{path}:" in response.json()["error"]
    assert_still_serving(client, db, seeded)


def test_unpaired_surrogate_escape_in_json_is_rejected_with_400(
    client: TestClient, db: DuckDBStore, seeded: dict[str, Any]
) -> None:
    body = body_of(otlp_json(json_span(attributes={"text": "PLACEHOLDER"})))
    body = body.replace(b"PLACEHOLDER", b"broken \\ud800 text")
    response = client.post("/v1/traces", content=body, headers=JSON)
    assert response.status_code == 400
    assert "surrogate" in error_of(response)
    assert_still_serving(client, db, seeded)


def test_paired_surrogate_escapes_are_fine(client: TestClient, db: DuckDBStore) -> None:
    span = json_span(attributes={"text": "PLACEHOLDER"})
    body = body_of(otlp_json(span)).replace(b"PLACEHOLDER", b"smile \\ud83d\\ude00")
    assert client.post("/v1/traces", content=body, headers=JSON).status_code == 200
    (stored,) = db.get_trace(span["traceId"])
    assert stored.attributes["text"] == "smile \U0001f600"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"traceId": ""}, "traceId is missing"),
        ({"spanId": None}, "spanId is missing"),
        ({"traceId": "abcd"}, "traceId must be 16 bytes (32 hex characters), got 4"),
        ({"spanId": "0123456789abcdef00"}, "spanId must be 8 bytes (16 hex characters), got 18"),
        ({"traceId": "0" * 32}, "traceId is all zeros"),
        ({"spanId": "0" * 16}, "spanId is all zeros"),
        ({"parentSpanId": "0" * 16}, "parentSpanId is all zeros"),
        ({"parentSpanId": "12ab"}, "parentSpanId must be 8 bytes"),
        ({"spanId": "zzzzzzzzzzzzzzzz"}, "spanId is not hexadecimal"),
        ({"spanId": "-000000000000001"}, "spanId is not hexadecimal"),
        ({"spanId": "0x00000000000001"}, "spanId is not hexadecimal"),
        ({"spanId": " 00000000000001 "}, "spanId is not hexadecimal"),
        ({"traceId": "0000_0000_0000_0000_0000_0000_01"}, "traceId is not hexadecimal"),
    ],
)
def test_missing_short_zero_or_non_hex_ids_are_rejected_with_400(
    client: TestClient,
    db: DuckDBStore,
    seeded: dict[str, Any],
    change: dict[str, Any],
    problem: str,
) -> None:
    span = json_span()
    span.update(change)
    response = post_spans(client, span)
    assert response.status_code == 400, response.text
    assert problem in error_of(response)
    assert_still_serving(client, db, seeded)


def test_short_ids_in_protobuf_are_rejected_with_400(
    client: TestClient, db: DuckDBStore, seeded: dict[str, Any]
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = b"\x01" * 8  # 8 bytes instead of 16
    span.span_id = b""
    span.name = "short"
    span.start_time_unix_nano = time.time_ns()
    span.end_time_unix_nano = span.start_time_unix_nano + 1
    response = client.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 400
    text = error_of(response)
    assert "traceId must be 16 bytes (32 hex characters), got 16" in text
    assert "spanId is missing" in text
    assert_still_serving(client, db, seeded)


_YEAR_NS = 365 * 24 * 3600 * 10**9


@pytest.mark.parametrize(
    ("times", "problem"),
    [
        ({"startTimeUnixNano": "1000000000", "endTimeUnixNano": "2000000000"}, "is absurd"),
        ({"startTimeUnixNano": str(time.time_ns() + 50 * _YEAR_NS)}, "is absurd"),
        ({"startTimeUnixNano": str(2**64 - 1), "endTimeUnixNano": str(2**64 - 1)}, "is absurd"),
        ({"startTimeUnixNano": "0"}, "startTimeUnixNano is missing or zero"),
        ({"startTimeUnixNano": "-5"}, "startTimeUnixNano is missing or zero"),
        ({"endTimeUnixNano": "1"}, "endTimeUnixNano is before startTimeUnixNano"),
        (
            {"endTimeUnixNano": str(time.time_ns() + 30 * 24 * 3600 * 10**9)},
            "span lasts more than 7 days",
        ),
    ],
)
def test_absurd_timestamps_are_rejected_with_400(
    client: TestClient,
    db: DuckDBStore,
    seeded: dict[str, Any],
    times: dict[str, str],
    problem: str,
) -> None:
    span = json_span()
    span.update(times)
    response = post_spans(client, span)
    assert response.status_code == 400, response.text
    assert problem in error_of(response)
    assert_still_serving(client, db, seeded)


def test_attribute_over_max_attribute_bytes_is_rejected_naming_it(db: DuckDBStore) -> None:
    with make_client(db, max_attribute_bytes=1024) as client:
        ok = json_span(attributes={"small": "x" * 1000})
        assert post_spans(client, ok).status_code == 200
        for attributes in (
            {"huge.blob": "x" * 2000},
            {"huge.blob": "ü" * 600},  # 1200 bytes in UTF-8, 600 characters
            {"huge.blob": ["y" * 300] * 5},
            {"huge.blob": {"nested": "z" * 2000}},
        ):
            response = post_spans(client, json_span(attributes=attributes))
            assert response.status_code == 400, attributes
            assert "'huge.blob'" in error_of(response)
            assert "1024" in error_of(response)
        assert stored_span_ids(db) == {ok["spanId"]}
        assert post_spans(client, json_span()).status_code == 200


def test_body_over_max_request_bytes_is_rejected_with_413(db: DuckDBStore) -> None:
    limit = 4096
    with make_client(db, max_request_bytes=limit) as client:
        big = body_of(otlp_json(json_span(attributes={"pad": "p" * 2 * limit})))
        response = client.post("/v1/traces", content=big, headers=JSON)
        assert response.status_code == 413
        assert str(limit) in response.json()["error"]

        # Without Content-Length (chunked upload) the limit is enforced while reading.
        response = client.post(
            "/v1/traces", content=iter([big[i : i + 512] for i in range(0, len(big), 512)]),
            headers=JSON,
        )  # fmt: skip
        assert response.status_code == 413
        assert f"exceeds the limit of {limit} bytes" in response.json()["error"]

        assert db.count_spans() == 0
        assert post_spans(client, json_span()).status_code == 200


def test_gzip_bomb_is_rejected_with_413(db: DuckDBStore) -> None:
    limit = 64 * 1024
    with make_client(db, max_request_bytes=limit) as client:
        padding = "x" * (50 * limit)
        bomb = gzip.compress(body_of(otlp_json(json_span(attributes={"pad": padding}))))
        assert len(bomb) < limit  # small on the wire
        response = client.post(
            "/v1/traces", content=bomb, headers={**JSON, "content-encoding": "gzip"}
        )
        assert response.status_code == 413
        assert "decompressed body is larger than the limit" in response.json()["error"]
        zeros = gzip.compress(b"\0" * (10 * limit))
        response = client.post(
            "/v1/traces", content=zeros, headers={**PROTOBUF, "content-encoding": "gzip"}
        )
        assert response.status_code == 413
        assert db.count_spans() == 0
        assert post_spans(client, json_span()).status_code == 200


@pytest.mark.parametrize(
    ("encoding", "body", "expected"),
    [
        ("gzip", b"this is not gzip at all", "body is not valid gzip"),
        ("deflate", b"nor is this deflate", "body is not valid deflate"),
        ("br", b"whatever", "unsupported Content-Encoding 'br'"),
    ],
)
def test_bad_compression_is_rejected_with_400(
    client: TestClient,
    db: DuckDBStore,
    seeded: dict[str, Any],
    encoding: str,
    body: bytes,
    expected: str,
) -> None:
    response = client.post(
        "/v1/traces", content=body, headers={**JSON, "content-encoding": encoding}
    )
    assert response.status_code == 400
    assert expected in response.json()["error"]
    assert_still_serving(client, db, seeded)


def test_truncated_gzip_is_rejected_instead_of_storing_a_prefix(
    client: TestClient, db: DuckDBStore, seeded: dict[str, Any]
) -> None:
    body, trace = sdk_protobuf()
    compressed = gzip.compress(body)
    # Cutting off only the 8-byte trailer leaves a stream that inflates to the full body.
    for cut in (compressed[:-8], compressed[:-4], compressed[: len(compressed) - 20]):
        response = client.post(
            "/v1/traces", content=cut, headers={**PROTOBUF, "content-encoding": "gzip"}
        )
        assert response.status_code == 400
        assert "truncated" in response.json()["error"]
    assert db.get_trace(trace) == []
    assert_still_serving(client, db, seeded)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data"])
def test_unsupported_content_type_is_rejected_with_415(
    client: TestClient, db: DuckDBStore, seeded: dict[str, Any], content_type: str
) -> None:
    response = client.post(
        "/v1/traces",
        content=body_of(otlp_json(json_span())),
        headers={"content-type": content_type},
    )
    assert response.status_code == 415
    assert repr(content_type) in response.json()["error"]
    assert_still_serving(client, db, seeded)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"stringValue": "many"}, "must be an integer, got 'many'"),
        ({"boolValue": True}, "must be an integer, got bool"),
        ({"arrayValue": {"values": [{"intValue": "3"}]}}, "must be an integer, got list"),
        ({"kvlistValue": {"values": []}}, "must be an integer, got dict"),
        ({"intValue": "-3"}, "must not be negative"),
        ({"doubleValue": "Infinity"}, "must be an integer"),
        ({"doubleValue": "NaN"}, "must be an integer"),
        ({"intValue": str(2**70)}, "must be at most"),
    ],
)
def test_token_counts_of_the_wrong_type_are_rejected_naming_the_attribute(
    client: TestClient,
    db: DuckDBStore,
    seeded: dict[str, Any],
    value: dict[str, Any],
    problem: str,
) -> None:
    span = json_span(attributes={"gen_ai.request.model": "gpt-4o"})
    span["attributes"].append({"key": "gen_ai.usage.input_tokens", "value": value})
    response = post_spans(client, span)
    assert response.status_code == 400, response.text
    (reported,) = response.json()["problems"]
    assert "attribute 'gen_ai.usage.input_tokens'" in reported
    assert problem in reported
    assert_still_serving(client, db, seeded)


def test_token_counts_sent_as_strings_or_whole_doubles_are_accepted(
    client: TestClient, db: DuckDBStore
) -> None:
    span = json_span(attributes={"gen_ai.request.model": "gpt-4o"})
    span["attributes"] += [
        {"key": "gen_ai.usage.input_tokens", "value": {"stringValue": "1200"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"doubleValue": 300.0}},
    ]
    assert post_spans(client, span).status_code == 200
    (stored,) = db.get_trace(span["traceId"])
    assert (stored.input_tokens, stored.output_tokens) == (1200, 300)


@pytest.mark.parametrize("key", ["goldenloop.cost_usd", "goldenloop.score"])
def test_cost_and_score_that_are_not_numbers_are_rejected_naming_the_attribute(
    client: TestClient, key: str
) -> None:
    response = post_spans(client, json_span(attributes={key: "cheap"}))
    assert response.status_code == 400
    assert f"attribute {key!r} must be a number" in error_of(response)


def test_one_bad_span_among_good_ones_stores_nothing_and_names_it(
    client: TestClient, db: DuckDBStore, seeded: dict[str, Any]
) -> None:
    trace = trace_id()
    good = [json_span(trace=trace, name=f"good-{i}") for i in range(3)]
    bad = json_span(trace=trace, name="the-bad-one", endTimeUnixNano="1")
    response = post_spans(client, good[0], bad, *good[1:])
    assert response.status_code == 400
    body = response.json()
    assert "nothing was stored" in body["error"]
    assert body["problems"] == [
        f"span #1 'the-bad-one' (spanId {bad['spanId']}): "
        "endTimeUnixNano is before startTimeUnixNano"
    ]
    assert db.get_trace(trace) == []
    assert_still_serving(client, db, seeded)


def test_every_bad_span_is_listed(client: TestClient, db: DuckDBStore) -> None:
    spans = [json_span(name=f"s{i}", spanId="0" * 16) for i in range(3)]
    response = post_spans(client, *spans)
    assert response.status_code == 400
    problems = response.json()["problems"]
    assert [p.split(":")[0] for p in problems] == [
        "span #0 's0' (spanId 0000000000000000)",
        "span #1 's1' (spanId 0000000000000000)",
        "span #2 's2' (spanId 0000000000000000)",
    ]
    assert response.json()["error"].startswith("3 problem(s)")


# -- feedback and outcomes: 422 ----------------------------------------------------------------


GOOD_FEEDBACK = {"session_id": "s-1", "rating": "down", "category": "wrong"}
GOOD_OUTCOME = {"session_id": "s-1", "name": "refund_completed", "success": True}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rating": "meh"}, "rating"),
        ({"rating": 1}, "rating"),
        ({"category": "boring"}, "category"),
        ({"session_id": None}, "session_id"),
        ({"session_id": ""}, "session_id"),
        ({"colour": "red"}, "colour"),
        ({"comment": "c" * 10_001}, "comment"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"id": ""}, "id"),
    ],
)
def test_bad_feedback_is_rejected_with_422_naming_the_field(
    client: TestClient, db: DuckDBStore, change: dict[str, Any], field: str
) -> None:
    item = {**GOOD_FEEDBACK, **change}
    item = {k: v for k, v in item.items() if v is not None}
    response = client.post("/api/v1/feedback", json=item)
    assert response.status_code == 422
    body = response.json()
    assert any(p.startswith(f"{field}:") for p in body["problems"]), body
    assert field in body["error"]
    assert db.fetch("SELECT count(*) FROM feedback") == [(0,)]
    assert client.post("/api/v1/feedback", json=GOOD_FEEDBACK).status_code == 202


def test_feedback_that_is_not_a_json_object_is_rejected_with_422(client: TestClient) -> None:
    for content in (b"[1, 2]", b"not json"):
        response = client.post("/api/v1/feedback", content=content, headers=JSON)
        assert response.status_code == 422
        assert response.json()["error"].startswith("invalid request")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": None}, "name"),
        ({"session_id": None}, "session_id"),
        ({"success": "maybe"}, "success"),
        ({"value": "lots"}, "value"),
        ({"attributes": ["a"]}, "attributes"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_outcome_is_rejected_with_422_naming_the_field(
    client: TestClient, db: DuckDBStore, change: dict[str, Any], field: str
) -> None:
    item = {k: v for k, v in {**GOOD_OUTCOME, **change}.items() if v is not None}
    response = client.post("/api/v1/outcomes", json=item)
    assert response.status_code == 422
    assert any(p.startswith(f"{field}:") for p in response.json()["problems"])
    assert db.fetch("SELECT count(*) FROM outcomes") == [(0,)]
    assert client.post("/api/v1/outcomes", json=GOOD_OUTCOME).status_code == 202


def test_feedback_and_outcomes_are_stored_and_show_up_in_the_session(
    client: TestClient,
) -> None:
    assert post_spans(client, json_span(attributes={"session.id": "s-1"})).status_code == 200
    feedback = client.post("/api/v1/feedback", json={**GOOD_FEEDBACK, "comment": "wrong date"})
    assert feedback.status_code == 202
    assert feedback.json()["status"] == "stored"
    outcome = client.post(
        "/api/v1/outcomes", json={**GOOD_OUTCOME, "value": 42.5, "attributes": {"order": "o-1"}}
    )
    assert outcome.status_code == 202
    session = client.get("/api/v1/sessions/s-1").json()
    (fb,) = session["feedback"]
    assert (fb["id"], fb["rating"], fb["category"], fb["comment"]) == (
        feedback.json()["id"], "down", "wrong", "wrong date",
    )  # fmt: skip
    assert fb["project"] == "default"
    (oc,) = session["outcomes"]
    assert (oc["name"], oc["success"], oc["value"], oc["attributes"]) == (
        "refund_completed", True, 42.5, {"order": "o-1"},
    )  # fmt: skip


# -- API keys ------------------------------------------------------------------------------------


@pytest.fixture
def keyed(db: DuckDBStore) -> Iterator[TestClient]:
    with make_client(db, api_keys="shop:k1,bank:k2") as c:
        yield c


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key"),
        ({"authorization": "Bearer "}, "missing API key"),
        ({"authorization": "Basic azE6"}, "missing API key"),
        ({"authorization": "Bearer nope"}, "unknown API key"),
        ({"authorization": "Bearer shop"}, "unknown API key"),
    ],
)
def test_ingest_without_a_valid_api_key_is_rejected_with_401(
    keyed: TestClient, db: DuckDBStore, headers: dict[str, str], message: str
) -> None:
    responses = [
        keyed.post(
            "/v1/traces", content=body_of(otlp_json(json_span())), headers={**JSON, **headers}
        ),
        keyed.post("/api/v1/feedback", json=GOOD_FEEDBACK, headers=headers),
        keyed.post("/api/v1/outcomes", json=GOOD_OUTCOME, headers=headers),
    ]
    for response in responses:
        assert response.status_code == 401
        assert message in response.json()["error"]
        assert response.headers["www-authenticate"] == "Bearer"
    assert db.count_spans() == 0
    assert db.fetch("SELECT count(*) FROM feedback") == [(0,)]
    assert db.fetch("SELECT count(*) FROM outcomes") == [(0,)]


def test_api_key_decides_the_project_regardless_of_service_name(
    keyed: TestClient, db: DuckDBStore
) -> None:
    shop = json_span(attributes={"goldenloop.project": "bank"})
    bank = json_span()
    response = keyed.post(
        "/v1/traces",
        content=body_of(otlp_json(shop, service="bank")),
        headers={**JSON, "authorization": "Bearer k1"},
    )
    assert response.status_code == 200
    body, trace = sdk_protobuf(service="shop")
    assert keyed.post(
        "/v1/traces", content=body, headers={**PROTOBUF, "authorization": "bearer k2"}
    ).status_code == 200  # fmt: skip
    assert keyed.post(
        "/v1/traces",
        content=body_of(otlp_json(bank, service="shop")),
        headers={**JSON, "authorization": "Bearer  k2 "},
    ).status_code == 200  # fmt: skip
    projects = dict(db.fetch("SELECT span_id, project FROM spans"))
    assert projects[shop["spanId"]] == "shop"
    assert projects[bank["spanId"]] == "bank"
    assert {s.project for s in db.get_trace(trace)} == {"bank"}


def test_api_key_decides_the_project_of_feedback_and_outcomes(
    keyed: TestClient, db: DuckDBStore
) -> None:
    auth = {"authorization": "Bearer k2"}
    response = keyed.post(
        "/api/v1/feedback", json={**GOOD_FEEDBACK, "project": "shop"}, headers=auth
    )
    assert response.status_code == 202
    response = keyed.post(
        "/api/v1/outcomes", json={**GOOD_OUTCOME, "project": "shop"}, headers=auth
    )
    assert response.status_code == 202
    assert db.fetch("SELECT project FROM feedback") == [("bank",)]
    assert db.fetch("SELECT project FROM outcomes") == [("bank",)]


def test_without_api_keys_the_project_comes_from_attribute_then_service_then_default(
    client: TestClient, db: DuckDBStore
) -> None:
    by_attribute = json_span(attributes={"goldenloop.project": "attr-project"})
    by_service = json_span()
    assert post_spans(client, by_attribute, by_service, service="svc-project").status_code == 200
    nameless = {"resourceSpans": [{"scopeSpans": [{"spans": [json_span()]}]}]}
    assert client.post("/v1/traces", content=body_of(nameless), headers=JSON).status_code == 200
    projects = dict(db.fetch("SELECT span_id, project FROM spans"))
    assert projects.pop(by_attribute["spanId"]) == "attr-project"
    assert projects.pop(by_service["spanId"]) == "svc-project"
    assert list(projects.values()) == ["default"]


# -- backpressure ------------------------------------------------------------------------------


class SlowDuckDBStore(DuckDBStore):
    """The real DuckDB store, but every span commit takes a while."""

    delay = 0.3

    def insert_span_table(self, table: pa.Table, *, dedupe: bool = True) -> int:
        time.sleep(self.delay)
        return super().insert_span_table(table, dedupe=dedupe)


def test_full_queue_answers_429_with_retry_after_and_commits_everything_accepted(
    tmp_path: Path,
) -> None:
    store = SlowDuckDBStore(tmp_path / "slow.duckdb")
    store.migrate()
    requests = 8
    traces = [trace_id() for _ in range(requests)]
    bodies = [
        body_of(otlp_json(json_span(trace=t, name="a"), json_span(trace=t, name="b")))
        for t in traces
    ]
    barrier = threading.Barrier(requests)
    try:
        with make_client(store, max_queue_spans=2) as client:

            def post(body: bytes) -> Any:
                barrier.wait()
                return client.post("/v1/traces", content=body, headers=JSON)

            with ThreadPoolExecutor(requests) as pool:
                responses = list(pool.map(post, bodies))
            statuses = [r.status_code for r in responses]
            assert set(statuses) == {200, 429}, statuses
            for response in responses:
                if response.status_code == 429:
                    assert int(response.headers["retry-after"]) >= 1
                    assert "queue is full" in response.json()["error"]
            # Acknowledged means committed: readable right away, before shutdown.
            for trace, response in zip(traces, responses, strict=True):
                expected = 2 if response.status_code == 200 else 0
                assert len(store.get_trace(trace)) == expected
            assert client.get("/healthz").json()["queued_spans"] == 0
            # Once the queue drains, a retry succeeds.
            retry = bodies[statuses.index(429)]
            assert client.post("/v1/traces", content=retry, headers=JSON).status_code == 200
        assert store.count_spans() == 2 * (statuses.count(200) + 1)
    finally:
        store.close()


def test_requests_after_the_writer_stopped_get_503_with_retry_after(
    client: TestClient, db: DuckDBStore
) -> None:
    client.app.state.goldenloop.writer.stop()  # type: ignore[attr-defined]
    response = post_spans(client, json_span())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "shutting down" in response.json()["error"]
    assert client.post("/api/v1/feedback", json=GOOD_FEEDBACK).status_code == 503
    assert client.post("/api/v1/outcomes", json=GOOD_OUTCOME).status_code == 503
    assert db.count_spans() == 0


def test_concurrent_requests_during_slow_commits_are_all_acknowledged_and_stored(
    tmp_path: Path,
) -> None:
    store = SlowDuckDBStore(tmp_path / "slow.duckdb")
    store.migrate()
    results: list[int] = []
    spans = [json_span() for _ in range(4)]
    try:
        with make_client(store) as client:

            def post(span: dict[str, Any]) -> None:
                results.append(post_spans(client, span).status_code)

            threads = [threading.Thread(target=post, args=(s,)) for s in spans]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert results == [200] * 4
        assert stored_span_ids(store) == {s["spanId"] for s in spans}
    finally:
        store.close()


# -- idempotency ---------------------------------------------------------------------------------


def test_the_same_otlp_request_posted_twice_is_stored_once(
    client: TestClient, db: DuckDBStore
) -> None:
    body, trace = sdk_protobuf()
    for _ in range(2):
        assert client.post("/v1/traces", content=body, headers=PROTOBUF).status_code == 200
    assert len(db.get_trace(trace)) == 2
    assert db.count_spans() == 2
    doc = body_of(otlp_json(json_span(), json_span()))
    for _ in range(3):
        assert client.post("/v1/traces", content=doc, headers=JSON).status_code == 200
    assert db.count_spans() == 4


def test_duplicate_spans_within_one_request_are_stored_once(
    client: TestClient, db: DuckDBStore
) -> None:
    span = json_span()
    other = json_span(trace=span["traceId"])
    assert post_spans(client, span, span, other, span).status_code == 200
    assert db.fetch("SELECT span_id, count(*) FROM spans GROUP BY span_id ORDER BY 1") == sorted(
        [(span["spanId"], 1), (other["spanId"], 1)]
    )


def test_upper_case_ids_dedupe_against_lower_case_ones(client: TestClient, db: DuckDBStore) -> None:
    span = json_span()
    shouting = {**span, "traceId": span["traceId"].upper(), "spanId": span["spanId"].upper()}
    assert post_spans(client, span).status_code == 200
    assert post_spans(client, shouting).status_code == 200
    assert db.fetch("SELECT trace_id, span_id FROM spans") == [(span["traceId"], span["spanId"])]


def test_feedback_and_outcomes_with_the_same_id_are_stored_once(
    client: TestClient, db: DuckDBStore
) -> None:
    for _ in range(2):
        response = client.post("/api/v1/feedback", json={**GOOD_FEEDBACK, "id": "fb-1"})
        assert response.status_code == 202
        assert response.json() == {"id": "fb-1", "status": "stored"}
        response = client.post("/api/v1/outcomes", json={**GOOD_OUTCOME, "id": "oc-1"})
        assert response.json() == {"id": "oc-1", "status": "stored"}
    assert db.fetch("SELECT id FROM feedback") == [("fb-1",)]
    assert db.fetch("SELECT id FROM outcomes") == [("oc-1",)]
    # Without a client id every post is a new item.
    for _ in range(2):
        assert client.post("/api/v1/feedback", json=GOOD_FEEDBACK).status_code == 202
    assert db.fetch("SELECT count(*) FROM feedback") == [(3,)]


def test_span_ingest_keeps_working_after_feedback_and_outcomes(
    client: TestClient, db: DuckDBStore
) -> None:
    assert client.post("/api/v1/feedback", json=GOOD_FEEDBACK).status_code == 202
    assert client.post("/api/v1/outcomes", json=GOOD_OUTCOME).status_code == 202
    span = json_span()
    assert post_spans(client, span).status_code == 200
    assert span["spanId"] in stored_span_ids(db)
