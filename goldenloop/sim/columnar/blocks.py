"""Span rows of a columnar batch: collected stage by stage, stored as one Arrow table.

Every stage of a turn step adds a *block*: one row per span it made, as arrays. The
columns that vary per span (times, tokens, texts, attributes JSON, errors) come with
the block; the columns a span shares with its turn (trace, message id, prompt), its
session (project, user, tier, locale, flags, resource) or its template (name, kind,
model) are looked up once at the end with Arrow ``take``. Rows stay in the order the
blocks were made (by step, then stage): sorting them by session would copy every
text once more for nothing the store or its queries need, since a batch holds whole
sessions of an hour or two either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from goldenloop.ingest.arrow import SPAN_SCHEMA

_HEX: Final = np.frombuffer(b"0123456789abcdef", np.uint8)
I64 = np.ndarray[Any, np.dtype[np.int64]]
#: Columns a block may carry, with their Arrow types.
BLOCK_TYPES: Final[dict[str, pa.DataType]] = {
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "cost_usd": pa.float64(),
    "stop_reason": pa.string(),
    "tool_args": pa.string(),
    "score": pa.float64(),
    "input_text": pa.string(),
    "output_text": pa.string(),
    "attributes": pa.string(),
    "error_type": pa.string(),
    "status_message": pa.string(),
}


_LONG_TEXT: Final = frozenset({"input_text", "output_text", "attributes"})


def hex_ids(g: np.random.Generator, n: int, nbytes: int, prefix: str = "") -> pa.StringArray:
    """``n`` random ids: ``prefix`` + ``2 * nbytes`` lowercase hex digits, never all
    zeros (the last digit is odd, as in the per-session engine)."""
    raw = g.integers(0, 256, (n, nbytes), dtype=np.uint8)
    raw[:, -1] |= 1
    lead = len(prefix)
    width = lead + 2 * nbytes
    out = np.empty((n, width), np.uint8)
    if lead:
        out[:, :lead] = np.frombuffer(prefix.encode(), np.uint8)
    digits = np.empty((n, 2 * nbytes), np.uint8)
    digits[:, 0::2] = _HEX[raw >> 4]
    digits[:, 1::2] = _HEX[raw & 15]
    out[:, lead:] = digits
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out))


@cache
def literal(text: str | None) -> pa.StringScalar:
    """A string scalar for compute functions, made once: ``pa.scalar`` (which compute
    functions call on plain ``str`` arguments) costs ~80 µs when pandas is not
    installed, because pyarrow tries to import it every time."""
    return pa.scalar(text, pa.string())


NULL: Final = literal(None)


def strings(values: Sequence[str | None]) -> pa.StringArray:
    """Always name the type: inferring it costs ~50 µs without pandas (see ``literal``)."""
    return pa.array(values, pa.string())


def texts(values: list[str | None]) -> pa.StringArray:
    """Long strings (prompts, answers) as an Arrow array: joined once by Python into one
    buffer of the exact size when they are all ASCII, which is twice as fast as
    ``pa.array`` growing its buffer string by string (short strings: ``pa.array``)."""
    if None in values:
        return strings(values)
    joined = "".join(values)  # type: ignore[arg-type]
    if not joined.isascii():
        return strings(values)
    offsets = np.zeros(len(values) + 1, np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])  # type: ignore[arg-type]
    data = pa.py_buffer(joined.encode())
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), data)


def bools(mask: np.ndarray[Any, np.dtype[np.bool_]]) -> pa.BooleanArray:
    """A numpy mask as an Arrow boolean array (bit-packed here: ``pa.array`` takes ~30 µs)."""
    bits = np.packbits(np.asarray(mask, bool), bitorder="little")
    return pa.BooleanArray.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(bits)])


def json_text(value: Any) -> str:
    """``value`` as JSON, exactly as the normalizer writes it (orjson, compact)."""
    return orjson.dumps(value, default=str).decode()


@dataclass(frozen=True)
class Template:
    """What a span shares with every span of its kind."""

    name: str
    kind: str
    model: str | None = None
    provider: str | None = None
    tool_name: str | None = None
    #: Carries the turn's prompt hash / the session's flags / the session's index version.
    prompt: bool = False
    flags: bool = False
    index: bool = False


@dataclass
class SpanBlocks:
    """The blocks of one batch and the templates they use."""

    templates: list[Template] = field(default_factory=list)
    _template_ids: dict[Template, int] = field(default_factory=dict)
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def template(self, template: Template) -> int:
        found = self._template_ids.get(template)
        if found is None:
            found = self._template_ids[template] = len(self.templates)
            self.templates.append(template)
        return found

    def add(self, turns: I64, template: I64 | int, start: I64, end: I64, **columns: Any) -> None:
        """Add one span per entry of ``turns`` (turn rows of the batch). ``columns`` are
        any of ``BLOCK_TYPES`` as arrays or lists (None for null)."""
        n = len(turns)
        if not n:
            return
        block: dict[str, Any] = {
            "turn": np.asarray(turns, np.int64),
            "template": np.broadcast_to(np.asarray(template, np.int64), (n,)),
            "start": np.asarray(start, np.int64),
            "end": np.asarray(end, np.int64),
        }
        for name, values in columns.items():
            if values is None:
                continue
            if isinstance(values, pa.Array):
                block[name] = values
            elif name in _LONG_TEXT:
                block[name] = texts(values)
            else:
                block[name] = pa.array(values, BLOCK_TYPES[name])
        self.blocks.append(block)

    def __len__(self) -> int:
        return sum(len(b["turn"]) for b in self.blocks)


@dataclass
class TurnColumns:
    """Per turn row of the batch: its session row, trace and message ids, prompt."""

    session: I64
    trace_id: pa.Array
    message_id: pa.Array
    prompt_hash: pa.Array


@dataclass
class SessionColumns:
    """Per session row of the batch: the values every span of the session carries."""

    project: pa.Array
    session_id: pa.Array
    user_id: pa.Array
    customer_tier: pa.Array
    locale: pa.Array
    feature_flags: pa.Array
    index_version: pa.Array
    resource: pa.Array


def _column(blocks: list[dict[str, Any]], name: str) -> pa.ChunkedArray:
    """Column ``name`` of all blocks, a chunk per block (no copy)."""
    kind = BLOCK_TYPES[name]
    return pa.chunked_array(
        [b[name] if name in b else pa.nulls(len(b["turn"]), kind) for b in blocks], kind
    )


def _events(error_type: pa.ChunkedArray, message: pa.ChunkedArray, end: I64) -> pa.Array:
    """``[]``, or the exception event OTel SDKs record on a failed span (at its end)."""
    events: list[str] = ["[]"] * len(end)
    failed = np.flatnonzero(pc.is_valid(error_type).to_numpy(zero_copy_only=False))
    if len(failed):
        take = pa.array(failed, pa.int64())
        types = error_type.take(take).to_pylist()
        messages = message.take(take).to_pylist()
        for row, kind, text in zip(failed.tolist(), types, messages, strict=True):
            events[row] = json_text(
                [{"name": "exception", "time_unix_nano": int(end[row]) * 1000,
                  "attributes": {"exception.type": kind, "exception.message": text}}]
            )  # fmt: skip
    return strings(events)


def build_table(
    spans: SpanBlocks,
    turns: TurnColumns,
    sessions: SessionColumns,
    g: np.random.Generator,
    *,
    now_us: int,
) -> pa.Table:
    """The batch's spans as stored rows (``SPAN_SCHEMA``)."""
    blocks = spans.blocks
    turn = np.concatenate([b["turn"] for b in blocks])
    template = np.concatenate([b["template"] for b in blocks])
    start = np.concatenate([b["start"] for b in blocks])
    end = np.concatenate([b["end"] for b in blocks])
    n = len(turn)
    varying = {name: _column(blocks, name) for name in BLOCK_TYPES}
    session = pa.array(turns.session[turn])
    turn_rows = pa.array(turn)
    template_rows = pa.array(template)
    templates = spans.templates

    def per_template(values: list[str | None]) -> pa.Array:
        return strings(values).take(template_rows)

    span_id = hex_ids(g, n, 8)
    is_root = np.array([t.kind in ("agent", "chain") for t in templates])[template]
    # Children take their turn's root span id as their parent.
    root_row = np.empty(len(turns.session), np.int64)
    root_row[turn[is_root]] = np.flatnonzero(is_root)
    parent = span_id.take(pa.array(root_row[turn]))
    parent = pc.if_else(bools(is_root), NULL, parent)
    error_type = varying["error_type"]
    failed = pc.is_valid(error_type)
    events = _events(error_type, varying["status_message"], end)
    empty_flags = literal("{}")
    carries = {
        name: bools(np.array([getattr(t, name) for t in templates])).take(template_rows)
        for name in ("prompt", "flags", "index")
    }
    columns: dict[str, Any] = {
        "project": sessions.project.take(session),
        "trace_id": turns.trace_id.take(turn_rows),
        "span_id": span_id,
        "parent_id": parent,
        "session_id": sessions.session_id.take(session),
        "message_id": turns.message_id.take(turn_rows),
        "name": per_template([t.name for t in templates]),
        "kind": per_template([t.kind for t in templates]),
        "start_time": pa.array(start).cast(pa.timestamp("us")),
        "end_time": pa.array(end).cast(pa.timestamp("us")),
        "latency_ms": pa.array((end - start) / 1000.0),
        "status": pc.if_else(failed, literal("error"), literal("ok")),
        "error_type": error_type,
        "status_message": varying["status_message"],
        "model": per_template([t.model for t in templates]),
        "provider": per_template([t.provider for t in templates]),
        "input_tokens": varying["input_tokens"],
        "output_tokens": varying["output_tokens"],
        "cost_usd": varying["cost_usd"],
        "stop_reason": varying["stop_reason"],
        "prompt_hash": pc.if_else(carries["prompt"], turns.prompt_hash.take(turn_rows), NULL),
        "model_version": per_template([t.model for t in templates]),
        "feature_flags": pc.if_else(
            carries["flags"], sessions.feature_flags.take(session), empty_flags
        ),
        "customer_tier": sessions.customer_tier.take(session),
        "locale": sessions.locale.take(session),
        "index_version": pc.if_else(carries["index"], sessions.index_version.take(session), NULL),
        "user_id": sessions.user_id.take(session),
        "tool_name": per_template([t.tool_name for t in templates]),
        "tool_args": varying["tool_args"],
        "score": varying["score"],
        "input_text": varying["input_text"],
        "output_text": varying["output_text"],
        "attributes": varying["attributes"],
        "resource": sessions.resource.take(session),
        "events": events,
        "ingested_at": pa.array(np.full(n, now_us, np.int64)).cast(pa.timestamp("us")),
    }
    # A chunk per block: combining them would copy every text once more, here, where
    # generation is the bottleneck; DuckDB reads the chunks for ~10% more of its time.
    return pa.Table.from_arrays([columns[f.name] for f in SPAN_SCHEMA], schema=SPAN_SCHEMA)
