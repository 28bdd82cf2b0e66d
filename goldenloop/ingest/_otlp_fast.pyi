"""Compiled OTLP/protobuf trace decoder (``_otlp_fast.c``); see ``goldenloop.ingest.otlp``."""

from goldenloop.ingest.raw import RawEvent, RawSpan

#: The order in which ``decode`` passes RawSpan's fields (positionally).
RAW_SPAN_FIELDS: tuple[str, ...]

def decode(
    body: bytes, raw_span_cls: type[RawSpan], raw_event_cls: type[RawEvent], /
) -> list[RawSpan] | None:
    """The body's spans, or None when the body is unusual and the Python path must decide."""
