"""RawSpan → normalized span columns (a ``SpanBatch``).

Reads every naming convention in ``conventions.py``, prices spans that carry tokens
but no cost, and validates what a bad client may send (ids, timestamps, types, sizes).
A request is stored whole or not at all: ``normalize_spans`` raises ``InvalidSpans``
listing every problem it found, each naming the span and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from goldenloop import conventions as cv
from goldenloop.ingest.raw import STATUS_ERROR, RawSpan
from goldenloop.model import SPAN_COLUMN_NAMES, SpanBatch, SpanKind
from goldenloop.pricing import PriceTable

_NS_PER_US = 1000
_US_PER_HOUR = 3600 * 1_000_000
_US_PER_DAY = 24 * _US_PER_HOUR
_MAX_ERRORS_REPORTED = 20
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MAX_INT64 = (1 << 63) - 1
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
_MOVED = cv.MOVED_TO_COLUMNS
_KIND_NAMES = {name: kind.value for name, kind in cv.KIND_VALUES.items()}
_TOOL, _LLM, _OTHER = SpanKind.TOOL.value, SpanKind.LLM.value, SpanKind.OTHER.value
#: Every mapped field, unset: ``_convert`` fills a copy, so reads need no ``.get``.
_NO_FIELDS: dict[str, Any] = dict.fromkeys(cv.FIELD_SOURCES)


#: Provider finish reasons → goldenloop stop_reason.
STOP_REASONS: dict[str, str] = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "complete": "stop",
    "length": "max_tokens",
    "max_tokens": "max_tokens",
    "max_output_tokens": "max_tokens",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "safety": "content_filter",
    "refusal": "content_filter",
    "error": "error",
}


class InvalidSpans(ValueError):
    """The request holds spans that cannot be stored; ``problems`` names each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        more = "" if len(problems) <= _MAX_ERRORS_REPORTED else f" (+{len(problems) - 20} more)"
        super().__init__("; ".join(self.problems[:_MAX_ERRORS_REPORTED]) + more)


@dataclass(frozen=True, slots=True)
class IngestLimits:
    max_attribute_bytes: int = 256 * 1024
    max_clock_skew_hours: int = 24
    oldest_span_days: int = 3650


def _hex_id_problem(value: str | None, length: int, what: str) -> str | None:
    if not value:
        return f"{what} is missing"
    if len(value) != length:
        return f"{what} must be {length // 2} bytes ({length} hex characters), got {len(value)}"
    # int(value, 16) alone would accept "0x…", "-…", "+…", "_" and whitespace.
    if not _HEX_DIGITS.issuperset(value):
        return f"{what} is not hexadecimal: {value[:40]!r}"
    if int(value, 16) == 0:
        return f"{what} is all zeros"
    return None


def _dumps(value: Any) -> str:
    """JSON text; non-finite floats become null, unknown types their str()."""
    return orjson.dumps(value, default=str).decode()


