"""Decode OTLP/HTTP trace requests (protobuf or JSON) into RawSpans.

Protobuf bodies have two decoders that give identical results. The compiled one
(``_otlp_fast``, built from ``_otlp_fast.c`` at install when a C compiler is present)
reads the wire format directly and handles ordinary bodies. For anything unusual
(malformed or truncated data, invalid UTF-8, sub-messages that protobuf would merge,
very deep nesting) it declines, and the pure-Python decoder, which parses with the
``opentelemetry-proto`` message classes, decides: it decodes the body or raises the
error. Without the extension the Python decoder does everything (``FAST_DECODER``
says which is in use).

The JSON decoder follows the OTLP/JSON mapping: ids are hex strings, 64-bit integers
may be strings or numbers, enums are integers, field names are lowerCamelCase (the
snake_case spelling is accepted too). Errors name the exact path of the bad field.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import gzip
import json
import re
import zlib
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from goldenloop.ingest.raw import RawEvent, RawSpan


class OtlpDecodeError(ValueError):
    """The request body is not a valid OTLP trace export; the message says where."""


class BodyTooLarge(ValueError):
    pass


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo Content-Encoding (gzip/deflate), refusing bodies that inflate past the limit."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate", "x-gzip"):
        raise OtlpDecodeError(f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    try:
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise OtlpDecodeError(f"body is not valid {encoding}: {exc}") from None
    if len(data) > max_bytes or inflater.unconsumed_tail:
        raise BodyTooLarge(f"decompressed body is larger than the limit of {max_bytes} bytes")
    if not inflater.eof:
        # A cut-off stream inflates to a prefix of the body without any zlib error.
        raise OtlpDecodeError(f"body is not valid {encoding}: the compressed stream is truncated")
    return data


# -- protobuf -------------------------------------------------------------------------


def _any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bool_value":
        return value.bool_value
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    return None


def _attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        value = kv.value
        which = value.WhichOneof("value")
        # Fast path for the common scalar types.
        if which == "string_value":
            out[kv.key] = value.string_value
        elif which == "int_value":
            out[kv.key] = value.int_value
        else:
            out[kv.key] = _any_value(value)
    return out


_FastDecode = Callable[[bytes, type[RawSpan], type[RawEvent]], list[RawSpan] | None]


def _load_fast_decoder() -> _FastDecode | None:
    """The compiled decoder, if it was built and passes RawSpan's fields in their order."""
    try:
        from goldenloop.ingest import _otlp_fast
    except ImportError:
        return None
    if _otlp_fast.RAW_SPAN_FIELDS != tuple(f.name for f in dataclasses.fields(RawSpan)):
        return None
    return _otlp_fast.decode


_fast_decode = _load_fast_decoder()

#: Whether ``decode_protobuf`` tries the compiled decoder first.
FAST_DECODER = _fast_decode is not None


def decode_protobuf(body: bytes) -> list[RawSpan]:
    """The spans of an OTLP/protobuf ExportTraceServiceRequest; raises OtlpDecodeError.

    The compiled decoder handles ordinary bodies; whatever it declines goes through
    ``_decode_protobuf_python``, which gives the same result or the error.
    """
    if _fast_decode is not None:
        spans = _fast_decode(body, RawSpan, RawEvent)
        if spans is not None:
            return spans
    return _decode_protobuf_python(body)


