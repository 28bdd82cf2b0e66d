"""Stored span rows back as the spans an instrumented app would have sent.

A row's ``attributes`` column holds every attribute of the span except the two texts,
which normalization moves into ``input_text`` / ``output_text``; so the span is its
attributes plus the texts under the instrumentation's own keys (OpenInference's
``input.value`` / ``output.value`` when the span is OpenInference's, goldenloop's
otherwise), its resource, events and status. Normalizing the result gives the row
again (tests check this for whole simulated weeks); the OTLP sink sends these spans.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa

from goldenloop import conventions as cv
from goldenloop.ingest.raw import STATUS_ERROR, RawEvent, RawSpan

_OPENINFERENCE_KIND = "openinference.span.kind"
_COLUMNS = (
    "trace_id", "span_id", "parent_id", "name", "start_time", "end_time", "status",
    "status_message", "input_text", "output_text", "attributes", "resource", "events",
)  # fmt: skip


def to_raw_spans(table: pa.Table) -> Iterator[RawSpan]:
    """One ``RawSpan`` per row of a stored span table, in row order."""
    columns = {name: table.column(name) for name in _COLUMNS}
    columns["start_time"] = columns["start_time"].cast(pa.int64())
    columns["end_time"] = columns["end_time"].cast(pa.int64())
    values = [columns[name].to_pylist() for name in _COLUMNS]
    resources: dict[str, dict[str, Any]] = {}
    for (
        trace_id, span_id, parent_id, name, start, end, status, status_message,
        input_text, output_text, attributes_json, resource_json, events_json,
    ) in zip(*values, strict=True):  # fmt: skip
        attributes: dict[str, Any] = orjson.loads(attributes_json)
        if _OPENINFERENCE_KIND in attributes:
            input_key, output_key = "input.value", "output.value"
        else:
            input_key, output_key = cv.INPUT, cv.OUTPUT
        if input_text is not None:
            attributes[input_key] = input_text
        if output_text is not None:
            attributes[output_key] = output_text
        resource = resources.get(resource_json)
        if resource is None:
            resource = resources[resource_json] = orjson.loads(resource_json)
        span = RawSpan(
            trace_id, span_id, parent_id, name, start * 1000, end * 1000, attributes, resource
        )
        if events_json != "[]":
            span.events = [
                RawEvent(e["name"], e["time_unix_nano"], e["attributes"])
                for e in orjson.loads(events_json)
            ]
        if status == "error":
            span.status_code = STATUS_ERROR
            span.status_message = status_message or ""
        yield span