def _loads(text: str) -> Any:
    """json.loads, by way of orjson when it can (it refuses NaN and huge integers,
    which json accepts, so those take the slow road to the same result)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return _dumps(value)


def _stop_reason(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    text = str(value).strip().lower()
    return STOP_REASONS.get(text, text)


def _feature_flags(raw: RawSpan, mapped: Any) -> dict[str, str]:
    flags: dict[str, str] = {}
    if isinstance(mapped, str) and mapped:
        try:
            mapped = _loads(mapped)
        except json.JSONDecodeError:
            mapped = dict(p.partition("=")[::2] for p in mapped.split(",") if p)
    if isinstance(mapped, dict):
        flags.update({str(k): _as_text(v) for k, v in mapped.items()})
    key = raw.attributes.get(cv.FEATURE_FLAG_KEY)
    if key is not None:
        variant = next(
            (raw.attributes[v] for v in cv.FEATURE_FLAG_VARIANTS if v in raw.attributes), ""
        )
        flags[str(key)] = _as_text(variant)
    for event in raw.events:
        if event.name in cv.FEATURE_FLAG_EVENTS and cv.FEATURE_FLAG_KEY in event.attributes:
            variant = next(
                (event.attributes[v] for v in cv.FEATURE_FLAG_VARIANTS if v in event.attributes),
                "",
            )
            flags[str(event.attributes[cv.FEATURE_FLAG_KEY])] = _as_text(variant)
    return flags


def _kind(raw: RawSpan, fields: dict[str, Any]) -> str:
    for key in cv.KIND_SOURCES:
        value = raw.attributes.get(key)
        if isinstance(value, str):
            kind = _KIND_NAMES.get(value.strip().lower())
            if kind is not None:
                return kind
    if fields["tool_name"]:
        return _TOOL
    if fields["model"] and (
        fields["input_tokens"] is not None or fields["output_tokens"] is not None
    ):
        return _LLM
    return _OTHER


_TEXT, _INT, _FLOAT, _STOP = "text", "int", "float", "stop"
_CONVERTERS = {
    "input_tokens": _INT, "output_tokens": _INT, "cost_usd": _FLOAT, "score": _FLOAT,
    "stop_reason": _STOP,
}  # fmt: skip
#: Distinct attribute key sets (and feature-flag strings) remembered per request; more
#: take the same path, just without being remembered.
_MAX_PLANS = 256


@dataclass(frozen=True, slots=True)
class _ShapePlan:
    """What normalization does with one set of attribute keys, worked out once per
    request: instrumentations send the same keys on span after span, so the mapping
    from keys to fields need not be redone for each."""

    #: (field, converter, keys present that may carry it, in priority order).
    fields: tuple[tuple[str, str, tuple[str, ...]], ...]
    #: Keys that stay in the raw ``attributes`` column, in order, or None for all.
    kept: tuple[str, ...] | None

    @classmethod
    def for_keys(cls, keys: tuple[str, ...]) -> _ShapePlan:
        present = set(keys)
        fields = []
        for field, sources in cv.FIELD_SOURCES.items():
            candidates = tuple(key for key in sources if key in present)
            if candidates:
                fields.append((field, _CONVERTERS.get(field, _TEXT), candidates))
        moved = present & _MOVED
        kept = tuple(key for key in keys if key not in moved) if moved else None
        return cls(tuple(fields), kept)


class _SpanNormalizer:
    """Holds the per-request context; ``row`` turns one RawSpan into a column row."""

    def __init__(
        self,
        *,
        default_project: str,
        project_override: str | None,
        prices: PriceTable,
        now_us: int,
        limits: IngestLimits,
    ) -> None:
        self.default_project = default_project
        self.project_override = project_override
        self.prices = prices
        self.now_us = now_us
        self.limits = limits
        self.latest_start_us = now_us + limits.max_clock_skew_hours * _US_PER_HOUR
        self.earliest_start_us = now_us - limits.oldest_span_days * _US_PER_DAY
        self._resource_cache: dict[int, tuple[str, str]] = {}
        self._plans: dict[tuple[str, ...], _ShapePlan] = {}
        self._flags_cache: dict[str, str] = {}

    def _resource(self, raw: RawSpan) -> tuple[str, str]:
        """(project from resource, resource JSON), cached per resource dict."""
        cached = self._resource_cache.get(id(raw.resource))
        if cached is None:
            project = next(
                (str(raw.resource[k]) for k in cv.PROJECT_RESOURCE_KEYS if raw.resource.get(k)),
                "",
            )
            cached = (project, _dumps(raw.resource))
            self._resource_cache[id(raw.resource)] = cached
        return cached

    def _flags_json(self, raw: RawSpan) -> str:
        """The feature_flags column. Apps stamp the same flags JSON on every span of a
        session, so its parse is cached per string when nothing else adds flags."""
        mapped = raw.attributes.get(cv.FEATURE_FLAGS)
        if (
            not isinstance(mapped, str)
            or cv.FEATURE_FLAG_KEY in raw.attributes
            or any(event.name in cv.FEATURE_FLAG_EVENTS for event in raw.events)
        ):
            flags = _feature_flags(raw, mapped)
            return _dumps(flags) if flags else "{}"
        cached = self._flags_cache.get(mapped)
        if cached is None:
            flags = _feature_flags(raw, mapped)
            cached = _dumps(flags) if flags else "{}"
            if len(self._flags_cache) < _MAX_PLANS:
                self._flags_cache[mapped] = cached
        return cached

    def _envelope_problems(self, raw: RawSpan) -> list[str]:
        """Problems with the ids and timestamps (attributes are checked in ``row``)."""
        problems = []
        for value, length, what in (
            (raw.trace_id, 32, "traceId"),
            (raw.span_id, 16, "spanId"),
        ):
            problem = _hex_id_problem(value, length, what)
            if problem:
                problems.append(problem)
        if raw.parent_span_id:
            problem = _hex_id_problem(raw.parent_span_id, 16, "parentSpanId")
            if problem:
                problems.append(problem)
        start_us = raw.start_time_unix_nano // _NS_PER_US
        end_us = raw.end_time_unix_nano // _NS_PER_US
        if raw.start_time_unix_nano <= 0:
            problems.append("startTimeUnixNano is missing or zero")
        elif not self.earliest_start_us <= start_us <= self.latest_start_us:
            problems.append(
                f"startTimeUnixNano {raw.start_time_unix_nano} is absurd (more than "
                f"{self.limits.oldest_span_days} days ago or {self.limits.max_clock_skew_hours} "
                "hours in the future)"
            )
        if raw.end_time_unix_nano < raw.start_time_unix_nano:
            problems.append("endTimeUnixNano is before startTimeUnixNano")
        elif end_us - start_us > 7 * _US_PER_DAY:
            problems.append("span lasts more than 7 days (endTimeUnixNano is absurd)")
        return problems

    def _envelope_ok(self, raw: RawSpan) -> bool:
        """The common case, cheaply: well-formed ids and plausible timestamps."""
        trace_id, span_id, parent = raw.trace_id, raw.span_id, raw.parent_span_id
        start, end = raw.start_time_unix_nano, raw.end_time_unix_nano
        return (
            len(trace_id) == 32
            and len(span_id) == 16
            and _HEX_DIGITS.issuperset(trace_id)
            and _HEX_DIGITS.issuperset(span_id)
            and trace_id != _ZERO_TRACE_ID
            and span_id != _ZERO_SPAN_ID
            and (
                not parent
                or (
                    len(parent) == 16 and _HEX_DIGITS.issuperset(parent) and parent != _ZERO_SPAN_ID
                )
            )
            and start > 0
            and self.earliest_start_us <= start // _NS_PER_US <= self.latest_start_us
            and start <= end
            and end // _NS_PER_US - start // _NS_PER_US <= 7 * _US_PER_DAY
        )

    def _size_problems(self, attributes: dict[str, Any], problems: list[str]) -> None:
        limit = self.limits.max_attribute_bytes
        quarter = limit // 4  # a str of n chars holds at most 4n UTF-8 bytes
        for key, value in attributes.items():
            kind = type(value)
            if kind is str:
                if len(value) > quarter and len(value.encode()) > limit:
                    problems.append(
                        f"attribute {key!r} is {len(value.encode())} bytes; the limit is {limit}"
                    )
            elif (kind is list or kind is dict) and len(_as_text(value)) > limit:
                problems.append(f"attribute {key!r} is larger than the limit of {limit} bytes")

    def _plan(self, attributes: dict[str, Any]) -> _ShapePlan:
        """The plan for this set of attribute keys, made on first sight (see _ShapePlan)."""
        shape = tuple(attributes)
        plan = self._plans.get(shape)
        if plan is None:
            plan = _ShapePlan.for_keys(shape)
            if len(self._plans) < _MAX_PLANS:
                self._plans[shape] = plan
        return plan

    @staticmethod
    def _convert(
        plan: _ShapePlan, attributes: dict[str, Any], problems: list[str]
    ) -> dict[str, Any]:
        """Every mapped field (None when absent) with the type its column needs: for each
        field the value of its highest-priority key that is neither None nor empty. Type
        problems are appended."""
        result = _NO_FIELDS.copy()
        for field, converter, keys in plan.fields:
            for key in keys:
                value = attributes[key]
                if value is not None and value != "":
                    break
            else:
                continue
            if converter is _TEXT:
                result[field] = value if type(value) is str else _as_text(value)
            elif converter is _INT:
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    problems.append(
                        f"attribute {key!r} must be an integer, got {type(value).__name__}"
                    )
                    continue
                try:
                    number = int(value) if not isinstance(value, float) else int(round(value))
                except (ValueError, OverflowError):  # OverflowError: an infinite double
                    problems.append(f"attribute {key!r} must be an integer, got {value!r:.40}")
                    continue
                if number < 0:
                    problems.append(f"attribute {key!r} must not be negative, got {number}")
                    continue
                if number > _MAX_INT64:  # the column is BIGINT
                    problems.append(f"attribute {key!r} must be at most {_MAX_INT64}")
                    continue
                result[field] = number
            elif converter is _FLOAT:
                try:
                    if isinstance(value, bool):
                        raise ValueError
                    number_f = float(value)
                    if not math.isfinite(number_f):
                        raise ValueError
                    result[field] = number_f
                except (TypeError, ValueError):
                    problems.append(f"attribute {key!r} must be a number, got {value!r:.40}")
            else:  # stop reason
                result[field] = _stop_reason(value) or None  # e.g. an empty finish_reasons
        return result

    def row(self, raw: RawSpan) -> tuple[tuple[Any, ...] | None, list[str]]:
        """The span's values in ``SPAN_COLUMN_NAMES`` order, or the problems with it."""
        problems = [] if self._envelope_ok(raw) else self._envelope_problems(raw)
        self._size_problems(raw.attributes, problems)
        plan = self._plan(raw.attributes)
        fields = self._convert(plan, raw.attributes, problems)
        if problems:
            return None, problems
        resource_project, resource_json = self._resource(raw)
        kind = _kind(raw, fields)
        error_type = fields["error_type"]
        if error_type is None and raw.events:
            error_type = next(
                (
                    str(e.attributes["exception.type"])
                    for e in raw.events
                    if e.name == "exception" and "exception.type" in e.attributes
                ),
                None,
            )
        cost = fields["cost_usd"]
        if cost is None:
            cost = self.prices.cost(
                fields["model"], fields["input_tokens"], fields["output_tokens"]
            )
        prompt_hash = fields["prompt_hash"]
        if prompt_hash is None:
            template = raw.attributes.get("llm.prompt_template.template")
            if isinstance(template, str) and template:
                prompt_hash = hashlib.sha256(template.encode()).hexdigest()[:8]
        attributes = raw.attributes
        if plan.kept is not None:
            attributes = {key: attributes[key] for key in plan.kept}
        return (
            self.project_override or fields["project"] or resource_project or self.default_project,
            raw.trace_id.lower(),
            raw.span_id.lower(),
            raw.parent_span_id.lower() if raw.parent_span_id else None,
            fields["session_id"],
            fields["message_id"],
            raw.name,
            kind,
            raw.start_time_unix_nano // _NS_PER_US,
            raw.end_time_unix_nano // _NS_PER_US,
            (raw.end_time_unix_nano - raw.start_time_unix_nano) / 1e6,
            "error" if raw.status_code == STATUS_ERROR else "ok",
            error_type,
            raw.status_message or None,
            fields["model"],
            fields["provider"],
            fields["input_tokens"],
            fields["output_tokens"],
            cost,
            fields["stop_reason"],
            prompt_hash,
            fields["model_version"],
            self._flags_json(raw),
            fields["customer_tier"],
            fields["locale"],
            fields["index_version"],
            fields["user_id"],
            fields["tool_name"],
            fields["tool_args"],
            fields["score"],
            fields["input_text"],
            fields["output_text"],
            _dumps(attributes),
            resource_json,
            _dumps(
                [
                    {"name": e.name, "time_unix_nano": e.time_unix_nano, "attributes": e.attributes}
                    for e in raw.events
                ]
            )
            if raw.events
            else "[]",
            self.now_us,
        ), []


