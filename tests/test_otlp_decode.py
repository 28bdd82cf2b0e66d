"""The two OTLP decoders agree: protobuf and OTLP/JSON give the same RawSpans."""

from __future__ import annotations

import base64
import gzip
import json
import math
import zlib
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from goldenloop.ingest.otlp import (
    BodyTooLarge,
    OtlpDecodeError,
    decode_json,
    decode_protobuf,
    decompress,
    encode_export_response,
)
from goldenloop.ingest.raw import STATUS_ERROR, RawEvent, RawSpan

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("0102030405060708")
START = 1_764_350_000_000_000_000


# -- encoders ---------------------------------------------------------------------------------


def set_any_value(target: AnyValue, value: Any) -> None:
    """Fill a protobuf AnyValue from a Python value (bytes stay bytes)."""
    if value is None:
        return
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, list):
        target.array_value.SetInParent()
        for item in value:
            set_any_value(target.array_value.values.add(), item)
    else:
        target.kvlist_value.SetInParent()
        fill_attributes(target.kvlist_value.values, value)


def fill_attributes(target: Any, attributes: dict[str, Any]) -> None:
    for key, value in attributes.items():
        kv: KeyValue = target.add()
        kv.key = key
        set_any_value(kv.value, value)


def build_request(
    attributes: dict[str, Any],
    *,
    resource: dict[str, Any] | None = None,
    events: list[tuple[str, int, dict[str, Any]]] | None = None,
    status: tuple[int, str] = (0, ""),
    kind: int = 3,
    parent: bytes = PARENT,
) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    fill_attributes(resource_spans.resource.attributes, resource or {"service.name": "svc"})
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "my.instrumentation"
    span = scope_spans.spans.add()
    span.trace_id = TRACE
    span.span_id = SPAN
    span.parent_span_id = parent
    span.name = "chat gpt-4o"
    span.kind = kind  # type: ignore[assignment]
    span.start_time_unix_nano = START
    span.end_time_unix_nano = START + 1_200_000_000
    fill_attributes(span.attributes, attributes)
    for name, when, event_attributes in events or []:
        event = span.events.add()
        event.name = name
        event.time_unix_nano = when
        fill_attributes(event.attributes, event_attributes)
    span.status.code = status[0]  # type: ignore[assignment]
    span.status.message = status[1]
    return request


def to_otlp_json(request: ExportTraceServiceRequest, *, snake_case: bool = False) -> bytes:
    """OTLP/JSON via protobuf's own JSON mapping, with OTLP's hex ids and integer enums."""
    document = MessageToDict(
        request, use_integers_for_enums=True, preserving_proto_field_name=snake_case
    )
    id_fields = ("trace_id", "span_id", "parent_span_id") if snake_case else (
        "traceId", "spanId", "parentSpanId",
    )  # fmt: skip
    spans_key, scopes_key = ("spans", "scope_spans" if snake_case else "scopeSpans")
    resource_key = "resource_spans" if snake_case else "resourceSpans"
    for resource_spans in document.get(resource_key, []):
        for scope_spans in resource_spans.get(scopes_key, []):
            for span in scope_spans.get(spans_key, []):
                for field in id_fields:
                    if field in span:
                        span[field] = base64.b64decode(span[field]).hex()
    return json.dumps(document).encode()


