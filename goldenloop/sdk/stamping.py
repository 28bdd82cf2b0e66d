"""``context(...)``: stamp session/user/slice attributes on every span started inside.

The values live in an OpenTelemetry context entry (so they follow the OTel context
across threads and asyncio tasks exactly as the current span does). A
``ContextSpanProcessor`` registered on the TracerProvider reads them in ``on_start``
and sets them on each new span, whichever library created it. Attributes a span
already carries when it starts win over the stamped ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import Span, SpanProcessor
from opentelemetry.util.types import AttributeValue

from goldenloop import conventions as cv

_KEY = otel_context.create_key("goldenloop.sdk.context")


#: context() argument → the span attribute(s) it sets (names from conventions.py).
ARGUMENT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "session_id": (cv.SESSION_ID, cv.CONVERSATION_ID),
    "user_id": (cv.USER_ID,),
    "customer_tier": (cv.CUSTOMER_TIER,),
    "locale": (cv.LOCALE,),
    "prompt_version": (cv.PROMPT_VERSION,),
    "prompt_hash": (cv.PROMPT_HASH,),
    "model_version": (cv.MODEL_VERSION,),
    "index_version": (cv.INDEX_VERSION,),
    "message_id": (cv.MESSAGE_ID,),
}


@dataclass(frozen=True, slots=True)
class Stamp:
    """What ``context()`` blocks put on spans: attributes plus feature flags
    (kept apart so nested blocks merge flags one by one)."""

    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    feature_flags: Mapping[str, str] = field(default_factory=dict)

    def merged(self, inner: Stamp) -> Stamp:
        return Stamp(
            attributes={**self.attributes, **inner.attributes},
            feature_flags={**self.feature_flags, **inner.feature_flags},
        )

    def span_attributes(self) -> dict[str, AttributeValue]:
        out = dict(self.attributes)
        if self.feature_flags:
            out[cv.FEATURE_FLAGS] = json.dumps(dict(self.feature_flags), sort_keys=True)
        return out


def _stamp_from(context: otel_context.Context | None = None) -> Stamp:
    """The stamp in ``context``; the current context's when that holds none (spans
    started with an explicit context built elsewhere still get the block's values)."""
    value = otel_context.get_value(_KEY, context)
    if value is None and context is not None:
        value = otel_context.get_value(_KEY)
    return value if isinstance(value, Stamp) else Stamp()


def current_attributes() -> dict[str, AttributeValue]:
    """The attributes a span started right now would be stamped with."""
    return _stamp_from().span_attributes()


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"goldenloop.sdk.context: {name} must be a string, got {type(value).__name__}"
        )
    return value


@contextmanager
def context(
    *,
    session_id: str | None = None,
    user_id: str | None = None,
    customer_tier: str | None = None,
    locale: str | None = None,
    feature_flags: Mapping[str, str] | None = None,
    prompt_version: str | None = None,
    prompt_hash: str | None = None,
    model_version: str | None = None,
    index_version: str | None = None,
    message_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[None]:
    """Stamp these values on every span started inside the block.

    Nested blocks merge with the outer ones (inner values win; feature flags merge
    flag by flag). Arguments left as None inherit the outer value. ``attributes``
    adds any other span attributes. Needs ``configure()`` or ``install()`` (or a
    ``ContextSpanProcessor``) on the TracerProvider that creates the spans.
    """
    values = {
        "session_id": session_id,
        "user_id": user_id,
        "customer_tier": customer_tier,
        "locale": locale,
        "prompt_version": prompt_version,
        "prompt_hash": prompt_hash,
        "model_version": model_version,
        "index_version": index_version,
        "message_id": message_id,
    }
    stamped: dict[str, AttributeValue] = dict(attributes or {})
    for name, value in values.items():
        if value is not None:
            for key in ARGUMENT_ATTRIBUTES[name]:
                stamped[key] = _text(name, value)
    flags: dict[str, str] = {}
    if feature_flags is not None:
        if not isinstance(feature_flags, Mapping):
            raise TypeError(
                "goldenloop.sdk.context: feature_flags must be a mapping {flag: variant}"
            )
        flags = {
            _text("feature flag name", k): _text(f"feature flag {k!r}", v)
            for k, v in feature_flags.items()
        }
    stamp = _stamp_from().merged(Stamp(stamped, flags))
    token = otel_context.attach(otel_context.set_value(_KEY, stamp))
    try:
        yield
    finally:
        otel_context.detach(token)


class ContextSpanProcessor(SpanProcessor):
    """Sets the current ``context()`` values (and fixed ``static_attributes``, e.g.
    the project) on each span as it starts. Exports nothing itself."""

    def __init__(self, static_attributes: Mapping[str, AttributeValue] | None = None) -> None:
        self._static = dict(static_attributes or {})

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        if not span.is_recording():
            return
        stamped = {**self._static, **_stamp_from(parent_context).span_attributes()}
        if not stamped:
            return
        present = span.attributes or {}
        missing = {k: v for k, v in stamped.items() if k not in present}
        if missing:
            span.set_attributes(missing)