#: The order ``row`` builds its tuple in; checked against the model at import.
_ROW_ORDER = (
    "project", "trace_id", "span_id", "parent_id", "session_id", "message_id", "name", "kind",
    "start_time", "end_time", "latency_ms", "status", "error_type", "status_message", "model",
    "provider", "input_tokens", "output_tokens", "cost_usd", "stop_reason", "prompt_hash",
    "model_version", "feature_flags", "customer_tier", "locale", "index_version", "user_id",
    "tool_name", "tool_args", "score", "input_text", "output_text", "attributes", "resource",
    "events", "ingested_at",
)  # fmt: skip
if _ROW_ORDER != SPAN_COLUMN_NAMES:  # pragma: no cover - a model change must update row()
    raise ImportError("normalize.row() builds columns in an order the model no longer has")

_TRACE_COLUMN = SPAN_COLUMN_NAMES.index("trace_id")
_TRACE_LEVEL_COLUMNS = tuple(SPAN_COLUMN_NAMES.index(f) for f in cv.TRACE_LEVEL_FIELDS)
_MESSAGE_COLUMN = SPAN_COLUMN_NAMES.index("message_id")


def _propagate_trace_fields(columns: list[list[Any]]) -> None:
    """Give every span of a trace the turn-level fields another span of it carries,
    and a span without a message id its trace id."""
    traces = columns[_TRACE_COLUMN]
    members: dict[str, list[int]] = {}
    for index, trace_id in enumerate(traces):
        members.setdefault(trace_id, []).append(index)
    shared = [group for group in members.values() if len(group) > 1]
    for position in _TRACE_LEVEL_COLUMNS:
        column = columns[position]
        if None not in column:
            continue
        for group in shared:
            value = next((column[i] for i in group if column[i] is not None), None)
            if value is not None:
                for i in group:
                    if column[i] is None:
                        column[i] = value
    messages = columns[_MESSAGE_COLUMN]
    if None in messages:
        for index, message_id in enumerate(messages):
            if message_id is None:
                messages[index] = traces[index]


def normalize_spans(
    raw_spans: Sequence[RawSpan],
    *,
    default_project: str,
    prices: PriceTable,
    now_us: int,
    project_override: str | None = None,
    limits: IngestLimits | None = None,
) -> SpanBatch:
    """Normalize a request's spans; raise ``InvalidSpans`` if any span is bad."""
    normalizer = _SpanNormalizer(
        default_project=default_project,
        project_override=project_override,
        prices=prices,
        now_us=now_us,
        limits=limits or IngestLimits(),
    )
    rows: list[tuple[Any, ...]] = []
    problems: list[str] = []
    for index, raw in enumerate(raw_spans):
        row, span_problems = normalizer.row(raw)
        if span_problems:
            label = f"span #{index} {raw.name[:60]!r}"
            if raw.span_id:
                label += f" (spanId {raw.span_id[:16]})"
            problems.extend(f"{label}: {p}" for p in span_problems)
        elif row is not None:
            rows.append(row)
    if problems:
        raise InvalidSpans(problems)
    if not rows:
        return SpanBatch()
    columns = [list(column) for column in zip(*rows, strict=True)]
    _propagate_trace_fields(columns)
    return SpanBatch(dict(zip(SPAN_COLUMN_NAMES, columns, strict=True)))
