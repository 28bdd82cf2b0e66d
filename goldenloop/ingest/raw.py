"""``RawSpan``: a span as the wire carried it, before normalization.

Both OTLP decoders (protobuf and JSON) produce RawSpans, and the simulator generates
them, so every path into the store goes through the same ``normalize`` step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: OTLP status codes.
STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2


@dataclass(slots=True)
class RawEvent:
    name: str
    time_unix_nano: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RawSpan:
    """One span with hex ids, nanosecond times and plain-Python attribute values."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    events: list[RawEvent] = field(default_factory=list)
    status_code: int = STATUS_UNSET
    status_message: str = ""
    #: OTLP SpanKind enum (0 unspecified, 1 internal, 2 server, 3 client, …).
    otel_kind: int = 0
    scope_name: str = ""
