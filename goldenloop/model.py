"""The normalized data model: spans, turns, sessions, feedback and outcomes.

A ``Span`` is one row of the ``spans`` table. Writers move spans around as a
``SpanBatch`` (one list per column, in ``SPAN_COLUMNS`` order) because both stores
bulk-load columns far faster than rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal


class SpanKind(StrEnum):
    LLM = "llm"
    TOOL = "tool"
    RETRIEVAL = "retrieval"
    AGENT = "agent"
    CHAIN = "chain"
    GUARDRAIL = "guardrail"
    EMBEDDING = "embedding"
    JUDGE = "judge"
    OTHER = "other"


#: Span kinds whose tokens and cost count towards turn and session totals. Wrapper
#: spans (agent, chain) often repeat their children's usage, so they are left out.
BILLABLE_KINDS: tuple[str, ...] = (SpanKind.LLM, SpanKind.EMBEDDING, SpanKind.JUDGE)

#: Dimensions every metric can be sliced by (besides any attribute).
SLICE_DIMENSIONS: tuple[str, ...] = (
    "project",
    "model",
    "model_version",
    "prompt_hash",
    "customer_tier",
    "locale",
    "index_version",
    "user_id",
    "kind",
    "provider",
)

FEEDBACK_CATEGORIES: tuple[str, ...] = ("wrong", "unsafe", "slow", "unhelpful", "other")

ColumnType = Literal["text", "bigint", "double", "timestamp", "json"]

#: The spans table, in column order. ``json`` columns hold JSON text.
SPAN_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("project", "text"),
    ("trace_id", "text"),
    ("span_id", "text"),
    ("parent_id", "text"),
    ("session_id", "text"),
    ("message_id", "text"),
    ("name", "text"),
    ("kind", "text"),
    ("start_time", "timestamp"),
    ("end_time", "timestamp"),
    ("latency_ms", "double"),
    ("status", "text"),
    ("error_type", "text"),
    ("status_message", "text"),
    ("model", "text"),
    ("provider", "text"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("cost_usd", "double"),
    ("stop_reason", "text"),
    ("prompt_hash", "text"),
    ("model_version", "text"),
    ("feature_flags", "json"),
    ("customer_tier", "text"),
    ("locale", "text"),
    ("index_version", "text"),
    ("user_id", "text"),
    ("tool_name", "text"),
    ("tool_args", "text"),
    ("score", "double"),
    ("input_text", "text"),
    ("output_text", "text"),
    ("attributes", "json"),
    ("resource", "json"),
    ("events", "json"),
    ("ingested_at", "timestamp"),
)
SPAN_COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in SPAN_COLUMNS)


@dataclass(slots=True)
class Span:
    """One normalized span. JSON columns are decoded into Python values."""

    project: str
    trace_id: str
    span_id: str
    parent_id: str | None
    session_id: str | None
    message_id: str | None
    name: str
    kind: str
    start_time: datetime
    end_time: datetime
    latency_ms: float
    status: str
    error_type: str | None = None
    status_message: str | None = None
    model: str | None = None
    provider: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    stop_reason: str | None = None
    prompt_hash: str | None = None
    model_version: str | None = None
    feature_flags: dict[str, str] = field(default_factory=dict)
    customer_tier: str | None = None
    locale: str | None = None
    index_version: str | None = None
    user_id: str | None = None
    tool_name: str | None = None
    tool_args: str | None = None
    score: float | None = None
    input_text: str | None = None
    output_text: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    ingested_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("start_time", "end_time", "ingested_at"):
            value = data[key]
            data[key] = value.isoformat() if isinstance(value, datetime) else value
        return data


class SpanBatch:
    """Spans as columns: ``columns[name]`` is a list with one value per span."""

    __slots__ = ("columns",)

    def __init__(self, columns: dict[str, list[Any]] | None = None) -> None:
        self.columns: dict[str, list[Any]] = columns or {name: [] for name in SPAN_COLUMN_NAMES}

    def __len__(self) -> int:
        return len(self.columns["span_id"])

    def append_row(self, row: dict[str, Any]) -> None:
        for name in SPAN_COLUMN_NAMES:
            self.columns[name].append(row.get(name))

    def extend(self, other: SpanBatch) -> None:
        for name in SPAN_COLUMN_NAMES:
            self.columns[name].extend(other.columns[name])

    def rows(self) -> list[dict[str, Any]]:
        names = SPAN_COLUMN_NAMES
        return [
            dict(zip(names, values, strict=True))
            for values in zip(*self.columns.values(), strict=True)
        ]


@dataclass(slots=True)
class Feedback:
    id: str
    project: str
    session_id: str
    message_id: str | None
    rating: Literal["up", "down"]
    category: str | None
    comment: str | None
    prompt_hash: str | None
    model_hash: str | None
    user_id: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


@dataclass(slots=True)
class Outcome:
    id: str
    project: str
    session_id: str
    message_id: str | None
    name: str
    success: bool
    value: float | None
    attributes: dict[str, Any]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


@dataclass(slots=True)
class Turn:
    """One trace: the root span plus the usage of everything under it."""

    trace_id: str
    message_id: str
    session_id: str | None
    name: str
    start_time: datetime
    end_time: datetime
    latency_ms: float
    status: str
    input_text: str | None
    output_text: str | None
    span_count: int
    error_count: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    stop_reason: str | None
    model: str | None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["start_time"] = self.start_time.isoformat()
        data["end_time"] = self.end_time.isoformat()
        return data


@dataclass(slots=True)
class SessionSummary:
    session_id: str
    project: str
    start_time: datetime
    end_time: datetime
    turn_count: int
    span_count: int
    error_count: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    user_id: str | None
    customer_tier: str | None
    locale: str | None
    model: str | None
    prompt_hash: str | None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["start_time"] = self.start_time.isoformat()
        data["end_time"] = self.end_time.isoformat()
        return data


@dataclass(slots=True)
class SessionDetail:
    summary: SessionSummary
    turns: list[Turn]
    spans: list[Span]
    feedback: list[Feedback]
    outcomes: list[Outcome]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary.to_dict(),
            "turns": [t.to_dict() for t in self.turns],
            "spans": [s.to_dict() for s in self.spans],
            "feedback": [f.to_dict() for f in self.feedback],
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """Which sessions to list. ``dimensions`` are exact matches on slice columns;
    ``attributes`` are exact matches on raw span attributes."""

    project: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    dimensions: tuple[tuple[str, str], ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()
    feature_flags: tuple[tuple[str, str], ...] = ()
