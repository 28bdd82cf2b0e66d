"""RawSpans → an OTLP ``ExportTraceServiceRequest`` (protobuf bytes), and the JSON
bodies of the feedback and outcome endpoints.

Spans are grouped by resource (and instrumentation scope) the way an SDK exporter
groups them; ids travel as bytes, attribute values as ``AnyValue`` (str, bool, int,
float, bytes, lists and dicts).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from goldenloop.ingest.raw import RawSpan
from goldenloop.model import Feedback, Outcome

DEFAULT_SCOPE = "goldenloop.sim"
_SPAN_KIND_INTERNAL = 1
_SPAN_KIND_SERVER = 2


def _set_any(target: AnyValue, value: Any) -> None:
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):  # before int: bool is an int subclass
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, list | tuple):
        array = target.array_value
        array.SetInParent()
        for item in value:
            _set_any(array.values.add(), item)
    elif isinstance(value, dict):
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        for key, item in value.items():
            kv = kvlist.values.add()
            kv.key = str(key)
            _set_any(kv.value, item)
    elif value is not None:
        target.string_value = str(value)


def _add_attributes(repeated: Any, attributes: dict[str, Any]) -> None:
    for key, value in attributes.items():
        if value is None:
            continue
        kv = repeated.add()
        kv.key = key
        _set_any(kv.value, value)


def _resource_key(resource: dict[str, Any], cache: dict[int, str]) -> str:
    key = cache.get(id(resource))
    if key is None:
        key = json.dumps(resource, sort_keys=True, default=str)
        cache[id(resource)] = key
    return key


def encode_otlp(raw_spans: Iterable[RawSpan], *, scope_name: str = DEFAULT_SCOPE) -> bytes:
    """Serialize spans as one OTLP/protobuf trace export request."""
    groups: dict[tuple[str, str], tuple[dict[str, Any], list[RawSpan]]] = {}
    cache: dict[int, str] = {}
    for raw in raw_spans:
        key = (_resource_key(raw.resource, cache), raw.scope_name or scope_name)
        group = groups.get(key)
        if group is None:
            group = groups[key] = (raw.resource, [])
        group[1].append(raw)
    request = ExportTraceServiceRequest()
    for (_, scope), (resource, spans) in groups.items():
        resource_spans = request.resource_spans.add()
        _add_attributes(resource_spans.resource.attributes, resource)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = scope
        for raw in spans:
            span = scope_spans.spans.add()
            span.trace_id = bytes.fromhex(raw.trace_id)
            span.span_id = bytes.fromhex(raw.span_id)
            if raw.parent_span_id:
                span.parent_span_id = bytes.fromhex(raw.parent_span_id)
            span.name = raw.name
            span.kind = raw.otel_kind or (
                _SPAN_KIND_INTERNAL if raw.parent_span_id else _SPAN_KIND_SERVER
            )
            span.start_time_unix_nano = raw.start_time_unix_nano
            span.end_time_unix_nano = raw.end_time_unix_nano
            _add_attributes(span.attributes, raw.attributes)
            for event in raw.events:
                out = span.events.add()
                out.name = event.name
                out.time_unix_nano = event.time_unix_nano
                _add_attributes(out.attributes, event.attributes)
            if raw.status_code:
                span.status.code = raw.status_code
                if raw.status_message:
                    span.status.message = raw.status_message
    data: bytes = request.SerializeToString()
    return data


def trace_batches(spans: Sequence[RawSpan], max_spans: int) -> Iterable[Sequence[RawSpan]]:
    """Cut spans into batches of about ``max_spans`` without splitting a trace (the
    simulator emits each trace's spans contiguously)."""
    start = 0
    for i in range(max_spans, len(spans)):
        if i - start >= max_spans and spans[i].trace_id != spans[i - 1].trace_id:
            yield spans[start:i]
            start = i
    if start < len(spans):
        yield spans[start:]


def feedback_body(item: Feedback) -> dict[str, Any]:
    """Body of ``POST /api/v1/feedback``."""
    return {
        "id": item.id,
        "session_id": item.session_id,
        "message_id": item.message_id,
        "rating": item.rating,
        "category": item.category,
        "comment": item.comment,
        "prompt_hash": item.prompt_hash,
        "model_hash": item.model_hash,
        "user_id": item.user_id,
        "project": item.project,
        "created_at": item.created_at.isoformat(),
    }


def outcome_body(item: Outcome) -> dict[str, Any]:
    """Body of ``POST /api/v1/outcomes``."""
    return {
        "id": item.id,
        "session_id": item.session_id,
        "message_id": item.message_id,
        "name": item.name,
        "success": item.success,
        "value": item.value,
        "attributes": item.attributes,
        "project": item.project,
        "created_at": item.created_at.isoformat(),
    }
