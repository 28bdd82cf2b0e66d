"""One OTLP/HTTP trace request, from body bytes to a span table.

``decode_trace_request`` is everything the server does to a request before the writer
sees it: undo Content-Encoding, decode protobuf or JSON, normalize, convert to Arrow.
It is a pure function of picklable inputs, so the same code runs in the server process
(small requests) and in a decode worker process (``goldenloop.ingest.pool``); either
way a bad request raises one of ``REQUEST_ERRORS`` with a message naming the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from goldenloop.ingest.arrow import span_batch_to_arrow
from goldenloop.ingest.normalize import IngestLimits, InvalidSpans, normalize_spans
from goldenloop.ingest.otlp import (
    BodyTooLarge,
    OtlpDecodeError,
    decode_json,
    decode_protobuf,
    decompress,
)
from goldenloop.pricing import PriceTable

#: What a malformed request raises; each maps to a 4xx answer.
REQUEST_ERRORS = (BodyTooLarge, OtlpDecodeError, InvalidSpans)


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """Per-server settings the decoder needs; sent once to each worker process."""

    default_project: str
    prices: PriceTable
    limits: IngestLimits
    max_request_bytes: int


@dataclass(frozen=True, slots=True)
class TraceRequest:
    body: bytes
    as_json: bool
    content_encoding: str | None
    #: The project an API key decided, which overrides what the spans say.
    project_override: str | None
    now_us: int


def decode_trace_request(request: TraceRequest, options: DecodeOptions) -> pa.Table:
    body = decompress(request.body, request.content_encoding, options.max_request_bytes)
    raw_spans = decode_json(body) if request.as_json else decode_protobuf(body)
    batch = normalize_spans(
        raw_spans,
        default_project=options.default_project,
        prices=options.prices,
        now_us=request.now_us,
        project_override=request.project_override,
        limits=options.limits,
    )
    return span_batch_to_arrow(batch)