def _decode_protobuf_python(body: bytes) -> list[RawSpan]:
    """Parse with the protobuf message classes and walk them (the reference decoder)."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise OtlpDecodeError(
            f"body is not a valid OTLP ExportTraceServiceRequest protobuf ({exc}); "
            "send Content-Type application/json for OTLP/JSON"
        ) from None
    spans: list[RawSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            for span in scope_spans.spans:
                status = span.status
                events = span.events
                parent = span.parent_span_id
                spans.append(
                    RawSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=parent.hex() if parent else None,
                        name=span.name,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        resource=resource,
                        events=[
                            RawEvent(e.name, e.time_unix_nano, _attributes(e.attributes))
                            for e in events
                        ]
                        if events
                        else [],
                        status_code=status.code,
                        status_message=status.message,
                        otel_kind=span.kind,
                        scope_name=scope_name,
                    )
                )
    return spans


# -- JSON -----------------------------------------------------------------------------


def _field(obj: dict[str, Any], camel: str, path: str, default: Any = None) -> Any:
    if camel in obj:
        return obj[camel]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return obj.get(snake, default)


def _expect(value: Any, kind: type | tuple[type, ...], path: str, what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise OtlpDecodeError(f"{path}: expected {what}, got {type(value).__name__}")
    return value


def _int64(value: Any, path: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise OtlpDecodeError(f"{path}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise OtlpDecodeError(f"{path}: expected an integer, got {value[:40]!r}") from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise OtlpDecodeError(f"{path}: expected an integer, got {type(value).__name__}")


def _json_any_value(value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise OtlpDecodeError(f"{path}: expected an AnyValue object, got {type(value).__name__}")
    if "stringValue" in value or "string_value" in value:
        return _expect(_field(value, "stringValue", path), str, path + ".stringValue", "a string")
    if "intValue" in value or "int_value" in value:
        return _int64(_field(value, "intValue", path), path + ".intValue")
    if "doubleValue" in value or "double_value" in value:
        number = _field(value, "doubleValue", path)
        if isinstance(number, str):
            try:
                return float(number)
            except ValueError:
                raise OtlpDecodeError(f"{path}.doubleValue: expected a number") from None
        return float(_expect(number, (int, float), path + ".doubleValue", "a number"))
    if "boolValue" in value or "bool_value" in value:
        return _expect(_field(value, "boolValue", path), bool, path + ".boolValue", "a boolean")
    if "arrayValue" in value or "array_value" in value:
        array = _expect(_field(value, "arrayValue", path), dict, path + ".arrayValue", "an object")
        items = _expect(array.get("values", []), list, path + ".arrayValue.values", "a list")
        return [_json_any_value(v, f"{path}.arrayValue.values[{i}]") for i, v in enumerate(items)]
    if "kvlistValue" in value or "kvlist_value" in value:
        kvlist = _expect(
            _field(value, "kvlistValue", path), dict, path + ".kvlistValue", "an object"
        )
        return _json_attributes(kvlist.get("values", []), path + ".kvlistValue.values")
    if "bytesValue" in value or "bytes_value" in value:
        # OTLP/JSON carries bytes as base64; hand them out as hex like decode_protobuf.
        text = _expect(
            _field(value, "bytesValue", path), str, path + ".bytesValue", "a base64 string"
        )
        try:
            return base64.b64decode(text, validate=True).hex()
        except (binascii.Error, ValueError):
            raise OtlpDecodeError(f"{path}.bytesValue: expected a base64 string") from None
    return None


def _json_attributes(items: Any, path: str) -> dict[str, Any]:
    items = _expect(items if items is not None else [], list, path, "a list of key/value objects")
    out: dict[str, Any] = {}
    for i, kv in enumerate(items):
        item_path = f"{path}[{i}]"
        _expect(kv, dict, item_path, "a key/value object")
        key = _expect(kv.get("key"), str, item_path + ".key", "a string")
        out[key] = _json_any_value(kv.get("value", {}), item_path + ".value")
    return out


def _json_id(value: Any, path: str) -> str:
    if value is None or value == "":
        return ""
    return str(_expect(value, str, path, "a hex string")).lower()


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def decode_json(body: bytes) -> list[RawSpan]:
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OtlpDecodeError(f"body is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(body) or b"\x00" in body[:4]:
        # "\ud800" escapes decode to lone surrogates, which no store can encode.
        try:
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise OtlpDecodeError(
                "body is not valid JSON: it contains an unpaired UTF-16 surrogate escape"
            ) from None
    _expect(document, dict, "body", "an ExportTraceServiceRequest object")
    spans: list[RawSpan] = []
    resource_list = _expect(
        _field(document, "resourceSpans", "") or [], list, "resourceSpans", "a list"
    )
    for r, resource_spans in enumerate(resource_list):
        rpath = f"resourceSpans[{r}]"
        _expect(resource_spans, dict, rpath, "an object")
        resource_obj = _expect(
            _field(resource_spans, "resource", rpath) or {}, dict, rpath + ".resource", "an object"
        )
        resource = _json_attributes(resource_obj.get("attributes"), rpath + ".resource.attributes")
        scope_list = _expect(
            _field(resource_spans, "scopeSpans", rpath) or [], list, rpath + ".scopeSpans", "a list"
        )
        for s, scope_spans in enumerate(scope_list):
            spath = f"{rpath}.scopeSpans[{s}]"
            _expect(scope_spans, dict, spath, "an object")
            scope = _field(scope_spans, "scope", spath) or {}
            span_list = _expect(
                _field(scope_spans, "spans", spath) or [], list, spath + ".spans", "a list"
            )
            for i, span in enumerate(span_list):
                path = f"{spath}.spans[{i}]"
                _expect(span, dict, path, "a span object")
                status = _expect(
                    _field(span, "status", path) or {}, dict, path + ".status", "an object"
                )
                events = _expect(
                    _field(span, "events", path) or [], list, path + ".events", "a list"
                )
                spans.append(
                    RawSpan(
                        trace_id=_json_id(_field(span, "traceId", path), path + ".traceId"),
                        span_id=_json_id(_field(span, "spanId", path), path + ".spanId"),
                        parent_span_id=_json_id(
                            _field(span, "parentSpanId", path), path + ".parentSpanId"
                        )
                        or None,
                        name=str(
                            _expect(_field(span, "name", path, ""), str, path + ".name", "a string")
                        ),
                        start_time_unix_nano=_int64(
                            _field(span, "startTimeUnixNano", path), path + ".startTimeUnixNano"
                        ),
                        end_time_unix_nano=_int64(
                            _field(span, "endTimeUnixNano", path), path + ".endTimeUnixNano"
                        ),
                        attributes=_json_attributes(
                            _field(span, "attributes", path), path + ".attributes"
                        ),
                        resource=resource,
                        events=[
                            RawEvent(
                                str(
                                    _expect(e, dict, f"{path}.events[{j}]", "an object").get(
                                        "name", ""
                                    )
                                ),
                                _int64(
                                    _field(e, "timeUnixNano", path),
                                    f"{path}.events[{j}].timeUnixNano",
                                ),
                                _json_attributes(
                                    e.get("attributes"), f"{path}.events[{j}].attributes"
                                ),
                            )
                            for j, e in enumerate(events)
                        ],
                        status_code=_int64(status.get("code", 0), path + ".status.code"),
                        status_message=str(status.get("message", "")),
                        otel_kind=_int64(_field(span, "kind", path, 0), path + ".kind"),
                        scope_name=str(scope.get("name", "")) if isinstance(scope, dict) else "",
                    )
                )
    return spans


def encode_export_response(
    rejected: int = 0, message: str = "", *, as_json: bool
) -> tuple[bytes, str]:
    """An ExportTraceServiceResponse in the request's encoding."""
    if as_json:
        body: dict[str, Any] = {}
        if rejected or message:
            body["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
        return json.dumps(body).encode(), "application/json"
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return response.SerializeToString(), "application/x-protobuf"


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data)