def decoded_value(value: Any) -> Any:
    """What both decoders hand out for a Python value: bytes become hex."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [decoded_value(v) for v in value]
    if isinstance(value, dict):
        return {k: decoded_value(v) for k, v in value.items()}
    return value


def decode_both(request: ExportTraceServiceRequest) -> list[RawSpan]:
    from_protobuf = decode_protobuf(request.SerializeToString())
    from_json = decode_json(to_otlp_json(request))
    from_snake = decode_json(to_otlp_json(request, snake_case=True))
    assert from_protobuf == from_json
    assert from_protobuf == from_snake
    return from_protobuf


# -- identical output ---------------------------------------------------------------------------


ALL_KINDS = {
    "text": "héllo ✓",
    "empty": "",
    "int": 42,
    "negative": -(2**63),
    "big": 2**63 - 1,
    "double": 0.25,
    "whole_double": 3.0,
    "infinite": math.inf,
    "bool_true": True,
    "bool_false": False,
    "bytes": b"\x00\x01\xfe\xff",
    "array": ["a", 1, 2.5, False, b"\x10", ["nested"], {"k": "v"}],
    "empty_array": [],
    "kvlist": {"model": "gpt-4o", "tokens": 12, "inner": {"deep": [True]}},
    "empty_kvlist": {},
    "unset": None,
}


def test_every_any_value_kind_decodes_the_same_from_protobuf_and_json() -> None:
    (span,) = decode_both(build_request(ALL_KINDS))
    assert span.attributes == decoded_value(ALL_KINDS)
    assert span.attributes["bytes"] == "0001feff"
    assert span.attributes["array"][4] == "10"


def test_span_fields_events_and_status_decode_the_same() -> None:
    request = build_request(
        {"gen_ai.request.model": "gpt-4o"},
        resource={"service.name": "checkout", "deployment.environment": "prod"},
        events=[
            ("exception", START + 5, {"exception.type": "TimeoutError", "retry": 2}),
            ("feature_flag.evaluation", START + 6, {"feature_flag.key": "ranker"}),
            ("empty", START + 7, {}),
        ],
        status=(STATUS_ERROR, "upstream timed out"),
        kind=2,
    )
    (span,) = decode_both(request)
    assert span == RawSpan(
        trace_id=TRACE.hex(),
        span_id=SPAN.hex(),
        parent_span_id=PARENT.hex(),
        name="chat gpt-4o",
        start_time_unix_nano=START,
        end_time_unix_nano=START + 1_200_000_000,
        attributes={"gen_ai.request.model": "gpt-4o"},
        resource={"service.name": "checkout", "deployment.environment": "prod"},
        events=[
            RawEvent("exception", START + 5, {"exception.type": "TimeoutError", "retry": 2}),
            RawEvent("feature_flag.evaluation", START + 6, {"feature_flag.key": "ranker"}),
            RawEvent("empty", START + 7, {}),
        ],
        status_code=STATUS_ERROR,
        status_message="upstream timed out",
        otel_kind=2,
        scope_name="my.instrumentation",
    )


def test_a_root_span_has_no_parent_in_either_encoding() -> None:
    (span,) = decode_both(build_request({}, parent=b""))
    assert span.parent_span_id is None


def test_several_resources_and_scopes_keep_their_own_resource() -> None:
    request = build_request({"n": 1}, resource={"service.name": "a"})
    second = request.resource_spans.add()
    fill_attributes(second.resource.attributes, {"service.name": "b"})
    for scope_name in ("s1", "s2"):
        scope = second.scope_spans.add()
        scope.scope.name = scope_name
        span = scope.spans.add()
        span.CopyFrom(request.resource_spans[0].scope_spans[0].spans[0])
        span.name = scope_name
    spans = decode_both(request)
    assert [(s.resource["service.name"], s.scope_name, s.name) for s in spans] == [
        ("a", "my.instrumentation", "chat gpt-4o"),
        ("b", "s1", "s1"),
        ("b", "s2", "s2"),
    ]


def test_sdk_spans_decode_with_their_ids_attributes_events_and_status() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "sdk-app"}), shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.sdk", "1.0")
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span(
            "llm",
            kind=SpanKind.CLIENT,
            attributes={"tokens": 7, "ratio": 0.5, "ok": True, "tags": ["a", "b"]},
        ) as child:
            child.add_event("exception", {"exception.type": "ValueError"})
            child.set_status(Status(StatusCode.ERROR, "bad value"))
    provider.shutdown()
    request = encode_spans(exporter.get_finished_spans())
    by_name = {s.name: s for s in decode_both(request)}
    llm, top = by_name["llm"], by_name["root"]
    assert llm.trace_id == format(root.get_span_context().trace_id, "032x")
    assert llm.span_id == format(child.get_span_context().span_id, "016x")
    assert llm.parent_span_id == top.span_id
    assert top.parent_span_id is None
    assert llm.attributes == {"tokens": 7, "ratio": 0.5, "ok": True, "tags": ["a", "b"]}
    assert [e.name for e in llm.events] == ["exception"]
    assert llm.events[0].attributes == {"exception.type": "ValueError"}
    assert (llm.status_code, llm.status_message) == (STATUS_ERROR, "bad value")
    assert (llm.otel_kind, top.otel_kind) == (3, 2)  # CLIENT, SERVER on the wire
    assert llm.resource["service.name"] == "sdk-app"
    assert llm.scope_name == "tests.sdk"


# -- property: random attributes ----------------------------------------------------------------


_keys = st.text(min_size=1, max_size=12)
_scalars = (
    st.text(max_size=20)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.binary(max_size=8)
)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6))
def test_random_attributes_decode_identically_from_protobuf_and_json(
    attributes: dict[str, Any],
) -> None:
    (span,) = decode_both(build_request(attributes))
    assert span.attributes == decoded_value(attributes)


# -- JSON spellings ---------------------------------------------------------------------------------


def _camel_document() -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "lib"},
                        "spans": [
                            {
                                "traceId": TRACE.hex(),
                                "spanId": SPAN.hex(),
                                "parentSpanId": PARENT.hex(),
                                "name": "n",
                                "kind": 3,
                                "startTimeUnixNano": str(START),
                                "endTimeUnixNano": START + 10,
                                "attributes": [
                                    {"key": "i", "value": {"intValue": 5}},
                                    {"key": "d", "value": {"doubleValue": 1}},
                                    {"key": "b", "value": {"bytesValue": "AQI="}},
                                    {
                                        "key": "a",
                                        "value": {"arrayValue": {"values": [{"boolValue": True}]}},
                                    },
                                    {
                                        "key": "k",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [
                                                    {"key": "x", "value": {"stringValue": "y"}}
                                                ]
                                            }
                                        },
                                    },
                                ],
                                "events": [
                                    {"name": "e", "timeUnixNano": str(START + 1), "attributes": []}
                                ],
                                "status": {"code": 2, "message": "m"},
                            }
                        ],
                    }
                ],
            }
        ]
    }


_SNAKE = {
    "resourceSpans": "resource_spans",
    "scopeSpans": "scope_spans",
    "traceId": "trace_id",
    "spanId": "span_id",
    "parentSpanId": "parent_span_id",
    "startTimeUnixNano": "start_time_unix_nano",
    "endTimeUnixNano": "end_time_unix_nano",
    "timeUnixNano": "time_unix_nano",
    "stringValue": "string_value",
    "intValue": "int_value",
    "doubleValue": "double_value",
    "boolValue": "bool_value",
    "bytesValue": "bytes_value",
    "arrayValue": "array_value",
    "kvlistValue": "kvlist_value",
}


def _snake(value: Any) -> Any:
    if isinstance(value, dict):
        return {_SNAKE.get(k, k): _snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake(v) for v in value]
    return value


def test_snake_case_json_decodes_like_camel_case() -> None:
    camel = decode_json(json.dumps(_camel_document()).encode())
    snake = decode_json(json.dumps(_snake(_camel_document())).encode())
    assert camel == snake
    (span,) = camel
    assert span.attributes == {
        "i": 5,
        "d": 1.0,
        "b": "0102",
        "a": [True],
        "k": {"x": "y"},
    }
    assert isinstance(span.attributes["d"], float)
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (START, START + 10)
    assert span.events == [RawEvent("e", START + 1, {})]
    assert (span.status_code, span.status_message, span.otel_kind) == (2, "m", 3)


def test_json_ids_are_lower_cased_and_int64s_may_be_strings_numbers_or_whole_floats() -> None:
    document = _camel_document()
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["traceId"] = TRACE.hex().upper()
    span["startTimeUnixNano"] = float(START)
    span["attributes"] = [{"key": "i", "value": {"intValue": "-7"}}]
    (decoded,) = decode_json(json.dumps(document).encode())
    assert decoded.trace_id == TRACE.hex()
    assert decoded.start_time_unix_nano == START
    assert decoded.attributes == {"i": -7}


def test_json_nulls_and_missing_sections_mean_empty() -> None:
    assert decode_json(b"{}") == []
    assert decode_json(b'{"resourceSpans": null}') == []
    assert decode_json(b'{"resourceSpans": [{"scopeSpans": [{"spans": []}]}]}') == []
    document = _camel_document()
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span.update(attributes=None, events=None, status=None, parentSpanId="")
    del document["resourceSpans"][0]["resource"]
    (decoded,) = decode_json(json.dumps(document).encode())
    assert (decoded.attributes, decoded.events, decoded.resource) == ({}, [], {})
    assert (decoded.status_code, decoded.parent_span_id) == (0, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x00\x01", "not valid JSON"),
        (b'{"resourceSpans": [{"resource": 1}]}', "resourceSpans[0].resource: expected an object"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 5}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected a hex string",
        ),
        (b'"\\ud800"', "unpaired UTF-16 surrogate"),
    ],
)
def test_json_errors_name_the_path(body: bytes, message: str) -> None:
    with pytest.raises(OtlpDecodeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_json(body)


def test_corrupt_protobuf_raises_a_decode_error() -> None:
    body = build_request({"k": "v"}).SerializeToString()
    with pytest.raises(OtlpDecodeError, match="not a valid OTLP ExportTraceServiceRequest"):
        decode_protobuf(body[:-3])
    assert decode_protobuf(b"") == []


# -- decompression ------------------------------------------------------------------------------------


def test_decompress_handles_identity_gzip_and_deflate() -> None:
    data = b"x" * 1000
    assert decompress(data, None, 10) == data  # identity is not limited here
    assert decompress(data, "identity", 10) == data
    assert decompress(gzip.compress(data), "gzip", 1000) == data
    assert decompress(gzip.compress(data), " X-GZIP ", 1000) == data
    assert decompress(zlib.compress(data), "deflate", 1000) == data


def test_decompress_refuses_to_inflate_past_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 1_000_000)
    with pytest.raises(BodyTooLarge, match="larger than the limit of 999999 bytes"):
        decompress(bomb, "gzip", 999_999)
    assert len(decompress(bomb, "gzip", 1_000_000)) == 1_000_000


def test_decompress_rejects_bad_truncated_or_unknown_encodings() -> None:
    compressed = gzip.compress(b"payload" * 100)
    with pytest.raises(OtlpDecodeError, match="not valid gzip"):
        decompress(b"plain text", "gzip", 1000)
    with pytest.raises(OtlpDecodeError, match="truncated"):
        decompress(compressed[:-8], "gzip", 1000)
    with pytest.raises(OtlpDecodeError, match="truncated"):
        decompress(zlib.compress(b"payload" * 100)[:-2], "deflate", 1000)
    with pytest.raises(OtlpDecodeError, match="unsupported Content-Encoding 'zstd'"):
        decompress(compressed, "zstd", 1000)


# -- responses -----------------------------------------------------------------------------------------


def test_export_response_in_both_encodings() -> None:
    assert encode_export_response(as_json=True) == (b"{}", "application/json")
    body, media_type = encode_export_response(3, "three rejected", as_json=True)
    assert media_type == "application/json"
    assert json.loads(body) == {
        "partialSuccess": {"rejectedSpans": "3", "errorMessage": "three rejected"}
    }
    body, media_type = encode_export_response(2, "two", as_json=False)
    assert media_type == "application/x-protobuf"
    response = ExportTraceServiceResponse()
    response.ParseFromString(body)
    assert (response.partial_success.rejected_spans, response.partial_success.error_message) == (
        2, "two",
    )  # fmt: skip
    assert encode_export_response(as_json=False) == (b"", "application/x-protobuf")
